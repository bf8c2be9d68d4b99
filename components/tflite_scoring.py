"""Scores model.tflite on the eval split with a pass of our own (TFMA 0.47 cannot).

TFMA 0.47 cannot evaluate a TFLite model beside a SavedModel: mixing the two model types raises
NotImplementedError, the Evaluator takes at most a candidate and a baseline, and TFLite inputs it
cannot match are filled with -1 without a word. So this pass reads the same examples the
Evaluator reads (ExampleGen's eval split), gets the labels from the same Transform graph (as the
Trainer's embedding pass does: one traced function per batch on this thread), decodes each image
exactly as components.trainer.data does (data.decode_pixels; the model resizes inside with
data.resize_pixels), and computes per-label ROC AUC with the project's exact Mann-Whitney AUC
(components.trainer.metrics.roc_auc) and their macro average.

The Evaluator's AUC is TFMA's, from 1,000 thresholds; the exact AUC here differs from it by
the bucketing alone (measured below 1e-3 macro AUC on the bundled data: docs/performance.md),
a tenth of the gate's tolerance.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import numpy as np
import tensorflow as tf

from components import cpus
from components.base import labels
from components.trainer import data, tflite_export
from components.trainer.metrics import roc_auc

logger = logging.getLogger(__name__)

RESULT_FILE = "tflite_evaluation.json"
AUC_METHOD = "exact ROC AUC (Mann-Whitney, ties count half), components.trainer.metrics.roc_auc"


def _eval_labels(file_pattern: str, transform_output: str, batch_size: int) -> tuple[np.ndarray, list[str]]:
    """(labels [N, L], file names) of the examples, in file order, through the Transform graph."""
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(transform_output)
    dataset = data.read_examples(file_pattern, output.raw_feature_spec(), batch_size)
    transform = tf.function(output.transform_raw_features, input_signature=[dataset.element_spec])
    label_chunks, names = [], []
    for batch in data.without_autotune(dataset):
        features = transform(batch)
        label_chunks.append(features[labels.LABELS_KEY].numpy())
        names += [n.decode() for n in tf.reshape(features[labels.FILENAME_KEY], [-1]).numpy()]
    if not label_chunks:
        raise ValueError(f"no examples in {file_pattern}")
    return np.concatenate(label_chunks).astype(np.float32), names


def _decoded_images(file_pattern: str, batch_size: int) -> tf.data.Dataset:
    """(uint8 pixels [H, W, 3], file name) per example, in file order, decoded in parallel."""
    spec = {
        labels.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        labels.FILENAME_KEY: tf.io.FixedLenFeature([], tf.string),
    }
    return data.without_autotune(
        data.read_examples(file_pattern, spec, batch_size)
        .unbatch()
        .map(
            lambda e: (data.decode_pixels(e[labels.IMAGE_KEY]), e[labels.FILENAME_KEY]),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .prefetch(2 * batch_size)
    )


def score(
    tflite_path: str,
    file_pattern: str,
    transform_output: str,
    batch_size: int = 32,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Runs model.tflite over every example and computes its per-label and macro AUC.

    Args:
      tflite_path: the model.tflite (export_tflite's, with its label names in it).
      file_pattern: glob of the eval split's raw examples.
      transform_output: the Transform graph folder (labels).
      batch_size: images per interpreter call (consecutive images of one size).
      num_threads: interpreter threads (default: the CPUs this process may use).

    Returns:
      A JSON-able record: macro_auc, per_label_auc, examples, quantization, label_names,
      labels_not_scored (no positives or no negatives), threads, seconds, auc_method.

    Raises:
      ValueError: no examples; the model's labels differ from the pipeline's; the two passes
        over the examples disagree on their order.
    """
    start = time.monotonic()
    with tf.io.gfile.GFile(tflite_path, "rb") as f:
        content = f.read()
    threads = num_threads or cpus.available_cpus()
    predictor = tflite_export.TFLitePredictor(content, threads)
    if predictor.label_names != list(labels.LABEL_NAMES):
        raise ValueError(
            f"model.tflite's labels {predictor.label_names} differ from the pipeline's {list(labels.LABEL_NAMES)}"
        )
    label_matrix, names = _eval_labels(file_pattern, transform_output, batch_size)
    scores = np.zeros_like(label_matrix)
    group: list[np.ndarray] = []
    row = 0

    def flush() -> None:
        nonlocal row, group
        if group:
            scores[row : row + len(group)] = predictor.predict_batch(np.stack(group))
            row += len(group)
            group = []

    for i, (pixels, name) in enumerate(_decoded_images(file_pattern, batch_size)):
        if i >= len(names) or name.numpy().decode() != names[i]:
            raise ValueError("the image pass and the label pass read the examples in different orders")
        image = pixels.numpy()
        if group and (image.shape != group[0].shape or len(group) == batch_size):
            flush()
        group.append(image)
    flush()
    if row != len(names):
        raise ValueError(f"scored {row} images for {len(names)} labelled examples")
    per_label: dict[str, float | None] = {}
    for i, name in enumerate(labels.LABEL_NAMES):
        auc = roc_auc(label_matrix[:, i], scores[:, i])
        per_label[name] = None if math.isnan(auc) else auc
    scored = [v for v in per_label.values() if v is not None]
    record = {
        "model": os.path.basename(tflite_path),
        "quantization": predictor.metadata.get("quantization"),
        "label_names": list(labels.LABEL_NAMES),
        "examples": len(names),
        "macro_auc": float(np.mean(scored)) if scored else None,
        "per_label_auc": per_label,
        "labels_not_scored": [n for n, v in per_label.items() if v is None],
        "threads": threads,
        "seconds": round(time.monotonic() - start, 2),
        "auc_method": AUC_METHOD,
    }
    logger.info("model.tflite (%s) on %d eval examples: macro AUC %s in %.1f s",
                record["quantization"], record["examples"], record["macro_auc"], record["seconds"])
    return record


def write_record(record: dict[str, Any], out_dir: str) -> str:
    """Writes the record as <out_dir>/tflite_evaluation.json."""
    tf.io.gfile.makedirs(out_dir)
    path = os.path.join(out_dir, RESULT_FILE)
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    return path


def read_record(evaluation_uri: str) -> dict[str, Any] | None:
    """The record a TFLiteEvaluator wrote, or None when there is none."""
    path = os.path.join(evaluation_uri, RESULT_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)
