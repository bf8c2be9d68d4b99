"""Every kind of bad file is quarantined with its own reason; odd but valid images are ingested as RGB.

All files are generated here; nothing binary is committed.
"""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tfx.types import standard_artifacts

from components import images
from components.base import labels
from components.image_example_gen import executor, ingest

PATTERN = labels.compile_pattern(labels.UTKFACE_PATTERN)


def _pixels(seed: int, size=(32, 24)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def _image(seed: int = 0, fmt: str = "JPEG", mode: str = "RGB", size=(32, 24)) -> bytes:
    return _encode(Image.fromarray(_pixels(seed, size)).convert(mode), fmt)


def _name(age: int = 30, gender: int = 1, race: int = 2, i: int = 1) -> str:
    return f"{age}_{gender}_{race}_2017011617452{i:04d}.jpg.chip.jpg"


def _reason(name: str, data: bytes, **kwargs) -> str:
    result = ingest.check_file("/data/" + name, name, data, PATTERN, **kwargs)
    assert isinstance(result, ingest.QuarantineEntry), f"{name} was ingested"
    assert result.path == "/data/" + name and result.message
    return result.reason


# --- names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "39_1_20170116174525125.jpg.chip.jpg",  # missing field
        "39_1_2_3_20170116174525125.jpg.chip.jpg",  # extra field
        "53__0_20170116184028385.jpg.chip.jpg",  # empty field
        "39_1_2_20170116174525125",  # no extension
        "39_1_2_20170116174525125.jpg.chip.jpg.jpg",  # double extension typo
        "39_1_2_20170116174525125.jpg.jpg",  # wrong double extension
        "61_1_3_20170109150557335jpg.chip.jpg",  # missing dot
        "39_1_2_ 20170116174525125.jpg.chip.jpg",  # stray space
        "39 _1_2_20170116174525125.jpg.chip.jpg",  # stray space
        "photo.jpg",
    ],
)
def test_names_not_matching_the_pattern(name):
    assert _reason(name, _image()) == "name_mismatch"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (_name(age=117), "age_out_of_range"),
        (_name(gender=2), "gender_out_of_range"),
        (_name(race=5), "race_out_of_range"),
    ],
)
def test_labels_out_of_range(name, reason):
    assert _reason(name, _image()) == reason


def test_hidden_files_and_files_in_hidden_folders():
    assert _reason(".DS_Store", b"x") == "hidden_file"
    assert _reason("._" + _name(), _image()) == "hidden_file"
    result = ingest.check_file("/d/.thumbs/" + _name(), ".thumbs/" + _name(), _image(), PATTERN)
    assert isinstance(result, ingest.QuarantineEntry) and result.reason == "hidden_file"
    assert ".thumbs" in result.message


# --- bytes ------------------------------------------------------------------------------------------


def test_zero_byte_file():
    assert _reason(_name(), b"") == "empty_file"


