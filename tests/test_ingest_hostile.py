"""Hostile and unlucky inputs to ingestion: each is quarantined with a reason, never a crash or a hang.

Corrupt PNG checksums, names that are not UTF-8, glob characters in the data folder's path, links
to FIFOs and sockets, non-ASCII digits, NFC/NFD names, identical images with conflicting labels.
"""

import contextlib
import io
import os
import socket
import threading
import unicodedata

import numpy as np
import pytest
from PIL import Image

from components import images
from components.base import labels
from components.image_example_gen import executor, ingest
from tests.test_ingest_bad_files import _image, _name, read_examples

PATTERN = labels.compile_pattern(labels.UTKFACE_PATTERN)


def _png_with_corrupt_idat_crc(seed: int = 0) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(out, "PNG")
    data = bytearray(out.getvalue())
    idat = data.index(b"IDAT")
    length = int.from_bytes(data[idat - 4 : idat], "big")
    data[idat + 4 + length] ^= 0x01  # one bit of the chunk's CRC
    return bytes(data)


def _ingested(examples) -> set[str]:
    return {e.features.feature["filename"].bytes_list.value[0].decode() for e in read_examples(examples.uri)}


def _accounted(examples) -> tuple[set[str], list[dict[str, str]]]:
    """(ingested names, quarantine entries); asserts that every file found is one or the other."""
    ingested, entries = _ingested(examples), ingest.read_quarantine(examples.uri)
    assert len(ingested) + len(entries) == examples.get_int_custom_property(executor.FILES_FOUND_PROPERTY)
    return ingested, entries


# --- bytes --------------------------------------------------------------------------------------------


def test_png_with_a_corrupt_idat_checksum_is_quarantined():
    data = _png_with_corrupt_idat_crc()
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # PIL does not check IDAT checksums: it was ingested byte for byte
    result = ingest.check_file("/d/x", _name(), data, PATTERN)
    assert isinstance(result, ingest.QuarantineEntry) and result.reason == "undecodable_image"
    assert "TensorFlow" in result.message


def test_executor_quarantines_the_corrupt_png_instead_of_failing_the_trainer(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / _name(i=1)).write_bytes(_png_with_corrupt_idat_crc())
    (data / _name(i=2)).write_bytes(_image(2, "PNG"))
    ingested, entries = _accounted(executor.run_on_folder(str(data), str(tmp_path / "out")))
    assert ingested == {_name(i=2)}
    assert [(os.path.basename(e["path"]), e["reason"]) for e in entries] == [(_name(i=1), "undecodable_image")]


# --- names that are not UTF-8 -------------------------------------------------------------------------


