"""Seeded, randomized ingestion and batch-prediction run on generated hostile folders (not in CI).

    .venv/bin/python bench/fuzz_ingestion.py                    # 30 minutes, seed 17
    .venv/bin/python bench/fuzz_ingestion.py --minutes 2 --seed 5

Each iteration generates a data folder from its own seed (seed * 1,000,003 + iteration): a folder
name with glob characters beside a decoy sibling that the unescaped pattern would match; good
images in every accepted format at several depths; bad names (non-ASCII digits, a trailing
newline, a leading ``=``, hidden files); names that are not UTF-8, also as folders; NFC/NFD
twins; PNGs with a corrupt IDAT checksum, truncated JPEGs, garbage, empty files, TIFF/EPS/PSD,
headers claiming huge images, files over the size limit; FIFOs and sockets, directly and behind
links; links outside the folder, broken links, linked folders; identical images with identical
and with conflicting labels. Every generated entry has the set of outcomes it may have
(``ingested`` or quarantine reasons).

Then a worker process runs ingestion (components.image_example_gen.executor.run_on_folder) and
batch prediction (components.predict.predict_folder, with a tiny exported model) on the folder;
this process gives each step a deadline and kills and restarts the worker when it passes it. The
run checks, per iteration:

* no crash (the worker answers, the step raises nothing) and no hang (within the deadline);
* every file accounted for: files_found = ingested + quarantined, each generated entry either an
  example or a quarantine line, with an outcome it may have; no decoy file read;
* prediction: one CSV row per entry, valid UTF-8, no cell a spreadsheet would run as a formula,
  a probability row for every ingested image, an error row for every unreadable or broken file.

Results go to ``<out>/fuzz_report.json`` and the console; failing folders are kept under
``<out>/failures/``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unicodedata
import zlib
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SENTINEL = "FUZZ-DONE"
MAX_FILE_BYTES = 200_000  # small, so that "too large" files stay small on disk
MAX_PIXELS = 4_000_000
INGESTED = "ingested"
DECOYS = {"faces[1]": "faces1", "fa*ces": "fa-x-ces", "fa?es": "faces", "faces": "faces1", "sp ace[x]": "sp acex",
          "ünï[0]": "ünï0"}


# --------------------------------------------------------------------------------------------------
# Generating a folder
# --------------------------------------------------------------------------------------------------


def _encode(image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


class Folder:
    """A generated data folder and what may become of each entry in it."""

    def __init__(self, root: Path, rng: random.Random):
        self.root, self.rng = root, rng
        self.expected: dict[bytes, set[str]] = {}  # relative path (bytes) -> allowed outcomes
        self.groups: list[list[bytes]] = []  # entries of which exactly one is ingested
        self.byte_bad: set[bytes] = set()  # entries prediction must report as errors
        self._stamp = 0

    # names -------------------------------------------------------------------------------------
    def name(self, age: int | None = None, gender: int | None = None, race: int | None = None, ext: str = "jpg") -> str:
        self._stamp += 1
        age = self.rng.randint(0, 116) if age is None else age
        gender = self.rng.randint(0, 1) if gender is None else gender
        race = self.rng.randint(0, 4) if race is None else race
        return f"{age}_{gender}_{race}_{20170116170000000 + self._stamp}.{ext}.chip.jpg"

    def subdir(self) -> bytes:
        depth = self.rng.choice([0, 0, 1, 2, 3])
        parts = [self.rng.choice([b"a", b"b b", b"sub", "ü".encode(), b"x[1]", b"d*"]) for _ in range(depth)]
        return b"/".join(parts)

    def _path(self, relative: bytes) -> bytes:
        return os.fsencode(self.root) + b"/" + relative

    def add(self, relative: bytes, data: bytes, outcomes: set[str], byte_bad: bool = False) -> bytes:
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
        name = name.encode() if isinstance(name, str) else name
        return sub + b"/" + name if sub else name


def _pixels(rng: random.Random, w: int, h: int):
    import numpy as np

    return np.random.default_rng(rng.getrandbits(32)).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _image(rng: random.Random, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    from PIL import Image

    image = Image.fromarray(_pixels(rng, rng.randint(8, 48), rng.randint(8, 48))).convert(mode)
    return _encode(image, fmt)


def _corrupt_png(rng: random.Random) -> bytes:
    data = bytearray(_image(rng, "PNG"))
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
    data = bytearray(_image(rng, "JPEG"))
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
            folder.add(folder.join(sub, folder.name()), _image(rng, fmt, mode), {INGESTED})
        elif kind == "bad_name":
            name = rng.choice(["photo.jpg", "53__0_20170116184028385.jpg.chip.jpg", f"{folder.name()}.jpg",
                               "39_1_2_ 20170116174525125.jpg.chip.jpg", "200_0_0_20170116174525125.jpg.chip.jpg"])
            reasons = {"name_mismatch", "age_out_of_range"}
            folder.add(folder.join(sub, name), _image(rng), reasons)
        elif kind == "digits":
            name = folder.name(age=25).replace("25", rng.choice(["٢٥", "２５", "²5"]), 1)
            folder.add(folder.join(sub, name), _image(rng), {"name_mismatch"})
        elif kind == "newline":
            folder.add(folder.join(sub, folder.name() + "\n"), _image(rng), {"name_mismatch"})
        elif kind == "formula":
            name = rng.choice(["=1+2", "+SUM(A1)", "-3", "@x", "\tcmd", "\rcmd"]) + folder.name()
            folder.add(folder.join(sub, name), _image(rng), {"name_mismatch"})
        elif kind == "hidden":
            folder.add(folder.join(sub, "." + folder.name()), _image(rng), {"hidden_file"})
        elif kind == "non_utf8":
            name = folder.name().encode()
            cut = rng.randint(0, len(name))
            folder.add(folder.join(sub, name[:cut] + bytes([rng.choice([0xFF, 0xFE, 0xC0, 0x80])]) + name[cut:]),
                       _image(rng), {"non_utf8_name"})
        elif kind == "non_utf8_dir":
            folder.add(folder.join(folder.join(sub, b"dir\xff"), folder.name()), _image(rng), {"non_utf8_name"})
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
            data = rng.choice([_image(rng, "TIFF"), _eps(rng), b"8BPS" + rng.randbytes(60), _image(rng, "PPM")])
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
            target.write_bytes(_image(rng))
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
            target = folder.add(folder.join(sub, folder.name(*labels)), _image(rng), {INGESTED, "duplicate"})
            relative = folder.join(sub, folder.name(*labels))
            os.symlink(folder._path(target), folder._path(relative))
            folder.expected[relative] = {INGESTED, "duplicate"}
            folder.groups.append([target, relative])
        elif kind == "duplicates":
            data, labels = _image(rng), (rng.randint(0, 116), rng.randint(0, 1), rng.randint(0, 4))
            copies = [folder.add(folder.join(folder.subdir(), folder.name(*labels)), data, {INGESTED, "duplicate"})
                      for _ in range(rng.randint(2, 3))]
            folder.groups.append(copies)
        elif kind == "conflict":
            data = _image(rng)
            for age in rng.sample(range(0, 117), rng.randint(2, 3)):
                folder.add(folder.join(folder.subdir(), folder.name(age=age)), data, {"conflicting_labels"})
        elif kind == "nfc_twins":
            name = folder.name()
            twins = []
            for form in ("NFC", "NFD"):
                relative = folder.join(unicodedata.normalize(form, "café").encode(), name)
                twins.append(folder.add(relative, _image(rng), {INGESTED, "duplicate_name"}))
            folder.groups.append(twins)
    if not folder.expected:
        folder.add(folder.name().encode(), _image(rng, "PNG", "RGB"), {INGESTED})
    return folder


# --------------------------------------------------------------------------------------------------
# The worker: runs one step per command, in a process this one can kill
# --------------------------------------------------------------------------------------------------


def _worker() -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO_ROOT))
    from components import predict
    from components.image_example_gen import executor, ingest

    for line in sys.stdin:
        command = json.loads(line)
        result: dict = {"ok": True}
        try:
            if command["op"] == "model":
                _make_model(command["model_dir"])
            elif command["op"] == "ingest":
                examples = executor.run_on_folder(command["data_dir"], command["out"], **{
                    executor.MAX_FILE_BYTES_KEY: MAX_FILE_BYTES, executor.MAX_IMAGE_PIXELS_KEY: MAX_PIXELS})
                result["files_found"] = examples.get_int_custom_property(executor.FILES_FOUND_PROPERTY)
                result["quarantine"] = ingest.read_quarantine(examples.uri)
                result["ingested"] = _ingested_names(examples.uri)
            elif command["op"] == "predict":
                summary = predict.predict_folder(command["model_dir"], command["data_dir"], command["out"],
                                                 max_file_bytes=MAX_FILE_BYTES, max_pixels=MAX_PIXELS, batch_size=8)
                result["files"], result["errors"] = summary.files, summary.errors
        except BaseException as e:  # noqa: BLE001  (reported to the parent as a crash of the step)
            import traceback

            result = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        with open(command["result"], "w") as f:
            json.dump(result, f)
        print(f"{SENTINEL} {command['id']}", flush=True)


def _ingested_names(uri: str) -> list[str]:
    import tensorflow as tf

    files = tf.io.gfile.glob(os.path.join(uri, "Split-*", "*.gz"))
    return [tf.train.Example.FromString(r.numpy()).features.feature["filename"].bytes_list.value[0].decode()
            for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def _make_model(model_dir: str) -> None:
    import tf_keras

    from components.base import labels
    from components.trainer import export

    model = tf_keras.Sequential([
        tf_keras.layers.Input((32, 32, 3)),
        tf_keras.layers.Rescaling(1 / 255.0),
        tf_keras.layers.GlobalAveragePooling2D(),
        tf_keras.layers.Dense(len(labels.LABEL_NAMES), activation="sigmoid"),
    ])
    export.export_model(model, model_dir, image_size=32)


class Worker:
    """The worker process; ``run`` gives each command a deadline and restarts a worker that passes it."""

    def __init__(self, work: Path):
        self.work, self.process, self.count = work, None, 0

    def start(self) -> None:
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": str(REPO_ROOT)}
        self.log = open(self.work / "worker.log", "ab")  # noqa: SIM115  (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.log, env=env, start_new_session=True,
        )

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=60)
            self.process = None
            self.log.close()

    def run(self, command: dict, deadline_s: float) -> dict:
        """Returns the step's result, or {"ok": False, "hang"/"crash": ...} (the worker is then restarted)."""
        if self.process is None:
            self.start()
        self.count += 1
        command = {**command, "id": self.count, "result": str(self.work / f"result-{self.count}.json")}
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write((json.dumps(command) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            self.stop()
            return {"ok": False, "crash": "the worker had exited"}
        deadline, buffer = time.monotonic() + deadline_s, b""
        fd = self.process.stdout.fileno()
        while f"{SENTINEL} {self.count}".encode() not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                return {"ok": False, "hang": f"no answer within {deadline_s:.0f} s"}
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    code = self.process.wait(timeout=60)
                    self.stop()
                    return {"ok": False, "crash": f"the worker died (exit status {code})"}
                buffer = buffer[-200:] + chunk
        with open(command["result"]) as f:
            return json.load(f)


# --------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------


def _shown(relative: bytes) -> str:
    """A relative path as ingestion shows it (undecodable bytes as \\xNN)."""
    return relative.decode("utf-8", "backslashreplace")


def check_ingestion(folder: Folder, data_dir: str, result: dict) -> list[str]:
    """Problems with one ingestion result (empty when every file is accounted for as allowed)."""
    problems = []
    entries = result["quarantine"]
    ingested = Counter(result["ingested"])
    if result["files_found"] != len(entries) + sum(ingested.values()):
        problems.append(f"files_found {result['files_found']} != {len(entries)} quarantined + "
                        f"{sum(ingested.values())} ingested")
    if result["files_found"] != len(folder.expected):
        problems.append(f"files_found {result['files_found']} != {len(folder.expected)} generated entries")
    prefix = data_dir.rstrip("/") + "/"
    quarantined = {}
    for e in entries:
        if not e["path"].startswith(prefix):
            problems.append(f"quarantined path outside the data folder (decoy read?): {e['path']!r}")
            continue
        quarantined[e["path"][len(prefix):]] = e["reason"]
    outcomes: dict[bytes, str] = {}
    for relative, allowed in sorted(folder.expected.items()):
        shown = _shown(relative)
        nfc = unicodedata.normalize("NFC", shown)
        if shown in quarantined:
            outcomes[relative] = quarantined.pop(shown)
        elif ingested.get(nfc, 0) > 0:
            ingested[nfc] -= 1
            outcomes[relative] = INGESTED
        else:
            problems.append(f"{shown!r} is neither ingested nor quarantined")
            continue
        if outcomes[relative] not in allowed:
            problems.append(f"{shown!r}: {outcomes[relative]}, expected one of {sorted(allowed)}")
    if quarantined:
        problems.append(f"quarantine lines for files not generated: {sorted(quarantined)[:5]}")
    if +ingested:
        problems.append(f"examples for files not generated: {sorted(+ingested)[:5]}")
    for group in folder.groups:
        kept = [r for r in group if outcomes.get(r) == INGESTED]
        if len(kept) != 1:
            problems.append(f"{len(kept)} of {[_shown(r) for r in group]} ingested, expected exactly one")
    return problems


def check_prediction(folder: Folder, ingestion: dict, csv_path: Path, result: dict) -> list[str]:
    """Problems with one prediction CSV."""
    problems = []
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        return [f"the CSV cannot be read: {e}"]
    header, body = rows[0], rows[1:]
    if len(body) != len(folder.expected) or result["files"] != len(folder.expected):
        problems.append(f"{len(body)} rows for {len(folder.expected)} entries (summary says {result['files']})")
    formula = ("=", "+", "-", "@", "\t", "\r")
    for row in body:
        for cell in row:
            if cell.startswith(formula):
                problems.append(f"a cell a spreadsheet would run: {cell!r}")
    by_name: dict[str, list[list[str]]] = {}
    for row in body:
        name = row[0][1:] if row[0].startswith("'") and row[0][1:].startswith(formula) else row[0]
        by_name.setdefault(name, []).append(row)
    error_at = header.index("error")
    for name in ingestion.get("ingested", []):
        if not any(r[error_at] == "" for r in by_name.get(name, [])):
            problems.append(f"{name!r} was ingested but has no prediction")
    for relative in folder.byte_bad:
        shown = unicodedata.normalize("NFC", _shown(relative))
        if any(r[error_at] == "" for r in by_name.get(shown, [])):
            problems.append(f"{shown!r} is a broken or unreadable entry but was predicted")
    return problems


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def _unblock_fifos(root: Path) -> None:
    """Opens every FIFO below root for writing (non-blocking), so that nothing stays blocked on one."""
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if not os.path.islink(path) and os.stat(path).st_mode & 0o170000 == 0o010000:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def main(argv: list[str] | None = None) -> int:
    """Runs the fuzzing loop; returns 1 when any iteration failed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run (default 30)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--deadline", type=float, default=180.0, help="seconds one step may take (default 180)")
    parser.add_argument("--out", default=None, help="work and report folder (default: a new temporary folder)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker()
        return 0

    out = Path(args.out or tempfile.mkdtemp(prefix="facepipe-fuzz-")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "failures").mkdir(exist_ok=True)
    worker = Worker(out)
    started = time.monotonic()
    report: dict = {"seed": args.seed, "minutes": args.minutes, "iterations": 0, "entries": 0, "ingested": 0,
                    "quarantined": Counter(), "predicted_rows": 0, "failures": [], "step_seconds": []}
    model_dir = out / "model"
    setup = worker.run({"op": "model", "model_dir": str(model_dir)}, deadline_s=600)
    if not setup.get("ok"):
        print(f"could not build the model: {setup}", file=sys.stderr)
        return 2
    iteration = 0
    while time.monotonic() - started < args.minutes * 60:
        seed = args.seed * 1_000_003 + iteration
        rng = random.Random(seed)
        case = out / f"case-{seed}"
        # The data folder's name, and a sibling its name would match as an unescaped glob pattern.
        data_name, decoy_name = rng.choice(list(DECOYS.items()))
        data_dir, decoy = case / data_name, case / decoy_name
        (case / "outside").mkdir(parents=True)
        folder = generate(data_dir, case / "outside", rng)
        decoy.mkdir(exist_ok=True)
        (decoy / "30_1_2_20170116174525125.jpg.chip.jpg").write_bytes(_image(rng))  # never to be read
        problems: list[str] = []
        t0 = time.monotonic()
        ingestion = worker.run({"op": "ingest", "data_dir": str(data_dir), "out": str(case / "examples")},
                               args.deadline)
        t1 = time.monotonic()
        if not ingestion.get("ok"):
            problems.append(f"ingestion: {ingestion}")
        else:
            problems += check_ingestion(folder, str(data_dir), ingestion)
        csv_path = case / "predictions.csv"
        prediction = worker.run({"op": "predict", "model_dir": str(model_dir), "data_dir": str(data_dir),
                                 "out": str(csv_path)}, args.deadline)
        t2 = time.monotonic()
        if not prediction.get("ok"):
            problems.append(f"prediction: {prediction}")
        else:
            problems += check_prediction(folder, ingestion if ingestion.get("ok") else {}, csv_path, prediction)
            report["predicted_rows"] += prediction["files"] - prediction["errors"]
        report["iterations"] += 1
        report["entries"] += len(folder.expected)
        report["step_seconds"].append([round(t1 - t0, 1), round(t2 - t1, 1)])
        if ingestion.get("ok"):
            report["ingested"] += len(ingestion["ingested"])
            report["quarantined"].update(e["reason"] for e in ingestion["quarantine"])
        _unblock_fifos(case)
        if problems:
            report["failures"].append({"seed": seed, "problems": problems[:20]})
            shutil.move(str(case), str(out / "failures" / case.name))
            print(f"iteration {iteration} (seed {seed}): {len(problems)} problem(s): {problems[0]}", flush=True)
        else:
            shutil.rmtree(case, ignore_errors=True)
        iteration += 1
        if iteration % 5 == 0:
            print(f"{iteration} iterations, {report['entries']} entries, {len(report['failures'])} failing, "
                  f"{(time.monotonic() - started) / 60:.1f} min", flush=True)
    worker.stop()
    steps = report.pop("step_seconds")
    report["quarantined"] = dict(sorted(report["quarantined"].items()))
    report["max_step_seconds"] = {"ingest": max((s[0] for s in steps), default=0),
                                  "predict": max((s[1] for s in steps), default=0)}
    report["minutes_run"] = round((time.monotonic() - started) / 60, 1)
    with open(out / "fuzz_report.json", "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    print(f"report: {out / 'fuzz_report.json'}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
