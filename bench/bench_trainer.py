"""Benchmark: our Trainer (each image through the frozen backbone once) against the plain Keras loop.

One command, from the repository root:

    .venv/bin/python bench/bench_trainer.py --num-images 2400 24000 --epochs 10 --image-size 128

For each image count it generates a synthetic UTKFace-style data set once (under --work-dir,
git-ignored), then runs four measurements side by side on the same machine, each in a fresh
Python process whose whole process tree is sampled for resident memory (psutil):

  (c) pipeline:  the whole pipeline (pipeline.local_run.run_local, fresh pipeline root): ingest,
                 statistics, validation, Transform, Trainer, Evaluator, Pusher;
  (d) bare:      one bare backbone pass over all the images (decode + backbone, outputs dropped):
                 the floor for anything that looks at every image once;
  (b) trainer:   our Trainer alone (components.trainer.run.train_and_export, the function run_fn
                 calls) on the examples and Transform graph of (c);
  (a) plain:     the plain loop: tf.data from the image files of the same training split ->
                 the same frozen backbone + head -> model.fit for the same epochs.

Reported times are the work itself (after imports); each process's total wall time (with Python
start and imports) and the peak memory of its process tree are reported beside them.

Single runs vary (until data.without_autotune, a tf.data iterator stall of ~25 s hit some runs
and not others), and (c) / (d) is the tight target, so --repeats N (default 3) runs (c) and (d)
N times each, alternating (c, d, c, d, ...), and reports the median of each with every sample and
the ratio of each back-to-back pair. (a) and (b) run once: (a) alone takes about 9 minutes at
24,000 images.

Results go to <out>/bench_trainer.json (updated after every measurement, so a partial run keeps
what it measured) and <out>/bench_trainer.md.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WORK_DIR = os.path.join(REPO_ROOT, "bench", "work")
DEFAULT_OUT = os.path.join(REPO_ROOT, "bench", "results")
# Run order: (c) first, since (b) and (a) use its examples and Transform graph; (d) right after
# it, so each (c), (d) pair is measured back to back.
PHASES = ("pipeline", "bare", "trainer", "plain")
REPEATED = ("pipeline", "bare")  # the two sides of the tight c/d target
LABELS = {"plain": "(a) plain loop", "trainer": "(b) Trainer alone", "pipeline": "(c) whole pipeline",
          "bare": "(d) bare backbone pass"}
DATA_SEED = 2024
SAMPLE_INTERVAL_S = 0.2


# ------------------------------------------------------------------------------------------------------
# Parent: data, subprocesses, memory sampling, report
# ------------------------------------------------------------------------------------------------------


def _tree_rss(proc: Any) -> int:
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


def run_phase(phase: str, argv: list[str], log_path: str, result_path: str) -> dict[str, Any]:
    """Runs one measurement in a fresh process, sampling its process tree's memory.

    Args:
      phase: one of PHASES.
      argv: arguments for the child (this script's --phase mode).
      log_path: the child's stdout and stderr.
      result_path: JSON the child writes its own measurements to.

    Returns:
      The child's measurements plus process_seconds, peak_rss_bytes and the load averages.
    """
    import psutil

    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO_ROOT)
    if os.path.exists(result_path):
        os.remove(result_path)
    load_before = os.getloadavg()
    start = time.monotonic()
    with open(log_path, "w") as log:
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--phase", phase, "--result", result_path, *argv],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env,
        )
        proc = psutil.Process(child.pid)
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, _tree_rss(proc))
                stop.wait(SAMPLE_INTERVAL_S)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        returncode = child.wait()
        stop.set()
        sampler.join()
    seconds = time.monotonic() - start
    if returncode != 0 or not os.path.exists(result_path):
        raise RuntimeError(f"{phase} failed (exit {returncode}); see {log_path}")
    with open(result_path) as f:
        result = json.load(f)
    result.update(
        process_seconds=round(seconds, 1),
        peak_rss_bytes=peak,
        load_before=[round(x, 2) for x in load_before],
        load_after=[round(x, 2) for x in os.getloadavg()],
    )
    return result


def machine() -> dict[str, Any]:
    """CPU model, core count, memory, OS and TensorFlow device of this machine."""
    import psutil

    model = platform.processor() or ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        names = re.findall(r"^model name\s*:\s*(.+)$", f.read(), flags=re.M)
        model = names[0] if names else model
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def markdown(report: dict[str, Any]) -> str:
    """The README table: one row per image count."""
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, no GPU. "
        f"Settings: {report['settings']}.",
        "",
        "| images | (a) plain loop | (b) Trainer alone | (c) whole pipeline | (d) bare backbone pass "
        "| c / a | c / d | b / a |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, runs in sorted(report["runs"].items(), key=lambda kv: int(kv[0])):
        cells = []
        for phase in ("plain", "trainer", "pipeline", "bare"):
            r = runs.get(phase)
            cells.append(f"{r['seconds']:.0f} s, {_gb(r['peak_rss_bytes'])}" if r else "not run")

        def ratio(a: str, b: str, runs: dict = runs) -> str:
            if a in runs and b in runs:
                return f"{runs[a]['seconds'] / runs[b]['seconds']:.2f}"
            return "-"

        lines.append(
            f"| {int(n):,} | " + " | ".join(cells)
            + f" | {ratio('pipeline', 'plain')} | {ratio('pipeline', 'bare')} | {ratio('trainer', 'plain')} |"
        )
    lines += [
        "",
        "Each cell: work wall time (after imports; the median where a phase was repeated), peak resident "
        "memory of the process tree (the largest over repeats).",
        "Process wall times with Python start and imports: "
        + "; ".join(
            f"{int(n):,} images: " + ", ".join(
                f"{p} {r['process_seconds']:.0f} s" for p, r in runs.items()
            )
            for n, runs in sorted(report["runs"].items(), key=lambda kv: int(kv[0]))
        )
        + ".",
    ]
    for n, runs in sorted(report["runs"].items(), key=lambda kv: int(kv[0])):
        c, d = runs.get("pipeline", {}).get("samples"), runs.get("bare", {}).get("samples")
        if c and d and (len(c) > 1 or len(d) > 1):
            pairs = [x / y for x, y in zip(c, d, strict=False)]  # a partial run may lack the last (d)
            lines.append(
                f"{int(n):,} images, repeated in alternation: (c) " + ", ".join(f"{x:.1f}" for x in c)
                + " s; (d) " + ", ".join(f"{x:.1f}" for x in d)
                + " s; c / d of each back-to-back pair " + ", ".join(f"{x:.2f}" for x in pairs) + "."
            )
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
    result["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in samples)
    return result


def parent(args: argparse.Namespace) -> int:
    """Generates data, runs every phase for every image count, writes and prints the report."""
    sys.path.insert(0, REPO_ROOT)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from pipeline import synthetic_data

    os.makedirs(args.out, exist_ok=True)
    report_path = os.path.join(args.out, "bench_trainer.json")
    settings = f"{args.epochs} epochs, {args.image_size} px, batch {args.batch_size}, {args.backbone}"
    report: dict[str, Any] = {"settings": settings, "runs": {}}
    if os.path.exists(report_path):  # keep other image counts measured earlier with the same settings
        with open(report_path) as f:
            previous = json.load(f)
        if previous.get("settings") == settings:
            report = previous
    report.update(command=" ".join([os.path.relpath(sys.executable, REPO_ROOT), *sys.argv]), machine=machine())
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
                  "--backbone", args.backbone]
        samples: dict[str, list[dict[str, Any]]] = {}
        for phase in schedule(args.phases, args.repeats):
            print(f"[{n} images] {LABELS[phase]} ...", flush=True)
            result = run_phase(
                phase, common, os.path.join(run_dir, f"{phase}.log"), os.path.join(run_dir, f"{phase}.json")
            )
            samples.setdefault(phase, []).append(result)
            runs[phase] = summarize(samples[phase])
            print(f"[{n} images] {LABELS[phase]}: {result['seconds']:.1f} s of work, "
                  f"{result['process_seconds']:.1f} s in all, peak {_gb(result['peak_rss_bytes'])}, "
                  f"load {result['load_before']} -> {result['load_after']}", flush=True)
            with open(report_path, "w") as f:
                json.dump(report, f, indent=1)
    table = markdown(report)
    with open(os.path.join(args.out, "bench_trainer.md"), "w") as f:
        f.write(table)
    print(table)
    return 0


# ------------------------------------------------------------------------------------------------------
# Children: one measurement each
# ------------------------------------------------------------------------------------------------------


def _pipeline_outputs(pipeline_root: str) -> tuple[str, str]:
    """(glob of ExampleGen's training examples, Transform's graph folder) of the latest pipeline run."""
    graphs = sorted(glob.glob(os.path.join(pipeline_root, "Transform", "transform_graph", "*")), key=os.path.getmtime)
    examples = sorted(
        glob.glob(os.path.join(pipeline_root, "ImageExampleGen", "examples", "*")), key=os.path.getmtime
    )
    if not graphs or not examples:
        raise FileNotFoundError(f"no pipeline output under {pipeline_root}: run the pipeline phase first")
    return os.path.join(examples[-1], "Split-train", "*"), graphs[-1]


def _training_files(pipeline_root: str, data_dir: str) -> tuple[list[str], Any]:
    """The image paths and label vectors of the pipeline's training split (what (b) trains on)."""
    import numpy as np
    import tensorflow as tf

    from pipeline import labels

    pattern, _ = _pipeline_outputs(pipeline_root)
    spec = {
        key: tf.io.FixedLenFeature([], tf.string if key == labels.FILENAME_KEY else tf.int64)
        for key in (labels.FILENAME_KEY, labels.AGE_KEY, labels.GENDER_KEY, labels.RACE_KEY)
    }
    paths, ys = [], []
    for batch in (
        tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern)), compression_type="GZIP")
        .batch(1024)
        .map(lambda x: tf.io.parse_example(x, spec))
    ):
        paths += [os.path.join(data_dir, n.decode()) for n in batch[labels.FILENAME_KEY].numpy()]
        ys += [
            labels.label_vector(int(a), int(g), int(r))
            for a, g, r in zip(
                batch[labels.AGE_KEY].numpy(), batch[labels.GENDER_KEY].numpy(), batch[labels.RACE_KEY].numpy(),
                strict=True,
            )
        ]
    return paths, np.array(ys, dtype=np.float32)


