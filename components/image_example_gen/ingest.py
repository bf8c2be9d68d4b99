"""Pure helpers of the image ExampleGen: list files, check one file, build its tf.Example.

Every file found is either turned into a tf.Example or into a quarantine entry that
says why it was not ingested, so no input is silently lost.
"""

from __future__ import annotations

import dataclasses
import io
import json
import posixpath
import re

import tensorflow as tf
from PIL import Image

from pipeline import labels

# Decoding a huge image can exhaust memory; this bounds width * height.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
QUARANTINE_FILE = "quarantine.jsonl"


@dataclasses.dataclass(frozen=True)
class QuarantineEntry:
    """A file that was not ingested.

    Attributes:
      path: the file's path as found.
      reason: machine-readable reason, snake_case (e.g. ``name_mismatch``).
      message: a human sentence.
    """

    path: str
    reason: str
    message: str

    def to_json(self) -> str:
        """Returns the entry as one JSON line."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def list_files(root: str) -> list[str]:
    """Lists every file under a folder, recursively, sorted; local or gs:// alike.

    Args:
      root: a folder path understood by tf.io.gfile.

    Returns:
      Full paths of all files (not folders).
    """
    found: list[str] = []
    for dirpath, _, filenames in tf.io.gfile.walk(root):
        found.extend(posixpath.join(dirpath, name) if "://" in dirpath else f"{dirpath.rstrip('/')}/{name}"
                     for name in filenames)
    return sorted(found)


def _normalized_image_bytes(data: bytes, max_pixels: int) -> tuple[bytes | None, str]:
    """Decodes fully; returns JPEG/PNG bytes the model can read as 3-channel RGB."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            fmt = probe.format or "unknown"
            if width * height > max_pixels:
                return None, f"image_too_large:{width}x{height}"
            probe.load()  # full decode: catches truncated and corrupt files
            if fmt in ("JPEG", "PNG") and probe.mode == "RGB":
                return data, fmt
            rgb = probe.convert("RGB")
    except Image.DecompressionBombError as e:
        return None, f"image_too_large:{e}"
    except (OSError, SyntaxError, ValueError) as e:
        return None, f"undecodable:{e}"
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=95)
    return out.getvalue(), fmt


def check_file(
    path: str,
    relative_name: str,
    data: bytes,
    pattern: re.Pattern[str],
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> tf.train.Example | QuarantineEntry:
    """Turns one file into a tf.Example, or says why it cannot be ingested.

    Args:
      path: the file's full path (reported in quarantine entries).
      relative_name: the path relative to the data folder; stored as ``filename`` and
        used for the stable hash split.
      data: the file's bytes.
      pattern: compiled file-name pattern (pipeline.labels.compile_pattern).
      max_pixels: images with more pixels than this are refused undecoded.

    Returns:
      A tf.train.Example with image_raw, age, gender, race, filename; or a QuarantineEntry.
    """
    base = posixpath.basename(relative_name)
    if base.startswith("."):
        return QuarantineEntry(path, "hidden_file", f"{base!r} is a hidden file; hidden files are not ingested")
    try:
        parsed = labels.parse_filename(base, pattern)
    except labels.FilenameError as e:
        return QuarantineEntry(path, e.reason, e.message)
    if not data:
        return QuarantineEntry(path, "empty_file", f"{base!r} is empty (0 bytes)")
    image_bytes, detail = _normalized_image_bytes(data, max_pixels)
    if image_bytes is None:
        kind, _, why = detail.partition(":")
        if kind == "image_too_large":
            return QuarantineEntry(path, kind, f"{base!r} is too large to decode safely ({why}; limit {max_pixels} px)")
        return QuarantineEntry(path, "undecodable_image", f"{base!r} could not be decoded as an image: {why}")
    feature = {
        labels.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
        labels.AGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[parsed.age])),
        labels.GENDER_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[parsed.gender])),
        labels.RACE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[parsed.race])),
        labels.FILENAME_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[relative_name.encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def read_quarantine(examples_uri: str) -> list[dict[str, str]]:
    """Reads the quarantine entries an ExampleGen run wrote into its output artifact.

    Args:
      examples_uri: the Examples artifact's URI.

    Returns:
      One dict (path, reason, message) per quarantined file.
    """
    path = posixpath.join(examples_uri, QUARANTINE_FILE)
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        return [json.loads(line) for line in f if line.strip()]
