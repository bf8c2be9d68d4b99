"""bench_trainer's child processes: one measurement each, run as ``bench_trainer.py --phase NAME``.

bench_trainer.py (the parent) runs each phase in a fresh process and samples its memory; the
module docstring there describes the measurements (a) to (e). Each phase function gets the
parsed command line and returns its measurements, ``seconds`` being the work itself (after
imports); PHASE_FUNCTIONS maps the --phase names to them.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import re
import shutil
import time
from collections.abc import Callable
from typing import Any

import harness  # the sibling module (this folder is on sys.path)
from harness import decoded_batches


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


def _load_image(image_size: int) -> Callable[[Any], Any]:
    """A tf.data map function: image file path -> float32 image of image_size x image_size."""
    import tensorflow as tf

    def load(path: Any) -> Any:
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size])

    return load


def _frozen_parts(args: argparse.Namespace) -> tuple[Any, Any]:
    """(frozen backbone, feature extractor) as our Trainer builds them."""
    from components.trainer import backbones, model, train

    train.skip_autograph_for_tf_keras()  # the same first-fit speed-up our Trainer gets
    backbone = model.freeze(backbones.build_backbone(args.backbone, args.image_size))
    return backbone, model.build_feature_extractor(backbone)


def phase_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    """(c) The whole pipeline with LocalDagRunner on a fresh pipeline root."""
    from components.trainer.config import TrainerConfig

    root = os.path.join(args.run_dir, "pipeline")
    shutil.rmtree(root, ignore_errors=True)
    trainer = TrainerConfig(
        backbone=args.backbone, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
        embedding_engine=args.embedding_engine, tflite_cache_dir=args.tflite_cache_dir or "",
    )
    progress = io.StringIO()
    config, summary, seconds = harness.run_pipeline(args.data_dir, root, "facepipe-bench", trainer, progress)
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
    """Every JPEG directly in data_dir, sorted."""
    return sorted(os.path.join(data_dir, n) for n in os.listdir(data_dir) if n.lower().endswith((".jpg", ".jpeg")))


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


PHASE_FUNCTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "pipeline": phase_pipeline, "trainer": phase_trainer, "plain": phase_plain, "bare": phase_bare,
    "bare_tflite": phase_bare_tflite, "convert": phase_convert,
}
