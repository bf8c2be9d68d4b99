"""Batch prediction: the latest pushed model over a folder of images, written as CSV.

Each file is checked on its own (PIL decodes it fully first), so a broken or non-image file
becomes a row with an ``error`` and never stops the batch. The CSV has one row per file:
``file`` (relative to the folder), one probability column per label name, ``predicted_labels``
(names at or above each label's threshold, ``;``-separated) and ``error``.

Thresholds: 0.5 for every label unless the model stores its own (``thresholds`` in
``assets.extra/labels.json``) or ``--threshold LABEL=VALUE`` overrides one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, UnidentifiedImageError

from components import serving_folder
from components.image_example_gen.ingest import DEFAULT_MAX_IMAGE_PIXELS

IMAGES_SIGNATURE = "predict_images"
FILE_COLUMN, PREDICTED_COLUMN, ERROR_COLUMN = "file", "predicted_labels", "error"
DEFAULT_THRESHOLD = 0.5
LABELS_FILE = os.path.join("assets.extra", "labels.json")


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


def list_files(folder: str) -> list[str]:
    """Every file under a folder, recursively, sorted (paths relative to the folder)."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        found += [os.path.relpath(os.path.join(root, n), folder) for n in names]
    return sorted(found)


def image_bytes(path: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> bytes:
    """Reads one file and returns bytes the model can decode as RGB (JPEG or PNG).

    Args:
      path: the file.
      max_pixels: larger images are refused before decoding (memory).

    Returns:
      The file's bytes if it is an RGB JPEG or PNG, else the image re-encoded as JPEG.

    Raises:
      ValueError: the file is empty, not an image, truncated, or too large (the message says which).
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise ValueError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ValueError(f"image too large ({width}x{height} pixels, limit {max_pixels})")
            image.load()  # a full decode: catches truncated and corrupt files
            if image.format in ("JPEG", "PNG") and image.mode == "RGB":
                return data
            rgb = image.convert("RGB")
    except Image.DecompressionBombError as e:
        raise ValueError(f"image too large ({e})") from None
    except UnidentifiedImageError:
        raise ValueError("not an image (unknown format)") from None
    except (OSError, SyntaxError) as e:
        raise ValueError(f"not a decodable image ({e})") from None
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=95)
    return out.getvalue()


def model_metadata(model_dir: str) -> dict[str, Any]:
    """label_names (and, if stored, image_size and thresholds) from the model's assets.extra/labels.json.

    Raises:
      FileNotFoundError: the model has no labels.json.
    """
    path = os.path.join(model_dir, LABELS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: the model does not say which label each output is")
    with open(path) as f:
        return json.load(f)


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
    import tensorflow as tf  # noqa: PLC0415

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
    tflite: bool = False,
) -> PredictionSummary:
    """Predicts every file of a folder and writes the CSV.

    Args:
      model_dir: a pushed SavedModel with the ``predict_images`` signature.
      folder: the images (searched recursively).
      output: the CSV file to write.
      threshold_overrides: label -> threshold, over the model's stored thresholds.
      default_threshold: for labels with neither.
      batch_size: images per model call.
      tflite: run the version's on-device model.tflite instead of the SavedModel
        (components.tflite_predict).

    Returns:
      The counts.

    Raises:
      FileNotFoundError: the folder or the model's label list is missing (or model.tflite, with tflite).
      ValueError: a bad threshold, or a model.tflite whose labels differ from labels.json's.
    """
    import tensorflow as tf  # noqa: PLC0415

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {folder} does not exist")
    meta = model_metadata(model_dir)
    label_names = list(meta["label_names"])
    thresholds = resolve_thresholds(label_names, meta.get("thresholds"), threshold_overrides, default_threshold)
    if tflite:
        from components.tflite_predict import TFLiteImages  # noqa: PLC0415

        predict = TFLiteImages(model_dir)
        if predict.label_names != label_names:
            raise ValueError(f"model.tflite's labels {predict.label_names} differ from labels.json's {label_names}")
    else:
        predict = tf.saved_model.load(model_dir).signatures[IMAGES_SIGNATURE]
    files = list_files(folder)
    errors = 0
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([FILE_COLUMN, *label_names, PREDICTED_COLUMN, ERROR_COLUMN])
        # Chunk by chunk, so that memory holds one batch of images whatever the folder's size.
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            results: dict[str, list[float] | str] = {}
            good: list[tuple[str, bytes]] = []
            for name in chunk:
                try:
                    good.append((name, image_bytes(os.path.join(folder, name))))
                except (OSError, ValueError) as e:
                    results[name] = str(e)
            results.update(predict_items(predict, good, label_names, batch_size))
            for name in chunk:
                result = results[name]
                if isinstance(result, str):
                    errors += 1
                    writer.writerow([name, *([""] * (len(label_names) + 1)), result])
                    continue
                predicted = [label for label, p in zip(label_names, result, strict=True) if p >= thresholds[label]]
                writer.writerow([name, *(f"{p:.6f}" for p in result), ";".join(predicted), ""])
    return PredictionSummary(model_dir, output, len(files), len(files) - errors, errors)
