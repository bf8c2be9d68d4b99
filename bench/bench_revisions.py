"""The default run at two revisions, back to back: is the newer one slower?

    .venv/bin/python bench/bench_revisions.py --before 098b457             # 10 pairs against the working tree
    .venv/bin/python bench/bench_revisions.py --before v1 --after v2 --pairs 20

Runs ``runner_local.py --data-dir DATA --pipeline-root <fresh> --serving-dir <fresh>`` from a
checkout of each revision (a detached ``git worktree`` under --work-dir, removed afterwards; the
working tree itself for ``--after .``), with this Python and ``PYTHONPATH`` set to that checkout,
so both sides share one virtual environment. The runs alternate in ABBA blocks (before after
after before, then after before before after, ...), so that a machine that slows down or speeds
up during the series weighs on both sides alike; consecutive runs form the pairs.

Per run: wall seconds of the whole process (imports included), its CPU seconds (user + system,
from wait4), its peak resident memory, and the run summary's macro AUC and pushed model. A run
that fails, or whose summary has an error, stops the bench. The report gives medians, the mean
after - before difference of the pairs with a seeded bootstrap 95% interval, and how many pairs
were slower after. On this noisy 2-core machine, fewer than about 15 pairs do not average the
drift out (docs/performance.md, 2026-11-30).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import machine, write_json, write_markdown  # the sibling module (this folder is on sys.path)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "facepipe-bench-revisions"
SIDES = ("before", "after")


@dataclasses.dataclass
class Run:
    """One default run: which side, where it stood in the series, and what it cost."""

    side: str
    index: int
    wall_s: float
    cpu_s: float
    max_rss_bytes: int
    macro_auc: float | None
    pushed_model: str | None


def abba_order(pairs: int) -> list[str]:
    """The sides in ABBA blocks (B A A B, A B B A, ...) for ``pairs`` pairs; consecutive runs pair up."""
    order: list[str] = []
    for block in range((pairs + 1) // 2):
        first, second = SIDES if block % 2 == 0 else SIDES[::-1]
        order += [first, second, second, first]
    return order[: 2 * pairs]


def pair_differences(runs: list[Run], field: str) -> list[float]:
    """After minus before of ``field`` for each pair of consecutive runs (one run of each side)."""
    diffs = []
    for first, second in zip(runs[::2], runs[1::2], strict=False):
        values = {first.side: getattr(first, field), second.side: getattr(second, field)}
        if set(values) != set(SIDES):
            raise ValueError(f"runs {first.index} and {second.index} are not one of each side")
        diffs.append(values["after"] - values["before"])
    return diffs


def bootstrap_mean_interval(values: list[float], samples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap 95% interval of the mean of ``values`` (seeded, so reports are reproducible)."""
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(samples))
    return means[int(0.025 * samples)], means[int(0.975 * samples) - 1]


def _git(*args: str, check: bool = True) -> str:
    """Runs git in this repository; returns its stripped output."""
    done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=check)
    return done.stdout.strip()


def commit_of(rev: str) -> str:
    """The full commit of ``rev`` ("." : HEAD, the commit under the working tree)."""
    return _git("rev-parse", "--verify", "HEAD^{commit}" if rev == "." else f"{rev}^{{commit}}")


def describe(rev: str) -> str:
    """``rev`` for the report: with its short commit ("." is the working tree, changes included)."""
    short = commit_of(rev)[:7]
    if rev == ".":
        return f"the working tree at {short}"
    return rev if short.startswith(rev) or rev.startswith(short) else f"{rev} ({short})"


def remove_worktree(tree: Path) -> None:
    """Removes a worktree this script added (and whatever is left of its folder)."""
    _git("worktree", "remove", "--force", str(tree), check=False)
    shutil.rmtree(tree, ignore_errors=True)


def checkout(rev: str, work_dir: Path, side: str) -> Path:
    """The tree to run ``rev`` from: the working tree for ".", else a fresh detached worktree for ``side``.

    One worktree per side, so that the same revision on both sides (an A/A series: the noise alone) works.
    """
    if rev == ".":
        return REPO_ROOT
    commit = commit_of(rev)
    tree = work_dir / f"tree-{side}-{commit[:12]}"
    if tree.exists():
        remove_worktree(tree)
    _git("worktree", "add", "--detach", "-q", str(tree), commit)
    return tree


