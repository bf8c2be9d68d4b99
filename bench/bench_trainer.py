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
PHASES = ("pipeline", "bare", "bare_tflite", "trainer", "plain")
REPEATED = ("pipeline", "bare", "bare_tflite")  # the sides of the tight c/e and c/d targets
LABELS = {"plain": "(a) plain loop", "trainer": "(b) Trainer alone", "pipeline": "(c) whole pipeline",
          "bare": "(d) bare backbone pass", "bare_tflite": "(e) bare TFLite backbone pass",
          "convert": "TFLite conversion (untimed warm-up)"}
TARGETS = {"c/e": 2.0, "c/a": 0.18}  # at 24,000 images (issue 15)
DATA_SEED = 2024
SAMPLE_INTERVAL_S = 0.2


# ------------------------------------------------------------------------------------------------------
# Parent: data, subprocesses, memory sampling, report
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
                peak = max(peak, tree_rss(proc))
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
        "available_cpus": _available_cpus(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def _available_cpus() -> int:
    sys.path.insert(0, REPO_ROOT)
    from components import cpus

    return cpus.available_cpus()


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


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
            cells.append(f"{r['seconds']:.0f} s, {_gb(r['peak_rss_bytes'])}" if r else "not run")

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

    from components.base import labels

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
    from components.trainer.config import TrainerConfig
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
        trainer=TrainerConfig(
            backbone=args.backbone, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
            embedding_engine=args.embedding_engine, tflite_cache_dir=args.tflite_cache_dir or "",
        ),
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
    trainer_lines = []
    for log in glob.glob(os.path.join(config.pipeline_root, "logs", "*.log")):
        with open(log, errors="replace") as f:
            trainer_lines += [line.strip() for line in f if re.search(
                r"embedding engine:|embedding check|embedded \d+ training images|trainer result", line)]
    return {
        "seconds": seconds,
        "components": components,
        "trainer_log": trainer_lines,
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
    from components.trainer.config import TrainerConfig

    pattern, graph = _pipeline_outputs(os.path.join(args.run_dir, "pipeline", "pipeline_root"))
    out = os.path.join(args.run_dir, "trainer")
    shutil.rmtree(out, ignore_errors=True)
    config = TrainerConfig(
        backbone=args.backbone, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
        embedding_engine=args.embedding_engine, tflite_cache_dir=args.tflite_cache_dir,
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

    from components.base import labels
    from components.trainer import data, model

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

    paths = _image_paths(args.data_dir)
    start = time.monotonic()
    _, extractor = _frozen_parts(args)

    @tf.function(reduce_retracing=True)
    def forward(images: Any) -> Any:
        return tf.reduce_sum(extractor(images, training=False))

    for images in decoded_batches(paths, args):
        forward(images).numpy()
    return {"seconds": time.monotonic() - start, "images": len(paths)}


def _image_paths(data_dir: str) -> list[str]:
    return sorted(os.path.join(data_dir, n) for n in os.listdir(data_dir) if n.lower().endswith((".jpg", ".jpeg")))


def decoded_batches(paths: list[str], args: argparse.Namespace) -> Any:
    """Decoded image batches as the Trainer's embedding pass makes them (parallel, prefetched)."""
    import tensorflow as tf

    from components.trainer import data

    return data.without_autotune(
        tf.data.Dataset.from_tensor_slices(paths)
        .map(tf.io.read_file, num_parallel_calls=tf.data.AUTOTUNE)
        .batch(args.batch_size)
        .map(lambda b: data.decode_images(b, args.image_size), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(2)
    )


def phase_convert(args: argparse.Namespace) -> dict[str, Any]:
    """Untimed warm-up: fills the TFLite cache (clearing this backbone's entry first) and times the conversion."""
    from components.trainer import tflite_engine

    _, extractor = _frozen_parts(args)
    key = tflite_engine.cache_key(args.backbone, args.image_size, extractor)
    path = tflite_engine.cached_path(args.tflite_cache_dir, key)
    if os.path.exists(path):
        os.remove(path)  # a cold conversion every bench run: the number reported is a real conversion
    converted = tflite_engine.load_or_convert(extractor, args.backbone, args.image_size, args.tflite_cache_dir, key=key)
    return {"seconds": converted.seconds, "convert_seconds": round(converted.seconds, 2),
            "cache_hit": converted.cache_hit}


def phase_bare_tflite(args: argparse.Namespace) -> dict[str, Any]:
    """(e) The bare pass of (d) with the backbone on TFLite (the cache filled by the warm-up).

    Timed like (d): from building the backbone (the cache key is a digest of its weights) through
    reading the converted model and the pass. Images are decoded in tf.data exactly as in (d); the
    interpreter runs on this thread while tf.data decodes the next batches. The thread count is
    chosen as the Trainer's engine chooses it in auto (tflite_engine.CheckedEmbedder): every CPU
    this process may use and one thread each embed the second batch, and the faster embeds the
    rest (TF is not a candidate here: this is the TFLite floor).
    """
    from components import cpus
    from components.trainer import tflite_engine

    paths = _image_paths(args.data_dir)
    start = time.monotonic()
    _, extractor = _frozen_parts(args)
    converted = tflite_engine.load_or_convert(extractor, args.backbone, args.image_size, args.tflite_cache_dir)
    lites = {t: tflite_engine.TFLiteEmbedder(converted.model, t) for t in sorted({cpus.available_cpus(), 1})}
    chosen, probe = max(lites), {}
    total = 0.0
    for i, images in enumerate(decoded_batches(paths, args)):
        pixels = images.numpy()
        if i == 0:
            for threads, lite in lites.items():
                if threads != chosen:
                    lite(pixels)  # the first invoke plans memory; the chosen one's is below
        elif i == 1 and len(lites) > 1:
            for threads, lite in lites.items():
                begin = time.perf_counter()
                lite(pixels)
                probe[threads] = round((time.perf_counter() - begin) * 1000 / len(pixels), 3)
            chosen = min(probe, key=probe.get)
            lites = {chosen: lites[chosen]}
        total += float(lites[chosen](pixels).sum())
    return {"seconds": time.monotonic() - start, "images": len(paths), "cache_hit": converted.cache_hit,
            "threads": chosen, "probe_ms_per_image": probe}


def child(args: argparse.Namespace) -> int:
    """Runs one phase and writes its measurements to --result."""
    sys.path.insert(0, REPO_ROOT)
    result = {"pipeline": phase_pipeline, "trainer": phase_trainer, "plain": phase_plain, "bare": phase_bare,
              "bare_tflite": phase_bare_tflite, "convert": phase_convert}[args.phase](args)
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
