"""Benchmark: our Trainer (each image through the frozen backbone once) against the plain Keras loop.

One command, from the repository root:

    .venv/bin/python bench/bench_trainer.py --num-images 2400 24000 --epochs 10 --image-size 128

For each image count it generates a synthetic UTKFace-style data set once (under --work-dir,
git-ignored), then runs five measurements side by side on the same machine, each in a fresh
Python process whose whole process tree is sampled for resident memory (psutil):

  (c) pipeline:  the whole pipeline (pipeline.local_run.run_local, fresh pipeline root): ingest,
                 statistics, validation, Transform, Trainer, Evaluator, Pusher;
  (d) bare:      one bare backbone pass over all the images (decode + backbone, outputs dropped):
                 the floor for anything that looks at every image once with TensorFlow;
  (e) bare_tflite: the same pass with the backbone converted to TFLite (XNNPACK), the thread
                 count probed as the Trainer's engine does: the floor on this hardware;
  (b) trainer:   our Trainer alone (components.trainer.run.train_and_export, the function run_fn
                 calls) on the examples and Transform graph of (c);
  (a) plain:     the plain loop: tf.data from the image files of the same training split ->
                 the same frozen backbone + head -> model.fit for the same epochs.

Reported times are the work itself (after imports); each process's total wall time (with Python
start and imports) and the peak memory of its process tree are reported beside them.

Single runs vary (until data.without_autotune, a tf.data iterator stall of ~25 s hit some runs
and not others), and (c) / (e) and (c) / (d) are the tight targets, so --repeats N (default 3)
runs (c), (d) and (e) N times each, alternating (c, d, e, c, d, e, ...), and reports the median
of each with every sample and the ratio of each back-to-back pair. (a) and (b) run once: (a)
alone takes about 9 minutes at 24,000 images.

The converted TFLite backbone is cached (components.trainer.tflite_engine) in <work-dir>/tflite_cache,
which a first, untimed step fills (its conversion time is reported as ``tflite_conversion``); (b),
(c) and (e) then find it there, as every pipeline run after the first does.

Results go to <out>/bench_trainer.json (updated after every measurement, so a partial run keeps
what it measured) and <out>/bench_trainer.md.

This file holds the parent (data, scheduling, report); the measurements the child processes run
are in trainer_phases.py, the process running and memory sampling in harness.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import harness  # the sibling module (this folder is on sys.path)
from harness import gb
from trainer_phases import PHASE_FUNCTIONS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WORK_DIR = os.path.join(REPO_ROOT, "bench", "work")
DEFAULT_OUT = os.path.join(REPO_ROOT, "bench", "results")
# Run order: (c) first, since (b) and (a) use its examples and Transform graph; (d) right after
# it, so each (c), (d) pair is measured back to back.
PHASES = ("pipeline", "bare", "bare_tflite", "trainer", "plain")
REPEATED = ("pipeline", "bare", "bare_tflite")  # the sides of the tight c/e and c/d targets
LABELS = {"plain": "(a) plain loop", "trainer": "(b) Trainer alone", "pipeline": "(c) whole pipeline",
          "bare": "(d) bare backbone pass", "bare_tflite": "(e) bare TFLite backbone pass",
          "convert": "TFLite conversion (untimed warm-up)"}
TARGETS = {"c/e": 2.0, "c/a": 0.18}  # at 24,000 images (issue 15)
DATA_SEED = 2024
SAMPLE_INTERVAL_S = 0.2


# ------------------------------------------------------------------------------------------------------
# Parent: data, subprocesses, report (the children: trainer_phases)
# ------------------------------------------------------------------------------------------------------


def run_phase(phase: str, argv: list[str], log_path: str, result_path: str) -> dict[str, Any]:
    """Runs one measurement in a fresh process (this script's --phase mode), sampling its process tree's memory.

    Args:
      phase: one of PHASES, or "convert".
      argv: the child's other arguments.
      log_path: the child's stdout and stderr.
      result_path: JSON the child writes its own measurements to.

    Returns:
      The child's measurements plus process_seconds, peak_rss_bytes and the load averages.
    """
    run = harness.run_child(
        __file__, ["--phase", phase, *argv], log_path, result_path, name=phase, interval=SAMPLE_INTERVAL_S
    )
    result = run.result
    result.update(
        process_seconds=round(run.seconds, 1),
        peak_rss_bytes=run.peak_rss_bytes,
        load_before=[round(x, 2) for x in run.load_before],
        load_after=[round(x, 2) for x in os.getloadavg()],
    )
    return result


def markdown(report: dict[str, Any]) -> str:
    """The report table: one row per image count, then the repeats and the load averages."""
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores ({m.get('available_cpus', '?')} available to this process), "
        f"{m['memory_gib']} GiB, no GPU. Settings: {report['settings']}.",
        "",
        "| images | (a) plain loop | (b) Trainer alone | (c) whole pipeline | (d) bare TF pass | (e) bare TFLite pass "
        "| c / e | c / d | c / a | b / a |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, runs in sorted(report["runs"].items(), key=lambda kv: int(kv[0])):
        cells = []
        for phase in ("plain", "trainer", "pipeline", "bare", "bare_tflite"):
            r = runs.get(phase)
            cells.append(f"{r['seconds']:.0f} s, {gb(r['peak_rss_bytes'])}" if r else "not run")

        def ratio(a: str, b: str, runs: dict = runs) -> str:
            if a in runs and b in runs:
                return f"{runs[a]['seconds'] / runs[b]['seconds']:.2f}"
            return "-"

        lines.append(
            f"| {int(n):,} | " + " | ".join(cells)
            + f" | {ratio('pipeline', 'bare_tflite')} | {ratio('pipeline', 'bare')} | {ratio('pipeline', 'plain')}"
            + f" | {ratio('trainer', 'plain')} |"
        )
    lines += [
        "",
        "Each cell: work wall time (after imports; the median where a phase was repeated), peak resident "
        "memory of the process tree (the largest over repeats). Targets at 24,000 images: "
        + ", ".join(f"{k} <= {v}" for k, v in TARGETS.items()) + ".",
        "Process wall times with Python start and imports: "
        + "; ".join(
            f"{int(n):,} images: " + ", ".join(
                f"{p} {r['process_seconds']:.0f} s" for p, r in runs.items() if p in PHASES
            )
            for n, runs in sorted(report["runs"].items(), key=lambda kv: int(kv[0]))
        )
        + ".",
    ]
    for n, runs in sorted(report["runs"].items(), key=lambda kv: int(kv[0])):
        if "convert" in runs:
            conv = runs["convert"]
            lines.append(f"{int(n):,} images: TFLite conversion of the backbone (cold cache, untimed warm-up) "
                         f"{conv['convert_seconds']:.1f} s.")
        samples = {p: runs.get(p, {}).get("samples") for p in REPEATED}
        if any(v and len(v) > 1 for v in samples.values()):
            parts = [f"{LABELS[p].split(' ')[0]} " + ", ".join(f"{x:.1f}" for x in v) + " s"
                     for p, v in samples.items() if v]
            text = f"{int(n):,} images, repeated in alternation: " + "; ".join(parts)
            for a, b in (("pipeline", "bare_tflite"), ("pipeline", "bare")):
                if samples.get(a) and samples.get(b):
                    pairs = [x / y for x, y in zip(samples[a], samples[b], strict=False)]  # a partial run may lack one
                    text += f"; {LABELS[a][:3]}/{LABELS[b][:3]} of each pair " + ", ".join(f"{x:.2f}" for x in pairs)
            lines.append(text + ".")
        loads = [f"{p} {r['load_before'][0]:.1f}->{r['load_after'][0]:.1f}" for p, r in runs.items()
                 if isinstance(r, dict) and "load_before" in r]
        if loads:
            lines.append(f"{int(n):,} images, 1-minute load average before -> after (median sample): "
                         + ", ".join(loads) + ".")
    return "\n".join(lines) + "\n"


def schedule(phases: list[str], repeats: int) -> list[str]:
    """The order phases run in: every phase once, then the REPEATED ones alternating.

    Args:
      phases: the selected phases, in PHASES order.
      repeats: how many times each REPEATED phase runs in all.

    Returns:
      Phase names in run order.
    """
    order = [p for p in PHASES if p in phases]
    again = [p for p in order if p in REPEATED]
    return order + again * (max(repeats, 1) - 1)


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase's report entry: the median-time sample, with all sample times and the peak memory.

    Args:
      samples: the phase's results in run order.

    Returns:
      The median sample (the lower median for an even count) plus ``samples`` (work seconds in run
      order) and ``peak_rss_bytes`` (the largest of all samples).
    """
    ordered = sorted(samples, key=lambda r: r["seconds"])
    result = dict(ordered[(len(ordered) - 1) // 2])
    result["samples"] = [r["seconds"] for r in samples]
    result["sample_loads"] = [[r["load_before"][0], r["load_after"][0]] for r in samples]
    result["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in samples)
    return result


def parent(args: argparse.Namespace) -> int:
    """Generates data, runs every phase for every image count, writes and prints the report."""
    sys.path.insert(0, REPO_ROOT)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from components import synthetic_data

    os.makedirs(args.out, exist_ok=True)
    report_path = os.path.join(args.out, "bench_trainer.json")
    settings = (f"{args.epochs} epochs, {args.image_size} px, batch {args.batch_size}, {args.backbone}, "
                f"embedding engine {args.embedding_engine}")
    report: dict[str, Any] = {"settings": settings, "runs": {}}
    if os.path.exists(report_path):  # keep other image counts measured earlier with the same settings
        with open(report_path) as f:
            previous = json.load(f)
        if previous.get("settings") == settings:
            report = previous
    report.update(command=" ".join([os.path.relpath(sys.executable, REPO_ROOT), *sys.argv]), machine=harness.machine())
    for n in args.num_images:
        data_dir = os.path.join(args.work_dir, f"data_{n}")
        start = time.monotonic()
        _, generated = synthetic_data.ensure_default_dataset(
            data_dir, synthetic_data.SyntheticSpec(num_images=n, seed=DATA_SEED), workers=2
        )
        print(f"[{n} images] data in {data_dir} ({'generated' if generated else 'reused'} in "
              f"{time.monotonic() - start:.0f} s)", flush=True)
        runs = report["runs"].setdefault(str(n), {})
        run_dir = os.path.join(args.work_dir, f"run_{n}")
        os.makedirs(run_dir, exist_ok=True)
        common = ["--data-dir", data_dir, "--run-dir", run_dir, "--epochs", str(args.epochs),
                  "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
                  "--backbone", args.backbone, "--embedding-engine", args.embedding_engine,
                  "--tflite-cache-dir", os.path.join(args.work_dir, "tflite_cache")]
        samples: dict[str, list[dict[str, Any]]] = {}
        if args.embedding_engine != "tf" or "bare_tflite" in args.phases:
            print(f"[{n} images] {LABELS['convert']} ...", flush=True)
            runs["convert"] = run_phase(
                "convert", common, os.path.join(run_dir, "convert.log"), os.path.join(run_dir, "convert.json")
            )
            print(f"[{n} images] TFLite backbone: {runs['convert']['convert_seconds']:.1f} s "
                  f"({'cached' if runs['convert']['cache_hit'] else 'converted'})", flush=True)
        for phase in schedule(args.phases, args.repeats):
            print(f"[{n} images] {LABELS[phase]} ...", flush=True)
            result = run_phase(
                phase, common, os.path.join(run_dir, f"{phase}.log"), os.path.join(run_dir, f"{phase}.json")
            )
            samples.setdefault(phase, []).append(result)
            runs[phase] = summarize(samples[phase])
            print(f"[{n} images] {LABELS[phase]}: {result['seconds']:.1f} s of work, "
                  f"{result['process_seconds']:.1f} s in all, peak {gb(result['peak_rss_bytes'])}, "
                  f"load {result['load_before']} -> {result['load_after']}", flush=True)
            harness.write_json(report_path, report)
    harness.write_markdown(os.path.join(args.out, "bench_trainer.md"), markdown(report))
    return 0


def child(args: argparse.Namespace) -> int:
    """Runs one phase (trainer_phases) and writes its measurements to --result."""
    return harness.child_main(PHASE_FUNCTIONS, args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line (the --phase/--result/--run-dir/--data-dir flags are for the child processes)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, nargs="+", default=[2400], help="image counts to benchmark")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of (c) pipeline and (d) bare each, alternating; the report gives medians")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES),
                        help="which measurements (plain and trainer need the pipeline phase's output)")
    parser.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help="generated data and run outputs")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where the JSON and Markdown reports go")
    parser.add_argument("--embedding-engine", default="auto", choices=("auto", "tf", "tflite"),
                        help="the Trainer's embedding engine in (b) and (c) (tf: as before issue 15)")
    parser.add_argument("--phase", choices=(*PHASES, "convert"), help=argparse.SUPPRESS)
    parser.add_argument("--tflite-cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    parsed = parse_args()
    sys.exit(child(parsed) if parsed.phase else parent(parsed))