def test_names_that_are_not_utf8_are_quarantined_at_any_depth(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    root = os.fsencode(data)
    good = f"sub/{_name(i=1)}"
    (data / good).write_bytes(_image(1))
    bad = [b"\xff" + _name(i=2).encode(), b"sub/" + _name(i=3).encode()[:-4] + b"\xfe.jpg",
           b"\xfe\xfd/" + _name(i=4).encode(), b"\xfe\xfd/deeper/" + _name(i=5).encode()]
    os.makedirs(root + b"/\xfe\xfd/deeper")
    for i, rel in enumerate(bad):
        with open(root + b"/" + rel, "wb") as f:
            f.write(_image(10 + i))
    os.symlink(os.fsencode(data / good), root + b"/link\xff.jpg")
    os.mkfifo(root + b"/pipe\xff.jpg")

    found = ingest.find_files(str(data))
    assert sorted(f.issue.reason if f.issue else "ok" for f in found) == ["non_utf8_name"] * 6 + ["ok"]
    assert all(f.path.encode("utf-8") and f.relative.encode("utf-8") for f in found)  # nothing unencodable

    examples = executor.run_on_folder(str(data), str(tmp_path / "out"))
    ingested, entries = _accounted(examples)
    assert ingested == {good}
    assert sorted(e["reason"] for e in entries) == ["non_utf8_name"] * 6
    assert any("\\xfe\\xfd/deeper/" in e["path"] for e in entries)  # the bytes are shown, escaped
    with open(os.path.join(examples.uri, ingest.QUARANTINE_FILE), "rb") as f:
        f.read().decode("utf-8")  # a valid UTF-8 file


# --- glob characters in the data folder's path -------------------------------------------------------


@pytest.mark.parametrize("name", ["faces[1]", "faces*", "faces?", "fa[!c]es"])
def test_glob_characters_in_the_data_folder_are_literal(tmp_path, name):
    real, sibling = tmp_path / name, tmp_path / "faces1"
    real.mkdir()
    sibling.mkdir(exist_ok=True)
    (real / _name(i=1)).write_bytes(_image(1))
    (sibling / _name(i=2)).write_bytes(_image(2))  # what the unescaped pattern faces[1] matches
    assert [f.relative for f in ingest.find_files(str(real))] == [_name(i=1)]
    examples = executor.run_on_folder(str(real), str(tmp_path / "out"))
    assert _ingested(examples) == {_name(i=1)}


def test_glob_characters_in_a_remote_data_folder_are_literal():
    import tensorflow as tf

    base = "ram://facepipe-glob-test"
    for path in (f"{base}/faces[1]/{_name(i=1)}", f"{base}/faces1/{_name(i=2)}"):
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(b"x")
    assert [f.relative for f in ingest.find_files(f"{base}/faces[1]")] == [_name(i=1)]


# --- FIFOs, sockets and devices, also behind links ---------------------------------------------------


def _read_in_thread(path: str, relative: str) -> tuple[threading.Thread, list]:
    result: list = []
    thread = threading.Thread(target=lambda: result.append(ingest.read_bounded(path, relative)), daemon=True)
    thread.start()
    return thread, result


def _unblock(fifo: str) -> None:
    """Lets a reader blocked on the FIFO (the code before the fix) return: a writer opens and closes it."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader waiting


def test_links_to_fifos_and_sockets_are_not_opened(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    fifo = data / "pipe"
    os.mkfifo(fifo)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(data / "sock"))
    os.symlink(fifo, data / _name(i=1))
    os.symlink(data / "sock", data / _name(i=2))
    (data / _name(i=3)).write_bytes(_image(3))
    try:
        reasons = {f.relative: f.issue.reason if f.issue else None for f in ingest.find_files(str(data))}
        assert reasons == {"pipe": "not_a_regular_file", "sock": "not_a_regular_file",
                           _name(i=1): "not_a_regular_file", _name(i=2): "not_a_regular_file", _name(i=3): None}
        thread, result = _read_in_thread(str(data / _name(i=1)), _name(i=1))
        thread.join(timeout=20)
        assert not thread.is_alive(), "reading a link to a FIFO blocked"
        assert isinstance(result[0], ingest.QuarantineEntry) and result[0].reason == "not_a_regular_file"
        assert "pipe" in result[0].message

        ingested, entries = _accounted(executor.run_on_folder(str(data), str(tmp_path / "out")))
        assert ingested == {_name(i=3)}
        assert sorted(e["reason"] for e in entries) == ["not_a_regular_file"] * 4
    finally:
        _unblock(str(fifo))
        server.close()


def test_read_file_never_blocks_on_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    try:
        done: list = []

        def read() -> None:
            try:
                images.read_file(str(fifo))
            except images.Rejected as e:
                done.append(e.reason)

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        thread.join(timeout=20)
        assert not thread.is_alive() and done == ["not_a_regular_file"]
    finally:
        _unblock(str(fifo))


# --- names the parser refuses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "٢٥_1_2_20170116174525125.jpg.chip.jpg",  # Arabic-Indic digits: int() reads 25
        "２５_1_2_20170116174525125.jpg.chip.jpg",  # fullwidth digits
        "25_1_2_٢٠١٧٠١١٦١٧٤٥٢٥١٢٥.jpg.chip.jpg",  # in the date
        "25_1_2_20170116174525125.jpg.chip.jpg\n",  # "$" matches before a trailing newline
    ],
)
def test_non_ascii_digits_and_a_trailing_newline_are_refused(name):
    with pytest.raises(labels.FilenameError) as info:
        labels.parse_filename(name)
    assert info.value.reason == "name_mismatch"


def test_a_custom_pattern_whose_group_int_rejects_is_a_quarantine_entry_not_a_crash(tmp_path):
    pattern = r"(?P<age>[^_]+)_(?P<gender>\d)_(?P<race>\d)\.jpg"
    for name in ("²_1_2.jpg", "٣٠_1_2.jpg", "30_1_2.jpg"):
        with pytest.raises(labels.FilenameError) if name != "30_1_2.jpg" else contextlib.nullcontext():
            labels.parse_filename(name, labels.compile_pattern(pattern))
    data = tmp_path / "data"
    data.mkdir()
    (data / "²_1_2.jpg").write_bytes(_image(1))
    (data / "30_1_2.jpg").write_bytes(_image(2))
    examples = executor.run_on_folder(str(data), str(tmp_path / "out"), **{executor.FILENAME_PATTERN_KEY: pattern})
    ingested, entries = _accounted(examples)
    assert ingested == {"30_1_2.jpg"} and [e["reason"] for e in entries] == ["name_mismatch"]


def test_a_pattern_with_an_inline_unicode_flag_is_a_one_line_error():
    with pytest.raises(ValueError, match="not a valid regex"):
        labels.compile_pattern(r"(?u)(?P<age>\d+)_(?P<gender>\d)_(?P<race>\d)")


# --- Unicode normalisation ----------------------------------------------------------------------------


def test_relative_paths_are_stored_in_nfc_and_equal_names_are_duplicates(tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    data = tmp_path / "data"
    (data / nfd).mkdir(parents=True)
    (data / nfd / _name(i=1)).write_bytes(_image(1))  # as a folder copied through macOS arrives
    (data / nfd / _name(i=2)).write_bytes(_image(2))
    (data / nfc).mkdir()
    (data / nfc / _name(i=2)).write_bytes(_image(3))  # other bytes, same name once normalised

    found = ingest.find_files(str(data))
    assert sorted(f.relative for f in found) == sorted([f"{nfc}/{_name(i=1)}", *[f"{nfc}/{_name(i=2)}"] * 2])
    examples = executor.run_on_folder(str(data), str(tmp_path / "out"))
    ingested, entries = _accounted(examples)
    assert ingested == {f"{nfc}/{_name(i=1)}", f"{nfc}/{_name(i=2)}"}
    assert [e["reason"] for e in entries] == ["duplicate_name"]


# --- identical bytes, conflicting labels --------------------------------------------------------------


def test_identical_images_with_conflicting_labels_are_all_quarantined(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    conflicting = [_name(30, 1, 2, 1), f"sub/{_name(31, 1, 2, 2)}", _name(30, 0, 2, 3)]
    agreeing = [_name(40, 0, 1, 4), f"sub/{_name(40, 0, 1, 5)}"]
    for rel in conflicting:
        (data / rel).write_bytes(_image(1))
    for rel in agreeing:
        (data / rel).write_bytes(_image(2))
    (data / _name(i=6)).write_bytes(_image(3))

    ingested, entries = _accounted(executor.run_on_folder(str(data), str(tmp_path / "out")))
    assert ingested == {agreeing[0], _name(i=6)}
    reasons = {os.path.relpath(e["path"], data): e["reason"] for e in entries}
    assert reasons == {**dict.fromkeys(conflicting, "conflicting_labels"), agreeing[1]: "duplicate"}
    message = next(e["message"] for e in entries if e["reason"] == "conflicting_labels")
    assert "age 30" in message and "age 31" in message



def test_deep_nesting_cannot_exhaust_the_recursion_limit(tmp_path):
    data = folder = tmp_path / "data"
    data.mkdir()
    levels = []
    try:
        for _ in range(1200):  # deeper than Python's default recursion limit (1000)
            folder = folder / "d"
            folder.mkdir()
            levels.append(folder)
        (folder / _name(i=1)).write_bytes(_image(1))
        found = ingest.find_files(str(data))
        assert [(f.relative, f.issue) for f in found] == [("d/" * 1200 + _name(i=1), None)]
    finally:
        # Removed here, deepest first: shutil.rmtree (pytest's clean-up of old tmp folders) recurses
        # once per level and would fail on this tree in a later session.
        (folder / _name(i=1)).unlink(missing_ok=True)
        for level in reversed(levels):
            level.rmdir()


def test_a_span_folder_linked_outside_the_data_folder_is_not_read(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "span-1").mkdir(parents=True)
    outside.mkdir()
    (data / "span-1" / _name(i=1)).write_bytes(_image(1))
    (outside / _name(i=2)).write_bytes(_image(2))
    os.symlink(outside, data / "span-2")
    for root, pattern in ((data / "span-2", "*"), (data, "span-2/*")):
        found = ingest.find_files(str(root), pattern, data_dir=str(data))
        assert [(f.issue.reason if f.issue else None) for f in found] == ["symlink_outside_data_dir"]
    assert [f.issue for f in ingest.find_files(str(data / "span-1"), "*", data_dir=str(data))] == [None]
