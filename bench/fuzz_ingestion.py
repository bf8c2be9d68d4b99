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

This file holds the worker, the checks and the loop; fuzz_folders.py generates the folders.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from pathlib import Path

from fuzz_folders import DECOYS, INGESTED, MAX_FILE_BYTES, MAX_PIXELS, Folder, generate, random_image  # sibling

REPO_ROOT = Path(__file__).resolve().parent.parent
SENTINEL = "FUZZ-DONE"


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

    def __init__(self, work: Path) -> None:
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
        (decoy / "30_1_2_20170116174525125.jpg.chip.jpg").write_bytes(random_image(rng))  # never to be read
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
