"""One way to read an image file and prepare its bytes for the model, for ingestion and prediction.

Ingestion (components.image_example_gen.ingest) and batch prediction (components.predict) both
call :func:`read_file` and :func:`normalize_image`, so a file gives the model the same pixels on
both paths (no training/serving skew) and both refuse the same files for the same reasons:

* only the formats in ALLOWED_FORMATS reach a decoder (an EPS never reaches PIL's Ghostscript
  loader); files and images above the size limits are refused before they are decoded;
* a file is read only when it is a regular file, opened without blocking (a FIFO or a device,
  also behind a symbolic link, is refused, never read);
* EXIF orientation is applied, transparent pixels become white, 16-bit grey is scaled to 8 bits
  (not clipped), everything else becomes 8-bit RGB;
* bytes kept as they are (8-bit RGB JPEG or PNG without rotation) are validated by TensorFlow's
  decoder, the one the model uses: PIL accepts a PNG whose IDAT checksum is wrong, TensorFlow
  does not, and one such file would otherwise stop the Trainer. Other images are re-encoded from
  PIL's decoding, so the model reads our encoder's output.
"""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps, UnidentifiedImageError

# Decoding a huge image can exhaust memory; this bounds width * height (read from the header).
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
# Files are read whole; this bounds how much of one file is ever held in memory.
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024

# Formats accepted (as PIL names them). Common photo formats with mature decoders; MPO is the
# multi-picture JPEG many cameras write. Anything else that is an image is `unsupported_format`.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "GIF", "WEBP")
# The PIL plugins tried when opening: MPO files are opened by the JPEG plugin.
_OPEN_FORMATS = tuple(f for f in ALLOWED_FORMATS if f != "MPO")
# Formats kept byte for byte when already 8-bit RGB; everything else is re-encoded as JPEG.
_PASSTHROUGH_FORMATS = ("JPEG", "PNG")
_REENCODE_QUALITY = 95
_ORIENTATION_TAG = 0x0112
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}  # the DIB header sizes that follow "BM"
_READ_CHUNK = 1 << 20


class Rejected(ValueError):
    """A file that cannot become model input.

    Attributes:
      reason: machine-readable, snake_case: not_a_regular_file, unreadable_file, file_too_large,
        empty_file, not_an_image, unsupported_format, undecodable_image, image_too_large.
      detail: what is wrong, as a phrase about the file (no file name), e.g. ``is empty (0 bytes)``.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def display_path(path: str) -> str:
    """A path that can always be encoded as UTF-8: undecodable bytes shown as ``\\xNN``.

    Local names that are not valid UTF-8 reach Python as lone surrogates (PEP 383); they cannot
    be written to JSON, CSV or TFRecords as they are.
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace") if not is_utf8(path) else path