@pytest.mark.parametrize(
    "data",
    [
        _image(0)[:200],  # truncated inside the header
        _image(0)[: len(_image(0)) // 2],  # truncated inside the pixel data
        _image(0)[: len(_image(0)) * 9 // 10],  # ... near its end (validation decodes at reduced scale)
        _image(0, "PNG")[:100],
        b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,  # a JPEG signature, then garbage
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
    ],
)
def test_truncated_or_corrupt_images(data):
    assert _reason(_name(), data) == "undecodable_image"


@pytest.mark.parametrize(
    "data",
    [b"this is not an image at all", b"%PDF-1.4\n%...", b"<html><body>403 Forbidden</body></html>", b"\x00" * 50],
)
def test_non_images_with_an_image_extension(data):
    assert _reason(_name(), data) == "not_an_image"


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (_image(0, "TIFF"), "TIFF"),
        (_image(0, "PPM"), "PPM"),
        (_image(0, "ICO"), "ICO"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "HEIC"),
        (b"<?xml version='1.0'?>\n<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
    ],
)
def test_unsupported_formats(data, fmt):
    result = ingest.check_file("/d/x", _name(), data, PATTERN)
    assert isinstance(result, ingest.QuarantineEntry) and result.reason == "unsupported_format"
    assert fmt in result.message and "JPEG" in result.message


def test_images_too_large_to_decode_safely():
    assert _reason(_name(), _image(0, size=(100, 100)), max_pixels=5000) == "image_too_large"


def test_files_too_large_are_not_read_whole(tmp_path):
    path = tmp_path / _name()
    path.write_bytes(_image(0, size=(64, 64)))
    result = ingest.read_bounded(str(path), path.name, max_bytes=100)
    assert isinstance(result, ingest.QuarantineEntry) and result.reason == "file_too_large"
    assert ingest.read_bounded(str(path), path.name) == path.read_bytes()
    missing = ingest.read_bounded(str(tmp_path / "gone.jpg"), "gone.jpg")
    assert isinstance(missing, ingest.QuarantineEntry) and missing.reason == "unreadable_file"


# --- odd but valid images ---------------------------------------------------------------------------


def _cmyk_jpeg() -> bytes:
    return _encode(Image.fromarray(_pixels(1)).convert("CMYK"), "JPEG")


def _palette_png_with_transparency() -> bytes:
    image = Image.fromarray(_pixels(2)).convert("P")
    return _encode(image, "PNG", transparency=0)


def _gray16_png() -> bytes:
    arr = (np.arange(32 * 24, dtype=np.uint16).reshape(24, 32) * 80).astype(np.uint16)
    return _encode(Image.fromarray(arr, "I;16"), "PNG")


def _rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return _encode(Image.fromarray(_pixels(3, size=(40, 20))), "JPEG", exif=exif)


@pytest.mark.parametrize(
    "data",
    [
        _image(0, "JPEG", "L"),
        _image(0, "PNG", "L"),
        _image(0, "PNG", "RGBA"),
        _image(0, "PNG", "LA"),
        _image(0, "PNG", "RGB"),
        _cmyk_jpeg(),
        _palette_png_with_transparency(),
        _gray16_png(),
        _image(0, "BMP"),
        _image(0, "GIF", "P"),
        _image(0, "WEBP"),
    ],
    ids=["gray-jpeg", "gray-png", "rgba-png", "la-png", "rgb-png", "cmyk-jpeg", "palette-png", "gray16-png",
         "bmp", "gif", "webp"],
)
def test_decodable_images_are_ingested_as_three_channel_rgb(data):
    result = ingest.check_file("/d/x", _name(), data, PATTERN)
    assert isinstance(result, tf.train.Example), result
    encoded = result.features.feature[labels.IMAGE_KEY].bytes_list.value[0]
    decoded = tf.io.decode_image(encoded, expand_animations=False)
    assert decoded.shape == (24, 32, 3) and decoded.dtype == tf.uint8
    assert Image.open(io.BytesIO(encoded)).format in ("JPEG", "PNG")


def test_rgb_jpeg_bytes_pass_through_unchanged():
    data = _image(5)
    result = ingest.check_file("/d/x", _name(), data, PATTERN)
    assert result.features.feature[labels.IMAGE_KEY].bytes_list.value[0] == data


def test_exif_orientation_is_applied():
    result = ingest.check_file("/d/x", _name(), _rotated_jpeg(), PATTERN)
    encoded = result.features.feature[labels.IMAGE_KEY].bytes_list.value[0]
    assert tf.io.decode_image(encoded).shape == (40, 20, 3)  # was 20 high, 40 wide


def test_transparent_pixels_become_white():
    rgba = np.zeros((24, 32, 4), dtype=np.uint8)  # fully transparent black
    result = ingest.check_file("/d/x", _name(), _encode(Image.fromarray(rgba, "RGBA"), "PNG"), PATTERN)
    decoded = tf.io.decode_image(result.features.feature[labels.IMAGE_KEY].bytes_list.value[0]).numpy()
    assert decoded.min() > 240


def test_sniff_format():
    assert images.sniff_format(_image(0)) == "JPEG"
    assert images.sniff_format(_image(0, "PNG")) == "PNG"
    assert images.sniff_format(_image(0, "WEBP")) == "WEBP"
    assert images.sniff_format(_image(0, "TIFF")) == "TIFF"
    assert images.sniff_format(_image(0, "BMP")) == "BMP"
    assert images.sniff_format(b"BMW owners club newsletter, issue 7") is None
    assert images.sniff_format(b"hello") is None


# --- listing: links, special files ------------------------------------------------------------------


def test_find_files_accounts_for_links_and_special_files(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / _name(i=9)).write_bytes(_image(9))
    (data / "sub" / _name(i=1)).write_bytes(_image(1))
    os.symlink(outside / _name(i=9), data / _name(i=2))  # file outside
    os.symlink(outside, data / "linked_outside")  # folder outside
    os.symlink(data / "sub", data / "linked_inside")  # folder inside
    os.symlink(data, data / "sub" / "loop")  # a cycle: must not hang
    os.symlink(data / "sub" / _name(i=1), data / _name(i=3))  # file inside: read like a file
    os.symlink(tmp_path / "nowhere", data / _name(i=4))  # broken
    os.mkfifo(data / _name(i=5))  # reading it would block forever

    found = {f.relative: f for f in ingest.find_files(str(data))}

    reasons = {rel: (f.issue.reason if f.issue else None) for rel, f in found.items()}
    assert reasons == {
        f"sub/{_name(i=1)}": None,
        _name(i=2): "symlink_outside_data_dir",
        "linked_outside": "symlink_outside_data_dir",
        "linked_inside": "symlinked_directory",
        "sub/loop": "symlinked_directory",
        _name(i=3): None,
        _name(i=4): "broken_symlink",
        _name(i=5): "not_a_regular_file",
    }
    assert all(f.issue is None or f.issue.path == f.path for f in found.values())


def test_find_files_reads_remote_paths_through_gfile():
    root = "ram://facepipe-test-remote"
    tf.io.gfile.makedirs(f"{root}/a/b")
    for path in (f"{root}/x.jpg", f"{root}/a/y.jpg", f"{root}/a/b/z.jpg"):
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(b"1")
    found = ingest.find_files(root)
    assert [f.relative for f in found] == ["a/b/z.jpg", "a/y.jpg", "x.jpg"]
    assert all(f.path.startswith("ram://") and f.issue is None for f in found)


# --- the executor: every file accounted for ---------------------------------------------------------


def run_executor(data_dir: str, out_dir: str, **props) -> standard_artifacts.Examples:
    """Runs ImageExampleGen's executor as its driver would for a flat folder; returns the Examples."""
    return executor.run_on_folder(data_dir, out_dir, **props)


def read_examples(uri: str) -> list[tf.train.Example]:
    """All examples of both splits."""
    files = tf.io.gfile.glob(os.path.join(uri, "Split-*", "*.gz"))
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_executor_accounts_for_every_file(tmp_path):
    data, outside = tmp_path / "data", tmp_path / "outside"
    (data / "nested" / "deeper").mkdir(parents=True)
    (data / ".cache").mkdir()
    outside.mkdir()
    good = {
        _name(20, 0, 0, 1): _image(1),
        f"nested/{_name(21, 1, 1, 2)}": _image(2, "PNG", "L"),
        f"nested/deeper/{_name(22, 0, 2, 3)}": _image(3, "PNG", "RGBA"),
        _name(23, 1, 3, 4): _cmyk_jpeg(),
        _name(24, 0, 4, 5): _image(5, "BMP"),
        # one image, three names: the smallest relative path is kept, the others are duplicates
        _name(25, 1, 0, 6): _image(6),
    }
    duplicates = {f"nested/{_name(25, 1, 0, 7)}": _image(6), f"nested/deeper/{_name(25, 1, 0, 8)}": _image(6)}
    bad = {
        "53__0_20170116184028385.jpg.chip.jpg": (_image(10), "name_mismatch"),
        "39_1_2_20170116174525125": (_image(11), "name_mismatch"),
        _name(117, 0, 0, 12): (_image(12), "age_out_of_range"),
        _name(30, 2, 0, 13): (_image(13), "gender_out_of_range"),
        _name(30, 0, 5, 14): (_image(14), "race_out_of_range"),
        _name(30, 0, 0, 15): (b"", "empty_file"),
        _name(30, 0, 0, 16): (b"", "empty_file"),  # two empty files are not duplicates of each other
        _name(30, 0, 0, 17): (_image(17)[:300], "undecodable_image"),
        _name(30, 0, 0, 18): (b"<html>not found</html>", "not_an_image"),
        _name(30, 0, 0, 19): (_image(19, "TIFF"), "unsupported_format"),
        _name(30, 0, 0, 20): (_image(20, size=(300, 300)), "image_too_large"),
        ".DS_Store": (b"x", "hidden_file"),
        f".cache/{_name(30, 0, 0, 21)}": (_image(21), "hidden_file"),
    }
    for rel, payload in {**good, **duplicates, **{k: v[0] for k, v in bad.items()}}.items():
        (data / rel).write_bytes(payload)
    (outside / "secret.jpg").write_bytes(_image(30))
    os.symlink(outside / "secret.jpg", data / _name(30, 0, 0, 22))
    os.symlink(data / _name(20, 0, 0, 1), data / "nested" / _name(20, 0, 0, 23))  # a link inside: a duplicate
    expected_reasons = {
        **{rel: reason for rel, (_, reason) in bad.items()},
        **dict.fromkeys(duplicates, "duplicate"),
        _name(30, 0, 0, 22): "symlink_outside_data_dir",
        f"nested/{_name(20, 0, 0, 23)}": "duplicate",
    }

    examples = run_executor(str(data), str(tmp_path / "out"), **{executor.MAX_IMAGE_PIXELS_KEY: 200 * 200})

    ingested = {e.features.feature["filename"].bytes_list.value[0].decode() for e in read_examples(examples.uri)}
    assert ingested == set(good)
    entries = ingest.read_quarantine(examples.uri)
    quarantined = {os.path.relpath(e["path"], data): e["reason"] for e in entries}
    assert quarantined == expected_reasons
    assert len(entries) == len(quarantined)  # each file once
    assert all(set(e) == {"path", "reason", "message"} and e["message"] for e in entries)
    kept = [e for e in entries if e["path"].endswith(_name(25, 1, 0, 7))][0]
    assert _name(25, 1, 0, 6) in kept["message"]  # names the file kept
    total = len(good) + len(duplicates) + len(bad) + 2
    assert examples.get_int_custom_property(executor.FILES_FOUND_PROPERTY) == total
    assert examples.get_int_custom_property(executor.QUARANTINED_PROPERTY) == len(expected_reasons)
    assert len(ingested) + len(entries) == total
    assert not examples.has_custom_property(executor.FIRST_SPAN_PROPERTY)
    with open(os.path.join(examples.uri, ingest.QUARANTINE_FILE)) as f:
        lines = [json.loads(line) for line in f]
    assert [e["path"] for e in lines] == sorted(e["path"] for e in lines)  # a stable file


def test_executor_reads_remote_paths(tmp_path):
    root = "ram://facepipe-test-executor"
    tf.io.gfile.makedirs(f"{root}/sub")
    files = {f"{root}/{_name(i=1)}": _image(1), f"{root}/sub/{_name(i=2)}": _image(2), f"{root}/bad.jpg": _image(3)}
    for path, payload in files.items():
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(payload)
    examples = run_executor(root, str(tmp_path / "out"))
    names = sorted(e.features.feature["filename"].bytes_list.value[0].decode() for e in read_examples(examples.uri))
    assert names == sorted([_name(i=1), f"sub/{_name(i=2)}"])
    assert [(e["path"], e["reason"]) for e in ingest.read_quarantine(examples.uri)] == [
        (f"{root}/bad.jpg", "name_mismatch")
    ]


def test_executor_on_a_folder_with_nothing_to_ingest(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "readme.txt").write_text("hello")
    os.symlink(tmp_path / "nowhere", data / _name())
    examples = run_executor(str(data), str(tmp_path / "out"))
    assert read_examples(examples.uri) == []
    assert sorted(e["reason"] for e in ingest.read_quarantine(examples.uri)) == ["broken_symlink", "name_mismatch"]
    assert examples.get_int_custom_property(executor.FILES_FOUND_PROPERTY) == 2
    for split in ("train", "eval"):  # empty splits exist, so StatisticsGen runs and the schema's presence check fires
        assert tf.io.gfile.glob(os.path.join(examples.uri, f"Split-{split}", "*.gz"))
