"""Batch prediction: the latest pushed model over a folder of images, written as CSV.

Each file is checked on its own, so a broken or non-image file becomes a row with an ``error``
and never stops the batch. Files are listed, read and prepared exactly as ingestion does
(components.image_example_gen.ingest.find_files, components.images.read_file and
normalize_image): the same format allow-list and size limits, no read that can block (a FIFO or a
device, also behind a link, is an error row), EXIF rotation, white behind transparency, 16-bit
grey scaled. So the model sees the pixels it was trained on.

The CSV has one row per file: ``file`` (relative to the folder; undecodable bytes of a name shown
as ``\\xNN``), one probability column per label name, ``predicted_labels`` (names at or above each
label's threshold, ``;``-separated) and ``error``. It is written to a temporary file next to the
output and renamed when complete, so a failed run never leaves a truncated CSV.

Spreadsheet formula injection: a ``file`` or ``error`` cell that would begin with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return gets a leading ``'`` (OWASP's CSV injection guidance),
so a spreadsheet shows it as text instead of evaluating it; strip that one character to get the
name back.

Thresholds: 0.5 for every label unless the model stores its own (``thresholds`` in
``assets.extra/labels.json``) or ``--threshold LABEL=VALUE`` overrides one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from components import images, serving_folder
from components.image_example_gen import ingest
from components.images import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_IMAGE_PIXELS

IMAGES_SIGNATURE = "predict_images"
FILE_COLUMN, PREDICTED_COLUMN, ERROR_COLUMN = "file", "predicted_labels", "error"
DEFAULT_THRESHOLD = 0.5
LABELS_FILE = os.path.join("assets.extra", "labels.json")
_MAX_METADATA_BYTES = 1 << 20
# First characters that make a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def latest_model_dir(serving_dir: str, pipeline_name: str) -> str:
    """The model TF Serving serves: ``<serving_dir>/<pipeline_name>/<highest numeric version>/``.

    Args:
      serving_dir: Pusher's base folder.
      pipeline_name: the pipeline's name.

    Returns:
      The version folder (holding saved_model.pb), by its real name (``0099`` stays ``0099``).

    Raises:
      FileNotFoundError: no pushed model there.
    """
    base = os.path.join(serving_dir, pipeline_name)
    found = serving_folder.served_model_dir(base)
    if found is None:
        raise FileNotFoundError(f"no pushed model in {base} (run the pipeline until a model is blessed and pushed)")
    return found


def image_bytes(
    path: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, max_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> bytes:
    """Reads one file and returns what the model reads, exactly as ingestion prepares it.

    Args:
      path: the file.
      max_pixels: larger images are refused before decoding (memory).
      max_bytes: larger files are refused unread.

    Returns:
      The file's bytes if it is an RGB JPEG or PNG that TensorFlow decodes, else the image
      (upright, on white) re-encoded as JPEG.

    Raises:
      components.images.Rejected (a ValueError): the file is not a regular file, empty, too
        large, not an image, of a format not accepted, truncated or corrupt (the message says which).
    """
    return images.normalize_image(images.read_file(path, max_bytes), max_pixels)


def csv_safe(text: str) -> str:
    """Returns a cell a spreadsheet shows as text: ``'`` before a leading = + - @ tab or CR."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def model_metadata(model_dir: str) -> dict[str, Any]:
    """label_names (and, if stored, image_size and thresholds) from the model's assets.extra/labels.json.

    Raises:
      FileNotFoundError: the model has no labels.json.
      ValueError: labels.json is not a regular file, too large, or not JSON.
    """
    path = os.path.join(model_dir, LABELS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: the model does not say which label each output is")
    try:
        # Read as image files are: never blocking (a FIFO planted there), never unbounded.
        text = images.read_file(path, _MAX_METADATA_BYTES).decode("utf-8")
        return json.loads(text)
    except (images.Rejected, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not the model's label list: {e}") from None


def resolve_thresholds(
    label_names: Sequence[str],
    stored: Mapping[str, float] | None = None,
    overrides: Mapping[str, float] | None = None,
    default: float = DEFAULT_THRESHOLD,
) -> dict[str, float]:
    """Per-label decision thresholds: overrides, else the model's stored ones, else the default.

    Raises:
      ValueError: an override names an unknown label or a threshold is outside 0-1.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(label_names))
    if unknown:
        raise ValueError(f"threshold for unknown label(s) {', '.join(unknown)}; labels are {', '.join(label_names)}")
    result = {name: float(overrides.get(name, (stored or {}).get(name, default))) for name in label_names}
    for name, value in result.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"threshold of {name} must be within 0-1, got {value}")
    return result


@dataclasses.dataclass
class PredictionSummary:
    """What a batch prediction did."""

    model_dir: str
    output: str
    files: int
    predicted: int
    errors: int


def predict_items(
    predict: Any, items: Sequence[tuple[str, bytes]], label_names: Sequence[str], batch_size: int = 32
) -> dict[str, list[float] | str]:
    """Runs the model's predict_images signature over encoded images, batch by batch.

    A batch the model cannot decode is retried one image at a time, so one image that PIL
    accepted but TensorFlow's decoder does not costs only its own row.

    Args:
      predict: the loaded ``predict_images`` signature.
      items: (name, encoded image) pairs.
      label_names: the model's labels, in output order.
      batch_size: images per call.

    Returns:
      name -> probabilities (in label order), or an error message.
    """
    import tensorflow as tf

    def run(batch: Sequence[tuple[str, bytes]]) -> dict[str, list[float] | str]:
        outputs = predict(image_bytes=tf.constant([data for _, data in batch]))
        columns = [outputs[label].numpy() for label in label_names]
        return {name: [float(c[i]) for c in columns] for i, (name, _) in enumerate(batch)}

    results: dict[str, list[float] | str] = {}
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        try:
            results.update(run(batch))
        except tf.errors.InvalidArgumentError:
            for item in batch:
                try:
                    results.update(run([item]))
                except tf.errors.InvalidArgumentError as e:
                    results[item[0]] = f"the model could not decode the image: {e.message.splitlines()[0]}"
    return results


def predict_folder(
    model_dir: str,
    folder: str,
    output: str,
    threshold_overrides: Mapping[str, float] | None = None,
    default_threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 32,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    tflite: bool = False,
) -> PredictionSummary:
    """Predicts every file of a folder and writes the CSV (see the module docstring).

    Args:
      model_dir: a pushed SavedModel with the ``predict_images`` signature.
      folder: the images (searched recursively; links are followed only to regular files inside it).
      output: the CSV file to write (replaced only once the new one is complete).
      threshold_overrides: label -> threshold, over the model's stored thresholds.
      default_threshold: for labels with neither.
      batch_size: images per model call.
      max_pixels: images larger than this are error rows, undecoded.
      max_file_bytes: files larger than this are error rows, unread.
      tflite: run the version's on-device model.tflite instead of the SavedModel
        (components.tflite_predict).

    Returns:
      The counts.

    Raises:
      FileNotFoundError: the folder or the model's label list is missing (or model.tflite, with tflite).
      ValueError: a bad threshold, or a model.tflite whose labels differ from labels.json's.
    """
    import tensorflow as tf

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {folder} does not exist")
    meta = model_metadata(model_dir)
    label_names = list(meta["label_names"])
    thresholds = resolve_thresholds(label_names, meta.get("thresholds"), threshold_overrides, default_threshold)
    if tflite:
        from components.tflite_predict import TFLiteImages  # tf_keras and the TFLite engine: only --tflite

        predict = TFLiteImages(model_dir)
        if predict.label_names != label_names:
            raise ValueError(f"model.tflite's labels {predict.label_names} differ from labels.json's {label_names}")
    else:
        predict = tf.saved_model.load(model_dir).signatures[IMAGES_SIGNATURE]
    found = ingest.find_files(folder)
    errors = 0
    out_dir = os.path.dirname(os.path.abspath(output))
    os.makedirs(out_dir, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".predictions-", suffix=".csv.tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow([FILE_COLUMN, *label_names, PREDICTED_COLUMN, ERROR_COLUMN])
            # Chunk by chunk, so that memory holds one batch of images whatever the folder's size.
            for start in range(0, len(found), batch_size):
                chunk = found[start : start + batch_size]
                # Keyed by position: two entries can show the same name (NFC, \xNN escapes).
                results: dict[str, list[float] | str] = {}
                good: list[tuple[str, bytes]] = []
                for i, entry in enumerate(chunk):
                    if entry.issue is not None:
                        results[str(i)] = entry.issue.message
                        continue
                    try:
                        good.append((str(i), image_bytes(entry.path, max_pixels, max_file_bytes)))
                    except images.Rejected as e:
                        results[str(i)] = f"the file {e.detail}"
                results.update(predict_items(predict, good, label_names, batch_size))
                for i, entry in enumerate(chunk):
                    name, result = entry.relative, results[str(i)]
                    if isinstance(result, str):
                        errors += 1
                        writer.writerow([csv_safe(name), *([""] * (len(label_names) + 1)), csv_safe(result)])
                        continue
                    predicted = [label for label, p in zip(label_names, result, strict=True) if p >= thresholds[label]]
                    writer.writerow([csv_safe(name), *(f"{p:.6f}" for p in result), ";".join(predicted), ""])
        os.replace(temporary, output)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return PredictionSummary(model_dir, output, len(found), len(found) - errors, errors)