def run_default(tree: Path, data_dir: Path, root: Path, log_path: Path, timeout_s: float) -> tuple[float, float, int]:
    """One default run from ``tree``; returns wall seconds, CPU seconds and peak RSS bytes of the process."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONPATH=str(tree))
    argv = [sys.executable, "runner_local.py", "--data-dir", str(data_dir),
            "--pipeline-root", str(root / "pipeline_root"), "--serving-dir", str(root / "serving")]
    with open(log_path, "w") as log:
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = started + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise RuntimeError(f"the run took over {timeout_s:g} s; log: {log_path}")
            time.sleep(0.2)  # polling for the exit, not ordering threads
        wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"runner_local.py exited with {proc.returncode}; log: {log_path}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def report(runs: list[Run], revisions: dict[str, str], args: argparse.Namespace) -> tuple[dict, str]:
    """The JSON result and the Markdown table of a finished series."""
    result: dict = {"revisions": revisions, "pairs": len(runs) // 2, "machine": machine(),
                    "runs": [dataclasses.asdict(r) for r in runs]}
    lines = [f"# Default run, {revisions['before']} (before) against {revisions['after']} (after)", "",
             f"{len(runs) // 2} pairs in ABBA order, data {args.data_dir}.", "",
             "| measure | median before | median after | mean after - before | bootstrap 95% | pairs slower after |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for field, unit in (("wall_s", "s"), ("cpu_s", "s")):
        before = [getattr(r, field) for r in runs if r.side == "before"]
        after = [getattr(r, field) for r in runs if r.side == "after"]
        diffs = pair_differences(runs, field)
        low, high = bootstrap_mean_interval(diffs)
        result[field] = {"median_before": statistics.median(before), "median_after": statistics.median(after),
                         "mean_difference": statistics.fmean(diffs), "interval_95": [low, high],
                         "pairs_slower_after": sum(d > 0 for d in diffs), "differences": diffs}
        lines.append(f"| {field} | {statistics.median(before):.1f} {unit} | {statistics.median(after):.1f} {unit} | "
                     f"{statistics.fmean(diffs):+.2f} {unit} | [{low:+.2f}, {high:+.2f}] | "
                     f"{sum(d > 0 for d in diffs)}/{len(diffs)} |")
    for side in SIDES:
        rss = [r.max_rss_bytes / 1e9 for r in runs if r.side == side]
        aucs = sorted({"n/a" if r.macro_auc is None else f"{r.macro_auc:.3f}" for r in runs if r.side == side})
        lines.append(f"\n{side}: peak RSS {min(rss):.2f}-{max(rss):.2f} GB; macro AUC {', '.join(aucs)}")
    return result, "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Runs the series and writes results.json and results.md under --work-dir."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision of the 'before' side")
    parser.add_argument("--after", default=".", help="git revision of the 'after' side ('.': the working tree)")
    parser.add_argument("--pairs", type=int, default=10, help="before/after pairs (ABBA blocks of two pairs)")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data" / "utkface_synth", help="image folder")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="checkouts, logs and results")
    parser.add_argument("--timeout-s", type=float, default=1800, help="deadline of one run")
    args = parser.parse_args(argv)
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    if not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder (python data/generate.py makes the bundled one)")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    revisions = {side: describe(rev) for side, rev in (("before", args.before), ("after", args.after))}
    trees = {side: checkout(rev, args.work_dir, side) for side, rev in (("before", args.before), ("after", args.after))}
    runs: list[Run] = []
    try:
        for index, side in enumerate(abba_order(args.pairs), start=1):
            root = args.work_dir / f"run-{index}"
            shutil.rmtree(root, ignore_errors=True)
            log = args.work_dir / f"run-{index}-{side}.log"
            wall, cpu, rss = run_default(trees[side], args.data_dir.resolve(), root, log, args.timeout_s)
            summary = json.loads((root / "pipeline_root" / "last_run_summary.json").read_text())
            if summary.get("error"):
                raise RuntimeError(f"run {index} ({side}) failed: {summary['error']}; log: {log}")
            runs.append(Run(side, index, wall, cpu, rss, summary.get("macro_auc"), summary.get("pushed_model")))
            print(f"run {index} {side}: {wall:.1f} s wall, {cpu:.1f} s CPU, load {os.getloadavg()[0]:.2f}", flush=True)
            shutil.rmtree(root, ignore_errors=True)
    finally:
        for tree in trees.values():
            if tree != REPO_ROOT:
                remove_worktree(tree)
    result, text = report(runs, revisions, args)
    write_json(str(args.work_dir / "results.json"), result)
    write_markdown(str(args.work_dir / "results.md"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
