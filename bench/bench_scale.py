"""Scale benchmark: the whole pipeline at 24,000 and 240,000 images, side by side in one run.

One command, from the repository root (hours on the shared 2-core machine; not part of CI):

    nice -n 5 .venv/bin/python bench/bench_scale.py --num-images 24000 240000

For each image count it generates a synthetic UTKFace-style folder once (cached under
--work-dir, with the generation time recorded beside it), then runs the whole pipeline
(pipeline.local_run.run_local on a fresh pipeline root, in-memory Beam, as runner_local.py does)
in a fresh Python process. This process samples, every 0.5 s, the resident memory of that
process and all its descendants (psutil) and the load average; the child records when each
component starts and finishes, so every component gets its own time and peak memory.

It also measures head training alone (components.trainer.train.train_head, 10 epochs on random
1280-d embeddings) with the store in memory and spilled to disk, each in its own process, at the
training-set sizes of the two pipeline runs: spilling must not slow head training down.

Targets (the largest count against the smallest): wall time at most 10.5x (linear, with some
slack for fixed costs falling the other way), peak memory of the process tree at most 1.3x.

Results: <out>/bench_scale.json (updated after every measurement) and <out>/bench_scale.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sys
import time
from typing import Any

import harness  # the sibling module (this folder is on sys.path)
from harness import gb

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WORK_DIR = os.path.join(REPO_ROOT, "bench", "work", "scale")
DEFAULT_OUT = os.path.join(REPO_ROOT, "bench", "results")
DATA_SEED = 2024
SAMPLE_INTERVAL_S = 0.5
TIME_TARGET = 10.5
MEMORY_TARGET = 1.3
TRAIN_SHARE = 0.8 * 0.9  # ExampleGen's 80/20 split, then the Trainer holds out 1 in 10 for validation


# ------------------------------------------------------------------------------------------------------
# Parent: data, child processes, sampling, report
# ------------------------------------------------------------------------------------------------------


def run_child(argv: list[str], log_path: str, result_path: str, timeout_s: float) -> dict[str, Any]:
    """Runs this script in --phase mode in a fresh process, sampling its process tree.

    A child that runs longer than timeout_s is killed (with its process tree) and reported failed.

    Returns:
      The child's result plus process_seconds, peak_rss_bytes, samples ([time, rss] pairs) and
      load (1-minute load average: before, mean and max while it ran, after).
    """
    run = harness.run_child(
        __file__, argv, log_path, result_path, name=" ".join(argv[:2]), interval=SAMPLE_INTERVAL_S,
        timeout_s=timeout_s,
    )
    result = run.result
    result.update(
        process_seconds=round(run.seconds, 1),
        peak_rss_bytes=run.peak_rss_bytes,
        samples=run.samples,
        load={
            "before": round(run.load_before[0], 2),
            "mean": round(sum(run.loads) / len(run.loads), 2),
            "max": round(max(run.loads), 2),
            "after": round(os.getloadavg()[0], 2),
        },
    )
    return result


def component_table(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per component: seconds and the peak process-tree memory sampled while it ran."""
    table = {}
    for name, (began, ended) in result["windows"].items():
        # Widened by one sampling interval: a component shorter than that still gets its neighbours' samples.
        inside = [rss for t, rss in result["samples"] if began - SAMPLE_INTERVAL_S <= t <= ended + SAMPLE_INTERVAL_S]
        table[name] = {"seconds": round(ended - began, 1), "peak_rss_bytes": max(inside, default=0)}
    return table


