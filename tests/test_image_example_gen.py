"""The image ExampleGen: pure file checks and Executor().Do on a tiny folder."""

import gzip
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tfx.types import artifact_utils, standard_artifacts

from components.image_example_gen import executor, ingest
from pipeline import labels

PATTERN = labels.compile_pattern(labels.UTKFACE_PATTERN)


def _image_bytes(seed: int, fmt: str = "JPEG", mode: str = "RGB", size=(40, 40)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(*size[::-1], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, format=fmt)
    return out.getvalue()


def _name(age: int, gender: int, race: int, i: int) -> str:
    return f"{age}_{gender}_{race}_2017011617452{i:04d}.jpg.chip.jpg"


def test_check_file_good_jpeg():
    result = ingest.check_file("/d/x", _name(30, 1, 2, 1), _image_bytes(0), PATTERN)
    assert isinstance(result, tf.train.Example)
    f = result.features.feature
    assert f["age"].int64_list.value == [30] and f["gender"].int64_list.value == [1]
    assert f["race"].int64_list.value == [2]
    assert f["filename"].bytes_list.value == [_name(30, 1, 2, 1).encode()]


@pytest.mark.parametrize(("mode", "fmt"), [("L", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"), ("L", "JPEG")])
def test_check_file_normalizes_to_rgb(mode, fmt):
    result = ingest.check_file("/d/x", _name(30, 1, 2, 1), _image_bytes(0, fmt, mode), PATTERN)
    data = result.features.feature["image_raw"].bytes_list.value[0]
    assert tf.io.decode_image(data).shape[-1] == 3 or Image.open(io.BytesIO(data)).mode == "RGB"
    assert Image.open(io.BytesIO(data)).mode == "RGB"


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("39_1_20170116174525125.jpg.chip.jpg", b"jpeg", "name_mismatch"),
        ("130_1_2_20170116174525125.jpg.chip.jpg", b"jpeg", "age_out_of_range"),
        (_name(30, 1, 2, 1), b"", "empty_file"),
        (_name(30, 1, 2, 1), b"this is not an image at all", "not_an_image"),
        (_name(30, 1, 2, 1), _image_bytes(0)[:200], "undecodable_image"),  # truncated
        (".DS_Store", b"x", "hidden_file"),
    ],
)
def test_check_file_quarantines_with_reason(name, data, reason):
    result = ingest.check_file("/d/" + name, name, data, PATTERN)
    assert isinstance(result, ingest.QuarantineEntry)
    assert result.reason == reason
    assert result.path == "/d/" + name and result.message


def test_check_file_refuses_oversized_images():
    result = ingest.check_file("/d/x", _name(30, 1, 2, 1), _image_bytes(0, size=(100, 100)), PATTERN, max_pixels=5000)
    assert isinstance(result, ingest.QuarantineEntry) and result.reason == "image_too_large"


def _run_executor(data_dir: str, out_dir: str) -> standard_artifacts.Examples:
    return executor.run_on_folder(data_dir, out_dir)


def _read_split(uri: str, split: str) -> list[tf.train.Example]:
    files = tf.io.gfile.glob(os.path.join(uri, f"Split-{split}", "*"))
    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_executor_ingests_or_quarantines_every_file(tmp_path):
    data_dir = tmp_path / "data"
    (data_dir / "nested").mkdir(parents=True)
    good = {_name(20 + i, i % 2, i % 5, i): _image_bytes(i) for i in range(20)}
    for name, data in good.items():
        (data_dir / name).write_bytes(data)
    (data_dir / "nested" / _name(70, 0, 4, 99)).write_bytes(_image_bytes(99, "PNG", "L"))
    bad = {
        "53__0_20170116184028385.jpg.chip.jpg": _image_bytes(100),
        _name(30, 1, 2, 200): b"",
        _name(31, 1, 2, 201): b"not an image",
        ".hidden": b"x",
    }
    for name, data in bad.items():
        (data_dir / name).write_bytes(data)

    examples = _run_executor(str(data_dir), str(tmp_path / "out"))

    assert artifact_utils.decode_split_names(examples.split_names) == ["train", "eval"]
    train, evaluation = _read_split(examples.uri, "train"), _read_split(examples.uri, "eval")
    assert len(train) + len(evaluation) == len(good) + 1
    assert len(evaluation) >= 1 and len(train) > len(evaluation)
    names = {e.features.feature["filename"].bytes_list.value[0].decode() for e in train + evaluation}
    assert names == set(good) | {f"nested/{_name(70, 0, 4, 99)}"}

    entries = ingest.read_quarantine(examples.uri)
    assert sorted(os.path.basename(e["path"]) for e in entries) == sorted(bad)
    assert {e["reason"] for e in entries} == {"name_mismatch", "empty_file", "not_an_image", "hidden_file"}
    with open(os.path.join(examples.uri, ingest.QUARANTINE_FILE)) as f:
        assert all(set(json.loads(line)) == {"path", "reason", "message"} for line in f)
    assert examples.get_int_custom_property("quarantined") == len(bad)
    # Written as gzip of stored blocks: any gzip reader reads it, and nothing was deflated.
    for path in tf.io.gfile.glob(os.path.join(examples.uri, "Split-*", "*.gz")):
        with gzip.open(path, "rb") as f:
            raw = f.read()
        assert raw and os.path.getsize(path) >= len(raw)


def test_split_is_stable_across_runs(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for i in range(15):
        (data_dir / _name(20 + i, i % 2, i % 5, i)).write_bytes(_image_bytes(i))
    first = _run_executor(str(data_dir), str(tmp_path / "a"))
    second = _run_executor(str(data_dir), str(tmp_path / "b"))

    def eval_names(ex):
        return sorted(e.features.feature["filename"].bytes_list.value[0] for e in _read_split(ex.uri, "eval"))

    assert eval_names(first) == eval_names(second)
