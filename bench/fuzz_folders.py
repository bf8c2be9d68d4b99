"""The hostile data folders of fuzz_ingestion.py: generated from a seed, with what may become of each entry.

generate(root, outside, rng) fills a folder with a random mix of good images in every accepted
format at several depths and hostile entries (bad and non-UTF-8 names, NFC/NFD twins, corrupt,
truncated, unsupported, huge and oversized files, FIFOs and sockets, links of every kind,
duplicates with identical and conflicting labels) and returns a Folder that records, per entry,
the outcomes it may have (INGESTED or quarantine reasons). DECOYS maps data folder names (most
with glob characters) to a decoy sibling's name that the unescaped pattern would match.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import socket
import struct
import unicodedata
import zlib
from pathlib import Path
from typing import Any

# The limits ingestion and prediction run with: small, so that "too large" files stay small on disk.
MAX_FILE_BYTES = 200_000
MAX_PIXELS = 4_000_000
INGESTED = "ingested"
DECOYS = {"faces[1]": "faces1", "fa*ces": "fa-x-ces", "fa?es": "faces", "faces": "faces1", "sp ace[x]": "sp acex",
          "ünï[0]": "ünï0"}


def _encode(image: Any, fmt: str, **kwargs: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


class Folder:
    """A generated data folder and what may become of each entry in it."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root, self.rng = root, rng
        self.expected: dict[bytes, set[str]] = {}  # relative path (bytes) -> allowed outcomes
        self.groups: list[list[bytes]] = []  # entries of which exactly one is ingested
        self.byte_bad: set[bytes] = set()  # entries prediction must report as errors
        self._stamp = 0

    # names -------------------------------------------------------------------------------------
    def name(self, age: int | None = None, gender: int | None = None, race: int | None = None, ext: str = "jpg") -> str:
        """A well-formed UTKFace name, random labels unless given, unique by its timestamp."""
        self._stamp += 1
        age = self.rng.randint(0, 116) if age is None else age
        gender = self.rng.randint(0, 1) if gender is None else gender
        race = self.rng.randint(0, 4) if race is None else race
        return f"{age}_{gender}_{race}_{20170116170000000 + self._stamp}.{ext}.chip.jpg"

    def subdir(self) -> bytes:
        """A random relative folder, 0 to 3 levels deep ("" most often), names with spaces and glob characters."""
        depth = self.rng.choice([0, 0, 1, 2, 3])
        parts = [self.rng.choice([b"a", b"b b", b"sub", "ü".encode(), b"x[1]", b"d*"]) for _ in range(depth)]
        return b"/".join(parts)

    def _path(self, relative: bytes) -> bytes:
        return os.fsencode(self.root) + b"/" + relative

    def add(self, relative: bytes, data: bytes, outcomes: set[str], byte_bad: bool = False) -> bytes:
        """Writes a file (once: an existing entry is kept as it is) and records its allowed outcomes.

        byte_bad: prediction must report the entry as an error. Returns ``relative``.
        """
        path = self._path(relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if relative in self.expected:
            return relative
        with open(path, "wb") as f:
            f.write(data)
        self.expected[relative] = outcomes
        if byte_bad:
            self.byte_bad.add(relative)
        return relative

    def join(self, sub: bytes, name: str | bytes) -> bytes:
        """sub/name as a relative path in bytes (just name when sub is empty)."""
        name = name.encode() if isinstance(name, str) else name
        return sub + b"/" + name if sub else name


def _pixels(rng: random.Random, w: int, h: int) -> Any:
    import numpy as np

    return np.random.default_rng(rng.getrandbits(32)).integers(0, 255, (h, w, 3), dtype=np.uint8)


def random_image(rng: random.Random, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    """A small image of random pixels (8 to 48 px a side) in a PIL format and mode."""
    from PIL import Image

    image = Image.fromarray(_pixels(rng, rng.randint(8, 48), rng.randint(8, 48))).convert(mode)
    return _encode(image, fmt)


def _corrupt_png(rng: random.Random) -> bytes:
    data = bytearray(random_image(rng, "PNG"))
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    data[idat + 4 + length + rng.randint(0, 3)] ^= 1 << rng.randint(0, 7)
    return bytes(data)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _huge_png(rng: random.Random) -> bytes:
    width, height = rng.choice([(100_000, 100_000), (4_000, 4_000), (65_535, 1_000)])
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    unique = _png_chunk(b"tEXt", b"Comment\0" + str(rng.getrandbits(64)).encode())  # no two files alike
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + unique + (
        _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _png_chunk(b"IEND", b"")
    )


def _huge_jpeg(rng: random.Random) -> bytes:
    data = bytearray(random_image(rng, "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60_000, 60_000)
    return bytes(data)


def _truncated_jpeg(rng: random.Random) -> bytes:
    from PIL import Image

    data = _encode(Image.fromarray(_pixels(rng, 64, 64)), "JPEG", quality=95)
    return data[: rng.randint(200, len(data) * 9 // 10)]


def _eps(rng: random.Random) -> bytes:
    unique = f"%%Title: {rng.getrandbits(64)}\n".encode()  # no two files alike
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n" + unique + b"%%EndComments\nshowpage\n%%EOF\n"


def generate(root: Path, outside: Path, rng: random.Random) -> Folder:
    """Fills ``root`` (which must not exist) with a random mix of entries; returns what to expect."""
    root.mkdir(parents=True)
    folder = Folder(root, rng)
    for _ in range(rng.randint(15, 40)):
        kind = rng.choice([
            "good", "good", "good", "good", "bad_name", "digits", "newline", "formula", "hidden", "non_utf8",
            "non_utf8_dir", "corrupt_png", "truncated", "garbage", "empty", "unsupported", "huge", "too_large",
            "fifo", "socket", "link_fifo", "link_outside", "broken_link", "link_dir", "duplicates", "conflict",
            "nfc_twins", "link_file",
        ])
        sub = folder.subdir()
        if kind == "good":
            fmt, mode = rng.choice([("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK"), ("PNG", "RGB"), ("PNG", "RGBA"),
                                    ("PNG", "L"), ("BMP", "RGB"), ("GIF", "P"), ("WEBP", "RGB")])
            folder.add(folder.join(sub, folder.name()), random_image(rng, fmt, mode), {INGESTED})
        elif kind == "bad_name":
            name = rng.choice(["photo.jpg", "53__0_20170116184028385.jpg.chip.jpg", f"{folder.name()}.jpg",
                               "39_1_2_ 20170116174525125.jpg.chip.jpg", "200_0_0_20170116174525125.jpg.chip.jpg"])
            reasons = {"name_mismatch", "age_out_of_range"}
            folder.add(folder.join(sub, name), random_image(rng), reasons)
        elif kind == "digits":
            name = folder.name(age=25).replace("25", rng.choice(["٢٥", "２５", "²5"]), 1)
            folder.add(folder.join(sub, name), random_image(rng), {"name_mismatch"})
        elif kind == "newline":
            folder.add(folder.join(sub, folder.name() + "\n"), random_image(rng), {"name_mismatch"})
        elif kind == "formula":
            name = rng.choice(["=1+2", "+SUM(A1)", "-3", "@x", "\tcmd", "\rcmd"]) + folder.name()
            folder.add(folder.join(sub, name), random_image(rng), {"name_mismatch"})
        elif kind == "hidden":
            folder.add(folder.join(sub, "." + folder.name()), random_image(rng), {"hidden_file"})
        elif kind == "non_utf8":
            name = folder.name().encode()
            cut = rng.randint(0, len(name))
            folder.add(folder.join(sub, name[:cut] + bytes([rng.choice([0xFF, 0xFE, 0xC0, 0x80])]) + name[cut:]),
                       random_image(rng), {"non_utf8_name"})
        elif kind == "non_utf8_dir":
            folder.add(folder.join(folder.join(sub, b"dir\xff"), folder.name()), random_image(rng), {"non_utf8_name"})
        elif kind == "corrupt_png":
            folder.add(folder.join(sub, folder.name()), _corrupt_png(rng), {"undecodable_image"}, byte_bad=True)
        elif kind == "truncated":
            folder.add(folder.join(sub, folder.name()), _truncated_jpeg(rng), {"undecodable_image"}, byte_bad=True)
        elif kind == "garbage":
            data = rng.choice([b"<html>404 %d</html>" % rng.getrandbits(64), rng.randbytes(rng.randint(1, 2000)),
                               b"\xff\xd8\xff" + rng.randbytes(300),
                               b"\x89PNG\r\n\x1a\n" + rng.randbytes(100)])
            # Random bytes can look like a format without magic numbers (TGA): refused as unsupported then.
            reasons = {"not_an_image", "undecodable_image", "unsupported_format"}
            folder.add(folder.join(sub, folder.name()), data, reasons, byte_bad=True)
        elif kind == "empty":
            folder.add(folder.join(sub, folder.name()), b"", {"empty_file"}, byte_bad=True)
        elif kind == "unsupported":
            data = rng.choice([random_image(rng, "TIFF"), _eps(rng), b"8BPS" + rng.randbytes(60),
                               random_image(rng, "PPM")])
            folder.add(folder.join(sub, folder.name()), data, {"unsupported_format"}, byte_bad=True)
        elif kind == "huge":
            data = rng.choice([_huge_png(rng), _huge_jpeg(rng)])
            folder.add(folder.join(sub, folder.name()), data, {"image_too_large", "undecodable_image"}, byte_bad=True)
        elif kind == "too_large":
            folder.add(folder.join(sub, folder.name()), rng.randbytes(MAX_FILE_BYTES + rng.randint(1, 5000)),
                       {"file_too_large"}, byte_bad=True)
        elif kind in ("fifo", "socket", "link_fifo"):
            relative = folder.join(sub, folder.name())
            path = folder._path(relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            target = path if kind != "link_fifo" else path + b".target"
            if kind == "socket":
                with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as server:
                    server.bind(target)  # fails when the path is over the ~108 bytes AF_UNIX allows
            else:
                os.mkfifo(target)
            if not os.path.exists(target):
                continue
            if kind == "link_fifo":
                os.symlink(target, path)
                folder.expected[relative + b".target"] = {"name_mismatch", "not_a_regular_file"}
                folder.byte_bad.add(relative + b".target")
            folder.expected[relative] = {"not_a_regular_file"}
            folder.byte_bad.add(relative)
        elif kind == "link_outside":
            target = outside / f"secret{rng.randint(0, 10**6)}.jpg"
            target.write_bytes(random_image(rng))
            relative = folder.join(sub, folder.name())
            os.makedirs(os.path.dirname(folder._path(relative)), exist_ok=True)
            os.symlink(os.fsencode(target), folder._path(relative))
            folder.expected[relative] = {"symlink_outside_data_dir"}
            folder.byte_bad.add(relative)
        elif kind == "broken_link":
            relative = folder.join(sub, folder.name())
            os.makedirs(os.path.dirname(folder._path(relative)), exist_ok=True)
            os.symlink(b"/nonexistent/" + relative, folder._path(relative))
            folder.expected[relative] = {"broken_symlink"}
            folder.byte_bad.add(relative)
        elif kind == "link_dir":
            relative = folder.join(sub, b"linked")
            os.makedirs(os.path.dirname(folder._path(relative)) or b".", exist_ok=True)
            if os.path.lexists(folder._path(relative)):
                continue
            os.symlink(os.fsencode(root), folder._path(relative))
            folder.expected[relative] = {"symlinked_directory"}
            folder.byte_bad.add(relative)
        elif kind == "link_file":  # a link to a file inside: read like a file, so a duplicate of its target
            labels = (rng.randint(0, 116), rng.randint(0, 1), rng.randint(0, 4))
            target = folder.add(folder.join(sub, folder.name(*labels)), random_image(rng), {INGESTED, "duplicate"})
            relative = folder.join(sub, folder.name(*labels))
            os.symlink(folder._path(target), folder._path(relative))
            folder.expected[relative] = {INGESTED, "duplicate"}
            folder.groups.append([target, relative])
        elif kind == "duplicates":
            data, labels = random_image(rng), (rng.randint(0, 116), rng.randint(0, 1), rng.randint(0, 4))
            copies = [folder.add(folder.join(folder.subdir(), folder.name(*labels)), data, {INGESTED, "duplicate"})
                      for _ in range(rng.randint(2, 3))]
            folder.groups.append(copies)
        elif kind == "conflict":
            data = random_image(rng)
            for age in rng.sample(range(0, 117), rng.randint(2, 3)):
                folder.add(folder.join(folder.subdir(), folder.name(age=age)), data, {"conflicting_labels"})
        elif kind == "nfc_twins":
            name = folder.name()
            twins = []
            for form in ("NFC", "NFD"):
                relative = folder.join(unicodedata.normalize(form, "café").encode(), name)
                twins.append(folder.add(relative, random_image(rng), {INGESTED, "duplicate_name"}))
            folder.groups.append(twins)
    if not folder.expected:
        folder.add(folder.name().encode(), random_image(rng, "PNG", "RGB"), {INGESTED})
    return folder