def ensure_data(work_dir: str, n: int) -> tuple[str, dict[str, Any]]:
    """Generates (once) n synthetic images under work_dir; returns the folder and how it was made."""
    from components import synthetic_data

    data_dir = os.path.join(work_dir, f"data_{n}")
    info_path = os.path.join(work_dir, f"data_{n}.generation.json")
    start = time.monotonic()
    _, generated = synthetic_data.ensure_default_dataset(
        data_dir, synthetic_data.SyntheticSpec(num_images=n, seed=DATA_SEED), workers=os.cpu_count() or 1
    )
    if generated:
        info = {"seconds": round(time.monotonic() - start, 1), "workers": os.cpu_count(),
                "load_after": round(os.getloadavg()[0], 2), "date": time.strftime("%Y-%m-%d")}
        with open(info_path, "w") as f:
            json.dump(info, f)
    elif os.path.exists(info_path):
        with open(info_path) as f:
            info = {**json.load(f), "reused": True}
    else:
        info = {"reused": True}
    return data_dir, info


def markdown(report: dict[str, Any]) -> str:
    """The performance-doc tables: one row per image count, the components, head training."""
    runs = {int(n): r for n, r in report["pipeline"].items()}
    sizes = sorted(runs)
    lines = [
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"{report['machine']['memory_gib']} GiB, no GPU; {report['settings']}.",
        "",
        "| images | ingested | whole pipeline | with imports | peak memory (process tree) | load avg (mean, max) "
        "| time / smallest | memory / smallest |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = runs[sizes[0]]
    for n in sizes:
        r = runs[n]
        t_ratio = r["seconds"] / base["seconds"]
        m_ratio = r["peak_rss_bytes"] / base["peak_rss_bytes"]
        lines.append(
            f"| {n:,} | {r['ingested']:,} | {r['seconds']:.0f} s | {r['process_seconds']:.0f} s | "
            f"{gb(r['peak_rss_bytes'])} | {r['load']['mean']:.1f}, {r['load']['max']:.1f} | "
            f"{t_ratio:.2f}x | {m_ratio:.2f}x |"
        )
    if len(sizes) > 1:
        big = runs[sizes[-1]]
        t_ratio = big["seconds"] / base["seconds"]
        m_ratio = big["peak_rss_bytes"] / base["peak_rss_bytes"]
        lines += [
            "",
            f"Targets ({sizes[-1]:,} against {sizes[0]:,} images): time <= {TIME_TARGET}x: **{t_ratio:.2f}x, "
            f"{'met' if t_ratio <= TIME_TARGET else 'NOT met'}**; peak memory <= {MEMORY_TARGET}x: "
            f"**{m_ratio:.2f}x, {'met' if m_ratio <= MEMORY_TARGET else 'NOT met'}**.",
        ]
    names = list(dict.fromkeys(name for n in sizes for name in runs[n]["components"]))
    lines += ["", "| component | " + " | ".join(f"{n:,} images" for n in sizes) + " |",
              "| --- | " + " | ".join("---:" for _ in sizes) + " |"]
    for name in names:
        cells = []
        for n in sizes:
            c = runs[n]["components"].get(name)
            cells.append(f"{c['seconds']:.1f} s, {gb(c['peak_rss_bytes'])}" if c else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for n in sizes:
        trainer = runs[n].get("trainer") or {}
        if trainer:
            lines.append(
                f"\nTrainer at {n:,} images: " + ", ".join(f"{k} {v:.1f} s" for k, v in trainer["seconds"].items())
                + f"; {trainer['train_examples']:,} training embeddings "
                + ("spilled to disk" if trainer["embeddings_spilled"] else "in memory")
                + f"; {trainer['head_epochs']} head epochs."
            )
    if report.get("head"):
        lines += ["", "| head training, 10 epochs | rows | store | seconds | peak memory |",
                  "| --- | ---: | --- | ---: | ---: |"]
        for key, h in sorted(report["head"].items(), key=lambda kv: (kv[1]["rows"], kv[1]["mode"])):
            lines.append(f"| {key} | {h['rows']:,} | {h['mode']} | {h['seconds']:.1f} s | {gb(h['peak_rss_bytes'])} |")
    data = report.get("data", {})
    gen = [f"{int(n):,} images {d['seconds']:.0f} s" for n, d in sorted(data.items(), key=lambda kv: int(kv[0]))
           if "seconds" in d]
    if gen:
        lines.append("\nData generation (once, cached): " + "; ".join(gen) + ".")
    return "\n".join(lines) + "\n"


def parent(args: argparse.Namespace) -> int:
    """Generates data, runs every measurement, writes and prints the report."""
    sys.path.insert(0, REPO_ROOT)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work_dir, exist_ok=True)
    report_path = os.path.join(args.out, "bench_scale.json")
    report: dict[str, Any] = {
        "command": " ".join([os.path.relpath(sys.executable, REPO_ROOT), *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": harness.machine(),
        "settings": f"{args.epochs} epochs, {args.image_size} px, batch 32, efficientnet_lite0, in-memory Beam",
        "data": {}, "pipeline": {}, "head": {},
    }

    def save() -> None:
        harness.write_json(report_path, report)

    folders = {}
    for n in args.num_images:
        print(f"[{n:,} images] data ...", flush=True)
        folders[n], report["data"][str(n)] = ensure_data(args.work_dir, n)
        print(f"[{n:,} images] data in {folders[n]}: {report['data'][str(n)]}", flush=True)
        save()
    if args.data_only:
        return 0
    for n in args.num_images:
        run_dir = os.path.join(args.work_dir, f"run_{n}")
        shutil.rmtree(run_dir, ignore_errors=True)
        os.makedirs(run_dir)
        print(f"[{n:,} images] whole pipeline ...", flush=True)
        result = run_child(
            ["--phase", "pipeline", "--data-dir", folders[n], "--run-dir", run_dir,
             "--epochs", str(args.epochs), "--image-size", str(args.image_size)],
            os.path.join(run_dir, "child.log"), os.path.join(run_dir, "result.json"), args.child_timeout,
        )
        result["components"] = component_table(result)
        with open(os.path.join(run_dir, "samples.json"), "w") as f:
            json.dump(result.pop("samples"), f)
        report["pipeline"][str(n)] = result
        save()
        print(f"[{n:,} images] {result['seconds']:.0f} s, peak {gb(result['peak_rss_bytes'])}, "
              f"load {result['load']}", flush=True)
        if not args.keep_outputs:  # the examples of 240,000 images take ~2.5 GB
            shutil.rmtree(os.path.join(run_dir, "pipeline"), ignore_errors=True)
    for n in args.num_images if args.head else ():
        rows = int(n * TRAIN_SHARE)
        for mode in ("memory", "spilled"):
            print(f"[head] {rows:,} rows, {mode} ...", flush=True)
            run_dir = os.path.join(args.work_dir, f"head_{rows}_{mode}")
            os.makedirs(run_dir, exist_ok=True)
            result = run_child(
                ["--phase", "head", "--rows", str(rows), "--mode", mode, "--epochs", str(args.epochs)],
                os.path.join(run_dir, "child.log"), os.path.join(run_dir, "result.json"), args.child_timeout,
            )
            result.pop("samples")
            report["head"][f"{rows}-{mode}"] = result
            save()
            print(f"[head] {rows:,} rows, {mode}: {result['seconds']:.1f} s, peak {gb(result['peak_rss_bytes'])}",
                  flush=True)
    harness.write_markdown(os.path.join(args.out, "bench_scale.md"), markdown(report))
    return 0


# ------------------------------------------------------------------------------------------------------
# Children
# ------------------------------------------------------------------------------------------------------


class _Progress(io.TextIOBase):
    """run_local's progress stream: records when each component starts and finishes (wall clock)."""

    def __init__(self) -> None:
        self.windows: dict[str, list[float]] = {}

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if m := re.match(r"\[(start|done )\] (\S+)", line):
                if m.group(1) == "start":
                    self.windows[m.group(2)] = [time.time(), time.time()]
                elif m.group(2) in self.windows:
                    self.windows[m.group(2)][1] = time.time()
            print(line, flush=True)
        return len(text)


def phase_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """The whole pipeline with LocalDagRunner on a fresh pipeline root."""
    from components.trainer.config import TrainerConfig

    progress = _Progress()
    _, summary, seconds = harness.run_pipeline(
        args.data_dir, os.path.join(args.run_dir, "pipeline"), "facepipe-scale",
        TrainerConfig(image_size=args.image_size, epochs=args.epochs), progress,
    )
    trainer = None
    with open(summary["log_file"]) as f:
        if m := re.search(r"trainer result: TrainResult\((.*)\)", f.read()):
            fields = m.group(1)
            trainer = {
                "train_examples": int(re.search(r"train_examples=(\d+)", fields).group(1)),
                "head_epochs": int(re.search(r"head_epochs=(\d+)", fields).group(1)),
                "embeddings_spilled": "embeddings_spilled=True" in fields,
                "seconds": {k: float(v) for k, v in re.findall(
                    r"'(\w+)': ([\d.]+)", re.search(r"seconds=\{([^}]*)\}", fields).group(1))},
            }
    return {
        "seconds": seconds,
        "windows": progress.windows,
        "ingested": summary.get("ingested"),
        "quarantined": summary.get("quarantined"),
        "macro_auc": summary.get("macro_auc"),
        "blessed": summary.get("blessed"),
        "trainer": trainer,
    }


def phase_head(args: argparse.Namespace) -> dict[str, Any]:
    """Head training alone on random embeddings, the store in memory or spilled to a file."""
    import tempfile

    import numpy as np

    from components.base import labels
    from components.trainer import model, train
    from components.trainer.config import TrainerConfig
    from components.trainer.embeddings import Embedded, _EmbeddingWriter

    train.skip_autograph_for_tf_keras()
    rng = np.random.default_rng(0)
    dim, n = 1280, args.rows
    with tempfile.TemporaryDirectory(prefix="bench-head-") as spill_dir:
        writer = _EmbeddingWriter(0 if args.mode == "spilled" else 1 << 40, spill_dir)
        for start in range(0, n, 4096):  # written batch by batch, as the embedding pass does
            writer.append(rng.standard_normal((min(4096, n - start), dim), dtype=np.float32))
        y = (rng.random((n, len(labels.LABEL_NAMES))) < 0.3).astype(np.float32)
        embedded = Embedded(writer.finish(), y, np.array([f"{i}.jpg" for i in range(n)]))
        held_out = train.validation_mask(embedded.filenames, 10)
        head = model.build_head(dim, len(labels.LABEL_NAMES))
        params = TrainerConfig(epochs=args.epochs, early_stopping_patience=0)
        start = time.monotonic()
        history = train.train_head(head, embedded.take(~held_out), embedded.take(held_out), params)
        seconds = time.monotonic() - start
    return {"seconds": seconds, "rows": n, "mode": args.mode, "spilled": embedded.spilled,
            "final_loss": history.history["loss"][-1]}


def child(args: argparse.Namespace) -> int:
    """Runs one measurement and writes it to --result."""
    return harness.child_main({"pipeline": phase_pipeline, "head": phase_head}, args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line (--phase and the flags after it are for the child processes)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, nargs="+", default=[24000, 240000],
                        help="image counts, smallest first (the targets compare the largest with it)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--no-head", dest="head", action="store_false",
                        help="skip the head-training measurement (in memory vs spilled)")
    parser.add_argument("--child-timeout", type=float, default=8 * 3600, metavar="SECONDS",
                        help="kill a measurement that runs longer than this (default 8 hours)")
    parser.add_argument("--data-only", action="store_true", help="only generate (or check) the data folders")
    parser.add_argument("--keep-outputs", action="store_true", help="keep each run's pipeline root")
    parser.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help="generated data and run outputs")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where the JSON and Markdown reports go")
    parser.add_argument("--phase", choices=("pipeline", "head"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("memory", "spilled"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.phase and args.num_images != sorted(args.num_images):
        parser.error("--num-images: give the counts smallest first")
    return args


if __name__ == "__main__":
    parsed = parse_args()
    sys.exit(child(parsed) if parsed.phase else parent(parsed))
