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

from components.base import labels
from components.image_example_gen import executor, ingest

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


# --- what a run ingested, and what the local cache key sees -----------------------------------------


def _folder(path, seeds=(1, 2, 3, 4, 5, 6)):
    path.mkdir(parents=True)
    for i, seed in enumerate(seeds):
        (path / _name(20 + i, i % 2, i % 5, i)).write_bytes(_image_bytes(seed))
    (path / "bad name.jpg").write_bytes(_image_bytes(9))
    return path


@pytest.mark.slow
def test_data_fingerprint_is_what_was_ingested_not_where_or_when(tmp_path):
    from components import artifact_properties
    from components.image_example_gen import driver

    def fingerprint(folder, out):
        return executor.run_on_folder(str(folder), str(tmp_path / out)).get_string_custom_property(
            artifact_properties.DATA_FINGERPRINT
        )

    first = _folder(tmp_path / "a")
    copy = _folder(tmp_path / "b")  # the same files elsewhere, written later
    key = driver.data_folder_key(_exec_properties(first))
    base = fingerprint(first, "o1")
    assert len(base) == 64 and fingerprint(copy, "o2") == base
    os.utime(first / _name(20, 0, 0, 0), (1, 1))  # only a file time changes
    assert fingerprint(first, "o3") == base
    assert driver.data_folder_key(_exec_properties(first)) != key  # the local cache key does see it
    (first / _name(20, 0, 0, 0)).write_bytes(_image_bytes(77))  # the same name, another image
    assert fingerprint(first, "o4") != base
    (copy / "nested").mkdir()
    (copy / "nested" / _name(50, 1, 1, 9)).write_bytes(_image_bytes(8))  # a new file two folders deep
    assert fingerprint(copy, "o5") != base
    (copy / "nested" / _name(50, 1, 1, 9)).unlink()
    (copy / "notes.txt").write_text("not an image")  # only the quarantine list changes
    assert fingerprint(copy, "o6") != base


def _exec_properties(folder) -> dict:
    from tfx.components.example_gen import utils
    from tfx.proto import example_gen_pb2
    from tfx.utils import proto_utils

    return {
        "input_base": str(folder),
        "input_config": proto_utils.proto_to_json(utils.make_default_input_config()),
        "output_config": proto_utils.proto_to_json(example_gen_pb2.Output()),
        executor.SPANS_KEY: "",
    }


def test_the_executor_resolves_the_span_without_a_driver(tmp_path):
    from tfx.components.example_gen import utils
    from tfx.utils import proto_utils

    from components.image_example_gen.component import span_input_config

    data = tmp_path / "data"
    _folder(data / "span-1", seeds=(1, 2))
    _folder(data / "span-2", seeds=(3, 4, 5))
    input_config, range_config = span_input_config("latest")
    overrides = {"input_config": proto_utils.proto_to_json(input_config), executor.SPANS_KEY: "latest"}
    latest = executor.run_on_folder(str(data), str(tmp_path / "o1"), **overrides)
    assert latest.get_int_custom_property(utils.SPAN_PROPERTY_NAME) == 2
    assert latest.get_int_custom_property(executor.FILES_FOUND_PROPERTY) == 4
    span_1 = '{"static_range": {"start_span_number": 1, "end_span_number": 1}}'
    one = executor.run_on_folder(str(data), str(tmp_path / "o2"), range_config=span_1, **overrides)
    assert one.get_int_custom_property(utils.SPAN_PROPERTY_NAME) == 1
    assert one.get_int_custom_property(executor.FILES_FOUND_PROPERTY) == 3
    with pytest.raises(ValueError, match="span 7 was requested"):
        executor.run_on_folder(
            str(data), str(tmp_path / "o3"),
            range_config='{"static_range": {"start_span_number": 7, "end_span_number": 7}}', **overrides,
        )