def is_utf8(text: str) -> bool:
    """Whether a str (e.g. a file name from os.listdir) encodes as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_remote(path: str) -> bool:
    """Whether a path names an object store or other non-local file system (``gs://``, ``ram://``)."""
    return "://" in path


def read_file(path: str, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """Reads a whole file, never more than ``max_bytes`` + 1 bytes of it, and never blocks.

    A local path is followed to what it names (os.stat) and read only when that is a regular
    file; it is opened with O_NONBLOCK and checked again on the open descriptor, so a FIFO
    swapped in between the two cannot block the read either. Remote paths are read through
    tf.io.gfile (object stores hold no pipes).

    Args:
      path: local or remote path.
      max_bytes: larger files are refused.

    Returns:
      The bytes.

    Raises:
      Rejected: not_a_regular_file, unreadable_file, file_too_large.
    """
    if is_remote(path):
        try:
            with tf.io.gfile.GFile(path, "rb") as f:
                data = f.read(max_bytes + 1)
        except (tf.errors.OpError, OSError) as e:
            raise Rejected("unreadable_file", f"could not be read: {e}") from None
    else:
        data = _read_local(path, max_bytes)
    if len(data) > max_bytes:
        raise Rejected("file_too_large", f"is larger than the {max_bytes}-byte limit for one file")
    return data


def _not_regular(mode: int) -> Rejected:
    kind = "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else (
        "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a folder" if stat.S_ISDIR(mode) else "special"
    )
    return Rejected("not_a_regular_file", f"is not a regular file ({kind}); only regular files are read")


def _read_local(path: str, max_bytes: int) -> bytes:
    try:
        mode = os.stat(path).st_mode  # follows a symbolic link: what would be read
    except OSError as e:
        raise Rejected("unreadable_file", f"could not be read: {e}") from None
    if not stat.S_ISREG(mode):
        raise _not_regular(mode)  # never opened: opening a FIFO for reading blocks until a writer comes
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise Rejected("unreadable_file", f"could not be read: {e}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # replaced after the stat above
            raise _not_regular(mode)
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(_READ_CHUNK, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as e:
        raise Rejected("unreadable_file", f"could not be read: {e}") from None
    finally:
        os.close(fd)


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
    if head.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6")):
        return "EPS"
    text = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "SVG"
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts any decoded mode to 8-bit RGB; transparent pixels become white, 16-bit grey is scaled."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grayscale: keep the top 8 bits
        image = Image.fromarray((np.asarray(image, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.asarray(image, dtype=np.float32).clip(0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _tensorflow_refuses(data: bytes, fmt: str) -> str | None:
    """Decodes kept bytes with the model's decoder; returns its error, or None when it decodes them."""
    try:
        if fmt == "JPEG":
            # At 1/8 scale libjpeg still entropy-decodes every block (where corrupt and truncated
            # streams fail) but skips most of the inverse DCT: about the cost of PIL's draft mode.
            tf.io.decode_jpeg(data, channels=3, ratio=8)
        else:
            tf.io.decode_png(data, channels=3)
    except tf.errors.OpError as e:
        return e.message.splitlines()[0] if e.message else type(e).__name__
    return None


def normalize_image(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> bytes:
    """Turns a file's bytes into the encoded image the model reads (3-channel 8-bit RGB).

    Args:
      data: the file's bytes.
      max_pixels: images with more pixels than this are refused undecoded.

    Returns:
      The original bytes when they are an 8-bit RGB JPEG or PNG without EXIF rotation that
      TensorFlow decodes; else the image (first frame), rotated upright, as a JPEG.

    Raises:
      Rejected: empty_file, unsupported_format, image_too_large, not_an_image, undecodable_image.
    """
    if not data:
        raise Rejected("empty_file", "is empty (0 bytes)")
    sniffed = sniff_format(data)
    if sniffed is not None and sniffed not in ALLOWED_FORMATS:
        raise _unsupported(sniffed)  # never handed to a decoder we do not accept
    try:
        # Only the allowed formats' plugins are tried, so no other decoder ever sees the bytes.
        with Image.open(io.BytesIO(data), formats=_OPEN_FORMATS) as image:
            fmt = image.format or "unknown"
            if fmt not in ALLOWED_FORMATS:
                raise _unsupported(fmt)
            width, height = image.size
            if width * height > max_pixels:
                raise Rejected("image_too_large", _too_large(f"{width}x{height} pixels", max_pixels))
            rotated = image.getexif().get(_ORIENTATION_TAG, 1) not in (0, 1)
            if fmt in _PASSTHROUGH_FORMATS and image.mode == "RGB" and not rotated:
                refused = _tensorflow_refuses(data, fmt)
                if refused is not None:
                    raise _undecodable(f"TensorFlow's decoder, which the model uses, refuses it: {refused}")
                return data
            image.load()  # a full decode (first frame): catches truncated and corrupt files
            rgb = to_rgb(ImageOps.exif_transpose(image) if rotated else image)
    except Rejected:
        raise
    except Image.DecompressionBombError as e:
        raise Rejected("image_too_large", _too_large(str(e), max_pixels)) from None
    except UnidentifiedImageError:
        other = _identify(data)
        if other is not None:
            raise _unsupported(other) from None
        if sniffed is not None:  # the signature of an accepted format, but not even the header parses
            raise _undecodable(f"a damaged {sniffed} header") from None
        raise Rejected("not_an_image", "is not an image: its contents are not in any accepted image format") from None
    except Exception as e:  # noqa: BLE001  (decoders raise many types on hostile input; each file is refused alone)
        raise _undecodable(f"{type(e).__name__}: {e}") from None
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=_REENCODE_QUALITY)
    return out.getvalue()


def _identify(data: bytes) -> str | None:
    """The format any PIL plugin reads in the header, only to name it in a message.

    Only headers are parsed: nothing is loaded, so no decoder runs (for EPS, no Ghostscript).
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:  # noqa: BLE001  (hostile headers raise many types; the file is refused either way)
        return None


def _unsupported(fmt: str) -> Rejected:
    return Rejected("unsupported_format", f"is a {fmt} image; accepted formats are {', '.join(ALLOWED_FORMATS)}")


def _too_large(why: str, max_pixels: int) -> str:
    return f"is too large to decode safely ({why}; limit {max_pixels} pixels)"


def _undecodable(why: str) -> Rejected:
    return Rejected("undecodable_image", f"could not be decoded as an image (truncated or corrupt): {why}")
