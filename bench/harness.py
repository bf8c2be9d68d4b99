"""What the bench scripts share: child processes sampled for memory, the machine, report helpers.

The bench scripts are plain scripts run from the repository root (``.venv/bin/python bench/X.py``),
so this folder is sys.path[0] and they import this module by name (``import harness``).

- tree_rss, TreeSampler: resident memory of a process and all its descendants (psutil), sampled
  in a thread while a measurement runs;
- run_child: one measurement in a fresh Python process (the script's own child mode), its process
  tree sampled, its result JSON read back; child_main: the child side (run one phase, write its
  result);
- machine, available_cpus: what the reports say about the machine;
- run_pipeline: the whole pipeline on a fresh root, timed;
- decoded_batches: image batches decoded as the Trainer's embedding pass decodes them;
- gb, write_json, write_markdown: report formatting and files.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------------------------------
# Memory of a process tree
# ------------------------------------------------------------------------------------------------------


def tree_rss(proc: Any) -> int:
    """Resident memory of a process and all its descendants, in bytes (0 for vanished processes)."""
    import psutil

    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


class TreeSampler:
    """While entered, samples tree_rss(proc) and the 1-minute load average every ``interval`` seconds.

    ``samples`` holds (wall-clock time, bytes) pairs, ``loads`` the load averages, ``peak`` the
    largest sample (0 when none was taken).
    """

    def __init__(self, proc: Any, interval: float) -> None:
        self.proc, self.interval = proc, interval
        self.samples: list[tuple[float, int]] = []
        self.loads: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def peak(self) -> int:
        """The largest resident memory sampled, in bytes."""
        return max((rss for _, rss in self.samples), default=0)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), tree_rss(self.proc)))
            self.loads.append(os.getloadavg()[0])
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------------------------------
# Child processes
# ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ChildRun:
    """One finished child process: its own result and what the parent measured around it."""

    result: dict[str, Any]  # the JSON the child wrote
    seconds: float  # wall time of the whole process, Python start and imports included
    samples: list[tuple[float, int]]  # (wall-clock time, process-tree bytes)
    loads: list[float]  # 1-minute load averages, one per sample
    load_before: tuple[float, float, float]  # os.getloadavg() just before the start

    @property
    def peak_rss_bytes(self) -> int:
        """The largest process-tree memory sampled."""
        return max((rss for _, rss in self.samples), default=0)


def child_env() -> dict[str, str]:
    """The environment of a measurement's child process: legacy Keras, quiet TF, the repository importable."""
    return dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)


def run_child(
    script: str,
    argv: list[str],
    log_path: str,
    result_path: str,
    *,
    name: str,
    interval: float,
    timeout_s: float | None = None,
) -> ChildRun:
    """Runs ``script`` with ``argv --result result_path`` in a fresh process, sampling its process tree.

    Args:
      script: the bench script to run (its child mode: argv selects it).
      argv: the child's arguments, without --result.
      log_path: the child's stdout and stderr.
      result_path: JSON the child writes its own measurements to (removed first, so a stale one is
        never read).
      name: what to call the measurement in the error.
      interval: seconds between memory samples.
      timeout_s: a child running longer is killed with its process tree and reported failed.

    Returns:
      The child's result and the parent's measurements.

    Raises:
      RuntimeError: the child failed, was killed or wrote no result.
    """
    import psutil

    if os.path.exists(result_path):
        os.remove(result_path)
    load_before = os.getloadavg()
    start = time.monotonic()
    with open(log_path, "w") as log:
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(script), *argv, "--result", result_path],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=child_env(),
        )
        proc = psutil.Process(child.pid)
        with TreeSampler(proc, interval) as sampler:
            try:
                returncode: int | str = child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                for member in [*proc.children(recursive=True), proc]:
                    with contextlib.suppress(psutil.Error):
                        member.kill()
                child.wait()
                returncode = f"killed after {timeout_s:g} s"
    seconds = time.monotonic() - start
    if returncode != 0 or not os.path.exists(result_path):
        raise RuntimeError(f"{name} failed (exit {returncode}); see {log_path}")
    with open(result_path) as f:
        result = json.load(f)
    return ChildRun(result, seconds, sampler.samples, sampler.loads, load_before)


def child_main(phases: Mapping[str, Callable[[argparse.Namespace], dict[str, Any]]], args: argparse.Namespace) -> int:
    """The child side of run_child: runs phases[args.phase] and writes its result to args.result.

    The result's ``seconds`` (the work itself, after imports) is rounded to hundredths.
    """
    sys.path.insert(0, REPO_ROOT)
    result = phases[args.phase](args)
    result["seconds"] = round(result["seconds"], 2)
    write_json(args.result, result)
    return 0


# ------------------------------------------------------------------------------------------------------
# The machine, data, reports
# ------------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """CPU model, core count, memory, OS and Python version of this machine."""
    import psutil

    model = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        names = re.findall(r"^model name\s*:\s*(.+)$", f.read(), flags=re.M)
        model = names[0] if names else model
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "available_cpus": available_cpus(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def available_cpus() -> int:
    """The CPUs this process may use (components.cpus: affinity and cgroup quota), not the machine's count."""
    sys.path.insert(0, REPO_ROOT)
    from components import cpus

    return cpus.available_cpus()


def decoded_batches(paths: list[str], args: argparse.Namespace) -> Any:
    """Decoded image batches (args.batch_size, args.image_size) as the Trainer's embedding pass makes them.

    Parallel and prefetched, so that the bench floors are not slower than the Trainer on purpose.
    """
    import tensorflow as tf

    from components.trainer import data

    return data.without_autotune(
        tf.data.Dataset.from_tensor_slices(paths)
        .map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(args.batch_size)
        .map(lambda b: data.decode_images(b, args.image_size), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(2)
    )


def run_pipeline(data_dir: str, root: str, name: str, trainer: Any, progress: Any) -> tuple[Any, dict[str, Any], float]:
    """Runs the whole pipeline (pipeline.local_run.run_local) with everything it writes under ``root``.

    Args:
      data_dir: the image folder.
      root: pipeline root, serving folder and metadata go below it.
      name: the pipeline name.
      trainer: the TrainerConfig.
      progress: run_local's progress stream.

    Returns:
      (the PipelineConfig, run_local's summary, seconds run_local took).

    Raises:
      RuntimeError: the pipeline failed.
    """
    from pipeline.config import PipelineConfig
    from pipeline.local_run import run_local

    config = PipelineConfig(
        data_dir=data_dir,
        pipeline_root=os.path.join(root, "pipeline_root"),
        serving_dir=os.path.join(root, "serving"),
        metadata_path=os.path.join(root, "pipeline_root", "metadata.sqlite"),
        pipeline_name=name,
        trainer=trainer,
    )
    start = time.monotonic()
    summary = run_local(config, out=progress)
    seconds = time.monotonic() - start
    if summary.get("error"):
        raise RuntimeError(f"pipeline failed: {summary['error']}")
    return config, summary, seconds


def gb(n: float) -> str:
    """Bytes as decimal gigabytes, two decimals (``1.23 GB``)."""
    return f"{n / 1e9:.2f} GB"


def write_json(path: str, data: Any) -> None:
    """Writes data as JSON with one-space indentation (the bench reports' format)."""
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def write_markdown(path: str, text: str) -> None:
    """Writes a Markdown report and prints it."""
    with open(path, "w") as f:
        f.write(text)
    print(text)
