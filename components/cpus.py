"""How many CPUs this process may use: its CPU affinity and its cgroup CPU quota.

``os.cpu_count()`` counts the machine's cores. In a Kubernetes pod with a CPU limit of 2 on a
64-core node it says 64, and a runtime that starts 64 threads for 2 CPUs' worth of quota is
throttled (each thread gets a slice, then all wait out the period). The CPUs a process may really
use are the fewer of the CPUs in its affinity mask (``taskset``, cpusets) and its cgroup quota
rounded up (v2 ``cpu.max``; v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``), the tightest limit on
the path from its own cgroup up to the root.
"""

from __future__ import annotations

import math
import os

CGROUP_ROOT = "/sys/fs/cgroup"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _ancestors(cgroup_dir: str, root: str) -> list[str]:
    """cgroup_dir and every folder above it up to root (inclusive), deepest first."""
    out, current = [], os.path.normpath(cgroup_dir)
    root = os.path.normpath(root)
    while True:
        out.append(current)
        if current == root or not current.startswith(root):
            return out
        current = os.path.dirname(current)


def _quota_v2(folder: str) -> float | None:
    text = _read(os.path.join(folder, "cpu.max"))  # "max 100000" or "200000 100000"
    if not text:
        return None
    quota, _, period = text.partition(" ")
    if quota == "max" or not period:
        return None
    return int(quota) / int(period)


def _quota_v1(folder: str) -> float | None:
    quota, period = _read(os.path.join(folder, "cpu.cfs_quota_us")), _read(os.path.join(folder, "cpu.cfs_period_us"))
    if not quota or not period or int(quota) <= 0 or int(period) <= 0:
        return None  # -1: no quota
    return int(quota) / int(period)


def cgroup_cpu_quota(proc_cgroup: str | None = None, root: str = CGROUP_ROOT) -> float | None:
    """The tightest CPU quota (in CPUs, may be fractional) on this process's cgroup path, or None.

    Args:
      proc_cgroup: the text of /proc/self/cgroup (read when None).
      root: where the cgroup file systems are mounted.

    Returns:
      Quota / period of the most limiting cgroup on the path, or None when none sets a quota.
    """
    text = _read("/proc/self/cgroup") if proc_cgroup is None else proc_cgroup
    if not text:
        return None
    quotas: list[float] = []
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2 (unified)
            base = root if os.path.exists(os.path.join(root, "cgroup.controllers")) else os.path.join(root, "unified")
            reader = _quota_v2
        elif "cpu" in controllers.split(","):  # cgroup v1 cpu controller, mounted as cpu or cpu,cpuacct
            base = next(
                (os.path.join(root, name) for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu")
                 if os.path.isdir(os.path.join(root, name))),
                os.path.join(root, "cpu"),
            )
            reader = _quota_v1
        else:
            continue
        for folder in _ancestors(os.path.join(base, path.lstrip("/")), base):
            quota = reader(folder)
            if quota is not None:
                quotas.append(quota)
    return min(quotas) if quotas else None


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (os.cpu_count() where the platform has no mask)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def available_cpus(proc_cgroup: str | None = None, root: str = CGROUP_ROOT) -> int:
    """CPUs this process may use: min(affinity, ceil(cgroup quota)), at least 1.

    Args:
      proc_cgroup: the text of /proc/self/cgroup (tests); read when None.
      root: the cgroup mount point (tests).

    Returns:
      A thread count for compute pools (TFLite's interpreter, ...).
    """
    cpus = affinity_cpus()
    quota = cgroup_cpu_quota(proc_cgroup, root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota - 1e-9))
    return max(1, cpus)
