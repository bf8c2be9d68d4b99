"""Pure helpers of the image ExampleGen: find files, check one file, build its tf.Example.

Every file found is either turned into a tf.Example or into a quarantine entry that
says why it was not ingested, so no input is silently lost. Quarantine reasons
(machine-readable, snake_case):

  listing:   symlink_outside_data_dir, broken_symlink, symlinked_directory,
             not_a_regular_file, unreadable_directory
  name:      hidden_file, name_mismatch, age_out_of_range, gender_out_of_range, race_out_of_range
  bytes:     unreadable_file, empty_file, file_too_large, not_an_image, unsupported_format,
             undecodable_image, image_too_large
  contents:  duplicate (exact same bytes as the file that was kept)
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import posixpath
import re
from collections.abc import Iterable

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline import labels

# Decoding a huge image can exhaust memory; this bounds width * height (read from the header).
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
# Files are read whole; this bounds how much of one file is ever held in memory.
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
QUARANTINE_FILE = "quarantine.jsonl"

# Formats ingested (as PIL names them). Common photo formats with mature decoders; MPO is the
# multi-picture JPEG many cameras write. Anything else that is an image is `unsupported_format`.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP")
# Formats kept byte for byte when already 8-bit RGB; everything else is re-encoded as JPEG.
_PASSTHROUGH_FORMATS = ("JPEG", "PNG")
_REENCODE_QUALITY = 95
_ORIENTATION_TAG = 0x0112
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}  # the DIB header sizes that follow "BM"


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


@dataclasses.dataclass(frozen=True)
class FoundFile:
    """One entry found under the data folder.

    Attributes:
      path: full path (local or gs://).
      relative: path relative to its root (the data folder, or its span folder); stored as the
        ``filename`` feature and hashed for the train/eval split.
      issue: set when listing alone shows the file cannot be ingested (e.g. a symlink that
        leaves the data folder).
    """

    path: str
    relative: str
    issue: QuarantineEntry | None = None


def is_remote(path: str) -> bool:
    """Whether a path names an object store or other non-local file system (``gs://``, ``ram://``)."""
    return "://" in path


def _join(folder: str, name: str) -> str:
    return posixpath.join(folder, name) if is_remote(folder) else os.path.join(folder, name)


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _walk_local(path: str, relative: str, real_data_dir: str, out: list[FoundFile]) -> None:
    """Lists a local entry without following symlinks (tf.io.gfile.walk loops forever on a cycle)."""
    if os.path.islink(path):
        target = os.path.realpath(path)
        if not os.path.exists(target):
            out.append(FoundFile(path, relative, QuarantineEntry(
                path, "broken_symlink",
                f"{relative!r} is a symbolic link to {os.readlink(path)!r}, which does not exist")))
        elif not _is_within(target, real_data_dir):
            out.append(FoundFile(path, relative, QuarantineEntry(
                path, "symlink_outside_data_dir",
                f"{relative!r} is a symbolic link to {target!r}, outside the data folder {real_data_dir!r}; "
                "links may only point inside the data folder")))
        elif os.path.isdir(target):
            out.append(FoundFile(path, relative, QuarantineEntry(
                path, "symlinked_directory",
                f"{relative!r} is a symbolic link to the folder {target!r}; linked folders are not followed "
                "(their files are read where they really are)")))
        else:
            out.append(FoundFile(path, relative))  # a link to a file inside the data folder
        return
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            out.append(FoundFile(path, relative, QuarantineEntry(
                path, "unreadable_directory", f"folder {relative!r} could not be listed: {e}")))
            return
        for name in names:
            _walk_local(os.path.join(path, name), f"{relative}/{name}" if relative else name, real_data_dir, out)
        return
    if os.path.isfile(path):
        out.append(FoundFile(path, relative))
    else:  # reading a FIFO would block forever; devices and sockets are not data
        out.append(FoundFile(path, relative, QuarantineEntry(
            path, "not_a_regular_file", f"{relative!r} is not a regular file (a pipe, socket or device)")))


def find_files(root: str, pattern: str = "*", data_dir: str | None = None) -> list[FoundFile]:
    """Finds every file under ``root`` matching ``pattern`` at the top level, recursively below.

    Local folders are walked without following symbolic links: a link to a file inside the data
    folder is read like a file, every other link is returned with an issue. Remote paths
    (``gs://``) are listed through tf.io.gfile and have no links.

    Args:
      root: the folder that relative paths are relative to (the data folder or a span folder).
      pattern: glob pattern of the top-level entries under ``root``.
      data_dir: the folder links must stay inside; ``root`` by default.

    Returns:
      FoundFile entries, sorted by path.
    """
    data_dir = data_dir or root
    root = root.rstrip("/") if is_remote(root) else os.path.normpath(root)
    out: list[FoundFile] = []
    for match in sorted(tf.io.gfile.glob(_join(root, pattern))):
        relative = match[len(root) + 1 :] if match.startswith(root + ("/" if is_remote(root) else os.sep)) else match
        if not is_remote(match):
            _walk_local(match, relative.replace(os.sep, "/"), os.path.realpath(data_dir), out)
        elif tf.io.gfile.isdir(match):
            for dirpath, _, filenames in tf.io.gfile.walk(match):
                for name in filenames:
                    path = posixpath.join(dirpath.rstrip("/"), name)
                    out.append(FoundFile(path, path[len(root) + 1 :]))
        else:
            out.append(FoundFile(match, relative))
    return sorted(out, key=lambda f: f.path)


def check_name(path: str, relative_name: str, pattern: re.Pattern[str]) -> labels.ParsedName | QuarantineEntry:
    """Checks a file's name only: hidden files and folders, the file-name pattern, label ranges.

    Args:
      path: the file's full path (reported in quarantine entries).
      relative_name: the path relative to the data (or span) folder.
      pattern: compiled file-name pattern (pipeline.labels.compile_pattern).

    Returns:
      The parsed labels, or a QuarantineEntry.
    """
    parts = relative_name.split("/")
    base = parts[-1]
    if base.startswith("."):
        return QuarantineEntry(path, "hidden_file", f"{base!r} is a hidden file; hidden files are not ingested")
    hidden_dirs = [p for p in parts[:-1] if p.startswith(".")]
    if hidden_dirs:
        return QuarantineEntry(
            path, "hidden_file", f"{relative_name!r} is inside the hidden folder {hidden_dirs[0]!r}; not ingested"
        )
    try:
        return labels.parse_filename(base, pattern)
    except labels.FilenameError as e:
        return QuarantineEntry(path, e.reason, e.message)


def sniff_format(data: bytes) -> str | None:
    """Names the image format a file's first bytes announce, without decoding it.

    Args:
      data: the file's bytes (the first 32 are enough).

    Returns:
      A format name such as ``JPEG`` or ``HEIC``; None when no known image signature is present.
    """
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "BMP"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIC"
    if head[4:8] == b"ftyp" and head[8:12] in _AVIF_BRANDS:
        return "AVIF"
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "JPEG2000"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "JPEG XL"
    if head.startswith(b"8BPS"):
        return "PSD"
    text = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "SVG"
    return None


def _to_rgb(image: Image.Image) -> Image.Image:
    """Converts any decoded mode to 8-bit RGB; transparent pixels become white."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grayscale
        image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.asarray(image, dtype=np.float32).clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _normalized_image_bytes(data: bytes, max_pixels: int) -> tuple[bytes | None, tuple[str, str]]:
    """Decodes fully; returns (bytes the model reads as 3-channel RGB, ("", "")) or (None, (reason, why))."""
    sniffed = sniff_format(data)
    if sniffed is not None and sniffed not in ALLOWED_FORMATS:
        return None, ("unsupported_format", sniffed)  # never handed to a decoder we do not accept
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format or "unknown"
            if fmt not in ALLOWED_FORMATS:
                return None, ("unsupported_format", fmt)
            width, height = image.size
            if width * height > max_pixels:
                return None, ("image_too_large", f"{width}x{height} pixels")
            rotated = image.getexif().get(_ORIENTATION_TAG, 1) not in (0, 1)
            passthrough = fmt in _PASSTHROUGH_FORMATS and image.mode == "RGB" and not rotated
            if passthrough and fmt == "JPEG":
                # Kept as is, so decoded only to validate it: at 1/8 scale libjpeg still entropy-decodes
                # every block (truncated or corrupt streams fail the same way) but skips most of the
                # inverse DCT, which halves ingestion's decode time.
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()  # decode (first frame): catches truncated and corrupt files
            if passthrough:
                return data, ("", "")
            rgb = _to_rgb(ImageOps.exif_transpose(image) if rotated else image)
    except Image.DecompressionBombError as e:
        return None, ("image_too_large", str(e))
    except UnidentifiedImageError:
        if sniffed is not None:  # the signature of an accepted format, but not even the header parses
            return None, ("undecodable_image", f"a damaged {sniffed} header")
        return None, ("not_an_image", "its contents are not in any image format")
    except Exception as e:  # noqa: BLE001  (decoders raise many types on hostile input; each file is quarantined)
        return None, ("undecodable_image", f"{type(e).__name__}: {e}")
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=_REENCODE_QUALITY)
    return out.getvalue(), ("", "")


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
      relative_name: the path relative to the data folder (or span folder); stored as
        ``filename`` and used for the stable hash split.
      data: the file's bytes.
      pattern: compiled file-name pattern (pipeline.labels.compile_pattern).
      max_pixels: images with more pixels than this are refused undecoded.

    Returns:
      A tf.train.Example with image_raw (JPEG or PNG, 8-bit RGB), age, gender, race, filename;
      or a QuarantineEntry.
    """
    parsed = check_name(path, relative_name, pattern)
    if isinstance(parsed, QuarantineEntry):
        return parsed
    base = posixpath.basename(relative_name)
    if not data:
        return QuarantineEntry(path, "empty_file", f"{base!r} is empty (0 bytes)")
    image_bytes, (reason, why) = _normalized_image_bytes(data, max_pixels)
    if image_bytes is None:
        messages = {
            "unsupported_format": f"{base!r} is a {why} image; accepted formats are {', '.join(ALLOWED_FORMATS)}",
            "image_too_large": f"{base!r} is too large to decode safely ({why}; limit {max_pixels} pixels)",
            "not_an_image": f"{base!r} is not an image: {why}",
            "undecodable_image": f"{base!r} could not be decoded as an image (truncated or corrupt): {why}",
        }
        return QuarantineEntry(path, reason, messages[reason])
    feature = {
        labels.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
        labels.AGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[parsed.age])),
        labels.GENDER_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[parsed.gender])),
        labels.RACE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[parsed.race])),
        labels.FILENAME_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[relative_name.encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def read_bounded(path: str, relative_name: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes | QuarantineEntry:
    """Reads a whole file, but never more than ``max_bytes`` + 1 bytes of it.

    Args:
      path: local or remote path.
      relative_name: for messages.
      max_bytes: larger files are refused.

    Returns:
      The bytes, or a QuarantineEntry (unreadable_file, file_too_large).
    """
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except (tf.errors.OpError, OSError) as e:
        return QuarantineEntry(path, "unreadable_file", f"{relative_name!r} could not be read: {e}")
    if len(data) > max_bytes:
        return QuarantineEntry(
            path, "file_too_large", f"{relative_name!r} is larger than the {max_bytes}-byte limit for one file"
        )
    return data


def choose_kept(copies: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], list[tuple[str, str]]]:
    """Picks the copy to keep among files with identical bytes: the smallest relative path.

    Args:
      copies: (relative path, full path) of each copy.

    Returns:
      (the kept copy, the others sorted).
    """
    ordered = sorted(copies)
    return ordered[0], ordered[1:]


def duplicate_entry(path: str, relative_name: str, kept_relative: str, kept_path: str) -> QuarantineEntry:
    """The quarantine entry of a file whose bytes equal those of the kept file."""
    return QuarantineEntry(
        path,
        "duplicate",
        f"{relative_name!r} has exactly the same contents as {kept_relative!r} ({kept_path}), which was kept",
    )


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
