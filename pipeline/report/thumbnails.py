"""The faces behind the numbers: each label's most confident errors on the eval split, as thumbnails.

For every label, the false positives with the highest scores and the false negatives with the
lowest, at the label's decision threshold (the model's tuned one), from the Evaluator's
per-example rows (components.eval_table). Their images are read once from ExampleGen's eval
split (by file name) and shrunk to small JPEG thumbnails embedded as ``data:`` URIs, so the
report stays one self-contained file.
"""

from __future__ import annotations

import base64
import io
import posixpath
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from components.base import labels
from components.eval_table import CANDIDATE, EvalTable

PER_KIND = 6  # false positives and false negatives shown per label
THUMBNAIL_PX = 64  # longest side
JPEG_QUALITY = 80


def most_confident_errors(
    table: EvalTable, thresholds: Mapping[str, float], per_kind: int = PER_KIND
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Each label's most confident false positives and false negatives.

    A false positive scores at or above the label's threshold without the label (most confident:
    highest score); a false negative scores below it with the label (lowest score). Ties go by id.

    Args:
      table: the per-example rows (the candidate's predictions are used).
      thresholds: label -> decision threshold.
      per_kind: how many of each.

    Returns:
      label -> {"threshold": t, "false_positives": [...], "false_negatives": [...], "counts": {...}},
      each example as {"id", "score", "labels": names of its true labels}.
    """
    scores = table.predictions[CANDIDATE]
    out: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(table.label_names):
        t = float(thresholds.get(name, 0.5))
        positive = table.labels[:, k] == 1
        predicted = scores[:, k] >= t
        fp = np.flatnonzero(~positive & predicted)
        fn = np.flatnonzero(positive & ~predicted)
        # lexsort: last key first; ids break ties so the choice is deterministic.
        fp = fp[np.lexsort((table.ids[fp].astype(str), -scores[fp, k]))][:per_kind]
        fn = fn[np.lexsort((table.ids[fn].astype(str), scores[fn, k]))][:per_kind]

        def describe(rows: np.ndarray, label_index: int = k) -> list[dict[str, Any]]:
            return [{"id": str(table.ids[i]), "score": float(scores[i, label_index]),
                     "labels": [n for j, n in enumerate(table.label_names) if table.labels[i, j] == 1]} for i in rows]

        out[name] = {
            "threshold": t,
            "false_positives": describe(fp),
            "false_negatives": describe(fn),
            "counts": {"false_positives": int(np.sum(~positive & predicted)),
                       "false_negatives": int(np.sum(positive & ~predicted)),
                       "positives": int(positive.sum()), "negatives": int((~positive).sum())},
        }
    return out


def read_images(examples_uri: str, split: str, ids: Collection[str]) -> dict[str, bytes]:
    """The image bytes of the given file names, read from one split of ExampleGen's examples.

    Args:
      examples_uri: the Examples artifact's URI.
      split: e.g. "eval".
      ids: file names (the ``filename`` feature).

    Returns:
      file name -> encoded image bytes (names not found are absent).
    """
    import tensorflow as tf

    wanted = set(ids)
    found: dict[str, bytes] = {}
    files = sorted(tf.io.gfile.glob(posixpath.join(examples_uri, f"Split-{split}", "*")))
    if not wanted or not files:
        return found
    compression = "GZIP" if all(f.endswith(".gz") for f in files) else ""
    for record in tf.data.TFRecordDataset(files, compression_type=compression).as_numpy_iterator():
        example = tf.train.Example.FromString(record)
        name = example.features.feature[labels.FILENAME_KEY].bytes_list.value[0].decode("utf-8", "replace")
        if name in wanted:
            found[name] = example.features.feature[labels.IMAGE_KEY].bytes_list.value[0]
            if len(found) == len(wanted):
                break
    return found


def thumbnail_data_uri(image: bytes, size: int = THUMBNAIL_PX) -> str | None:
    """A JPEG thumbnail (longest side ``size``) as a ``data:`` URI; None when the bytes do not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image)) as img:
            thumb = img.convert("RGB")
            thumb.thumbnail((size, size))
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def error_gallery(
    table: EvalTable,
    thresholds: Mapping[str, float],
    examples_uri: str | None,
    images: bool = True,
    split: str = "eval",
) -> dict[str, Any]:
    """The report's error section: most confident errors per label, with thumbnails unless images is False.

    Returns:
      {"images": bool, "per_label": most_confident_errors(...) with "thumbnail" (data URI or None) per example}.
    """
    per_label = most_confident_errors(table, thresholds)
    found: dict[str, bytes] = {}
    if images and examples_uri:
        ids = {e["id"] for entry in per_label.values() for kind in ("false_positives", "false_negatives")
               for e in entry[kind]}
        found = read_images(examples_uri, split, ids)
    cache: dict[str, str | None] = {}
    for entry in per_label.values():
        for kind in ("false_positives", "false_negatives"):
            for example in entry[kind]:
                if example["id"] not in cache:
                    data = found.get(example["id"])
                    cache[example["id"]] = thumbnail_data_uri(data) if data is not None else None
                example["thumbnail"] = cache[example["id"]] if images else None
    return {"images": bool(images), "per_label": per_label}