def _load_image(image_size: int):
    import tensorflow as tf

    def load(path: Any) -> Any:
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size])

    return load


def _frozen_parts(args: argparse.Namespace) -> tuple[Any, Any]:
    from components.trainer import backbones, model, train

    train.skip_autograph_for_tf_keras()  # the same first-fit speed-up our Trainer gets
    backbone = model.freeze(backbones.build_backbone(args.backbone, args.image_size))
    return backbone, model.build_feature_extractor(backbone)


def phase_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """(c) The whole pipeline with LocalDagRunner on a fresh pipeline root."""
    from pipeline.config import PipelineConfig
    from pipeline.local_run import run_local

    root = os.path.join(args.run_dir, "pipeline")
    shutil.rmtree(root, ignore_errors=True)
    config = PipelineConfig(
        data_dir=args.data_dir,
        pipeline_root=os.path.join(root, "pipeline_root"),
        serving_dir=os.path.join(root, "serving"),
        metadata_path=os.path.join(root, "pipeline_root", "metadata.sqlite"),
        pipeline_name="facepipe-bench",
        backbone=args.backbone,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
    )
    progress = io.StringIO()
    start = time.monotonic()
    summary = run_local(config, out=progress)
    seconds = time.monotonic() - start
    if summary.get("error"):
        raise RuntimeError(f"pipeline failed: {summary['error']}")
    components = {
        m.group(1): float(m.group(2)) for m in re.finditer(r"\[done \]\s+(\S+)\s+([\d.]+) s", progress.getvalue())
    }
    return {
        "seconds": seconds,
        "components": components,
        "ingested": summary.get("ingested"),
        "macro_auc": summary.get("macro_auc"),
        "blessed": summary.get("blessed"),
        "pipeline_root": config.pipeline_root,
    }


def phase_trainer(args: argparse.Namespace) -> dict[str, Any]:
    """(b) Our Trainer alone, on the pipeline phase's examples and Transform graph (as run_fn calls it)."""
    import dataclasses

    import tensorflow_transform as tft

    from components.trainer import run

    pattern, graph = _pipeline_outputs(os.path.join(args.run_dir, "pipeline", "pipeline_root"))
    out = os.path.join(args.run_dir, "trainer")
    shutil.rmtree(out, ignore_errors=True)
    config = run.TrainerConfig(
        backbone=args.backbone, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size
    )
    start = time.monotonic()
    raw_spec = tft.TFTransformOutput(graph).raw_feature_spec()
    result = run.train_and_export(
        config, pattern, raw_spec, os.path.join(out, "serving"), os.path.join(out, "run"), transform_output=graph
    )
    return {"seconds": time.monotonic() - start, "result": dataclasses.asdict(result)}


def phase_plain(args: argparse.Namespace) -> dict[str, Any]:
    """(a) The plain loop: tf.data from files -> frozen backbone + head -> model.fit, every epoch."""
    import tensorflow as tf
    import tf_keras

    from components.trainer import data, model
    from pipeline import labels

    paths, y = _training_files(os.path.join(args.run_dir, "pipeline", "pipeline_root"), args.data_dir)
    start = time.monotonic()
    _, extractor = _frozen_parts(args)
    tf_keras.utils.set_random_seed(0)
    full = model.build_model(extractor, model.build_head(extractor.output_shape[-1], len(labels.LABEL_NAMES)))
    full.compile(
        optimizer=tf_keras.optimizers.Adam(1e-3),
        loss=tf_keras.losses.BinaryCrossentropy(),
        metrics=[tf_keras.metrics.AUC(multi_label=True, num_labels=len(labels.LABEL_NAMES))],
    )
    load = _load_image(args.image_size)
    # The same tf.data options as our Trainer (data.without_autotune): with TF's autotuning on,
    # ending an epoch's iterator sometimes waits ~25 s with idle CPUs, which would slow this loop
    # for reasons that are not the backbone.
    dataset = data.without_autotune(
        tf.data.Dataset.from_tensor_slices((paths, y))
        .shuffle(len(paths), seed=0, reshuffle_each_iteration=True)
        .map(lambda p, label: (load(p), label), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(args.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    history = full.fit(dataset, epochs=args.epochs, verbose=0)
    return {"seconds": time.monotonic() - start, "images": len(paths), "final_loss": history.history["loss"][-1]}


def phase_bare(args: argparse.Namespace) -> dict[str, Any]:
    """(d) One pass of every image file through decode + the frozen backbone, outputs discarded.

    Decoding is the Trainer's own (components.trainer.data.decode_images, whole batches per
    tf.data element, prefetched): measured faster on 2 cores than decoding image by image, so
    the floor is not made slow on purpose.
    """
    import tensorflow as tf

    from components.trainer import data

    paths = sorted(
        os.path.join(args.data_dir, n) for n in os.listdir(args.data_dir) if n.lower().endswith((".jpg", ".jpeg"))
    )
    start = time.monotonic()
    _, extractor = _frozen_parts(args)

    @tf.function(reduce_retracing=True)
    def forward(images: Any) -> Any:
        return tf.reduce_sum(extractor(images, training=False))

    dataset = data.without_autotune(  # as the Trainer's embedding pass
        tf.data.Dataset.from_tensor_slices(paths)
        .map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(args.batch_size)
        .map(lambda b: data.decode_images(b, args.image_size), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(2)
    )
    for images in dataset:
        forward(images).numpy()
    return {"seconds": time.monotonic() - start, "images": len(paths)}


def child(args: argparse.Namespace) -> int:
    """Runs one phase and writes its measurements to --result."""
    sys.path.insert(0, REPO_ROOT)
    result = {"pipeline": phase_pipeline, "trainer": phase_trainer, "plain": phase_plain, "bare": phase_bare}[
        args.phase
    ](args)
    result["seconds"] = round(result["seconds"], 2)
    with open(args.result, "w") as f:
        json.dump(result, f, indent=1)
    return 0


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
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    parsed = parse_args()
    sys.exit(child(parsed) if parsed.phase else parent(parsed))
