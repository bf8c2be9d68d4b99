"""Span layout: selection parsing, folder resolution, and real runs of ImageExampleGen over span folders."""

import argparse
import os
import shutil

import pytest
import tensorflow as tf
from ml_metadata.metadata_store import metadata_store
from tfx import v1 as tfx
from tfx.components.example_gen import utils

from components import synthetic_data
from components.base import labels
from components.drift import LabelDriftCheck, LabelDriftReport, read_report
from components.image_example_gen import executor, ingest, spans
from components.image_example_gen.component import ImageExampleGen, span_input_config
from pipeline import cli
from pipeline.config import PipelineConfig
from tests.test_ingest_bad_files import _image, _name


@pytest.mark.parametrize(
    ("text", "first", "last", "latest", "is_range"),
    [("latest", None, None, True, False), ("3", 3, 3, False, False), ("2-5", 2, 5, False, True),
     ("4-4", 4, 4, False, False)],
)
def test_parse_span_selection(text, first, last, latest, is_range):
    selection = spans.parse_span_selection(text)
    assert (selection.first, selection.last, selection.is_latest, selection.is_range) == (first, last, latest, is_range)


@pytest.mark.parametrize("text", ["", "newest", "-1", "3-", "5-2", "1,2", "span-3", "٣", "３", "2-٥"])
def test_parse_span_selection_rejects(text):
    with pytest.raises(ValueError, match="span"):
        spans.parse_span_selection(text)


def test_find_spans(tmp_path):
    for name in ("span-1", "span-10", "span-2", "span-x", "other"):
        (tmp_path / name).mkdir()
    (tmp_path / "span-3").write_text("a file, not a span folder")
    assert spans.find_spans(str(tmp_path)) == {1: "span-1", 2: "span-2", 10: "span-10"}
    assert spans.previous_span(spans.find_spans(str(tmp_path)), 10) == 2
    assert spans.previous_span(spans.find_spans(str(tmp_path)), 1) is None
    assert spans.has_span_layout(str(tmp_path)) and not spans.has_span_layout(str(tmp_path / "other"))
    (tmp_path / "span-01").mkdir()
    with pytest.raises(ValueError, match="both name span 1"):
        spans.find_spans(str(tmp_path))


@pytest.mark.parametrize("name", ["span-3\n", "span-٣", "span-３", " span-3", "span-3 "])
def test_span_folder_names_are_ascii_and_whole(name):
    assert spans.span_number(name) is None
    assert spans.span_number("span-3") == 3


def test_resolve_roots(tmp_path):
    for n in (1, 2, 4):
        (tmp_path / f"span-{n}").mkdir()
    base = str(tmp_path)
    assert executor.resolve_roots(base, "*", "") == [(base, "*", None)]
    assert executor.resolve_roots(base, "span-2/*", "latest") == [(f"{base}/span-2", "*", 2)]
    assert executor.resolve_roots(base, "span-*/*", "2-9") == [(f"{base}/span-2", "*", 2), (f"{base}/span-4", "*", 4)]
    with pytest.raises(ValueError, match="no span folder for spans 5-9"):
        executor.resolve_roots(base, "span-*/*", "5-9")


def test_span_input_config():
    config, range_config = span_input_config("latest")
    assert config.splits[0].pattern == spans.SINGLE_SPAN_PATTERN and range_config is None
    config, range_config = span_input_config("3")
    assert config.splits[0].pattern == spans.SINGLE_SPAN_PATTERN
    assert range_config.static_range.start_span_number == range_config.static_range.end_span_number == 3
    config, range_config = span_input_config("2-4")
    assert config.splits[0].pattern == spans.ALL_SPANS_PATTERN and range_config is None


def _args(**flags) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_pipeline_flags(parser)
    return parser.parse_args([f"--{k.replace('_', '-')}={v}" for k, v in flags.items()])


def _config(args: argparse.Namespace, data_dir: str) -> PipelineConfig:
    return cli.config_from_args(args, data_dir=data_dir, pipeline_root="/r", serving_dir="/s", metadata_path=None)


def test_cli_detects_span_layout_and_checks_span_flags(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    layout = tmp_path / "layout"
    (layout / "span-1").mkdir(parents=True)
    (layout / "span-3").mkdir()
    assert _config(_args(), str(flat)).spans is None
    assert _config(_args(), str(layout)).spans == "latest"
    assert _config(_args(span="1-3"), str(layout)).spans == "1-3"
    assert _config(_args(max_label_drift=0.25), str(layout)).max_label_drift == 0.25
    with pytest.raises(ValueError, match="no span-<N> folders"):
        _config(_args(span="1"), str(flat))
    with pytest.raises(ValueError, match="no such span"):
        _config(_args(span="2"), str(layout))
    with pytest.raises(ValueError, match="not 'latest'"):
        _config(_args(span="newest"), str(layout))
    with pytest.raises(ValueError, match="max label drift"):
        _config(_args(max_label_drift=1.5), str(layout))


# --- real runs: ImageExampleGen (+ its driver) and LabelDriftCheck under LocalDagRunner ------------------


def _write_span(data_dir, span: int, num_images: int = 12, seed: int = 0) -> None:
    synthetic_data.generate(
        data_dir / f"span-{span}",
        synthetic_data.SyntheticSpec(num_images=num_images, seed=seed + span, balanced=True, image_size=48),
    )


def _run(root, data_dir, selection: str):
    """Runs ImageExampleGen + LabelDriftCheck; returns (Examples artifact, drift report)."""
    example_gen = ImageExampleGen(
        input_base=str(data_dir),
        filename_pattern=labels.UTKFACE_PATTERN,
        code_version="test",
        max_image_pixels=ingest.DEFAULT_MAX_IMAGE_PIXELS,
        output_config=tfx.proto.Output(
            split_config=tfx.proto.SplitConfig(
                splits=[tfx.proto.SplitConfig.Split(name="train", hash_buckets=2),
                        tfx.proto.SplitConfig.Split(name="eval", hash_buckets=1)],
                partition_feature_name="filename",
            )
        ),
        spans=selection,
    )
    drift = LabelDriftCheck(examples=example_gen.outputs["examples"], max_label_drift=0.1)
    metadata_path = str(root / "metadata.sqlite")
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="spans-test",
        pipeline_root=str(root / "pipeline_root"),
        components=[example_gen, drift],
        enable_cache=True,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path),
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)
    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
    )
    examples = max(store.get_artifacts_by_type("Examples"), key=lambda a: a.id)
    report = max(store.get_artifacts_by_type(LabelDriftReport.TYPE_NAME), key=lambda a: a.id)
    return examples, read_report(report.uri), len(store.get_artifacts_by_type("Examples"))


def _names(examples) -> dict[str, list[str]]:
    out = {}
    for split in ("train", "eval"):
        files = tf.io.gfile.glob(os.path.join(examples.uri, f"Split-{split}", "*.gz"))
        records = tf.data.TFRecordDataset(files, compression_type="GZIP")
        out[split] = sorted(
            tf.train.Example.FromString(r.numpy()).features.feature["filename"].bytes_list.value[0].decode()
            for r in records
        )
    return out


def _int(artifact, key):
    return artifact.custom_properties[key].int_value


@pytest.fixture(scope="module")
def span_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("spans")
    data = root / "data"
    _write_span(data, 1)
    _write_span(data, 2)
    # The same file name in two spans: its split must not depend on the span.
    (data / "span-1" / _name(33, 0, 1, 77)).write_bytes(_image(1))
    (data / "span-2" / _name(33, 0, 1, 77)).write_bytes(_image(2))
    runs = {"latest_of_2": _run(root, data, "latest")}
    runs["latest_again"] = _run(root, data, "latest")
    _write_span(data, 3)
    runs["latest_of_3"] = _run(root, data, "latest")
    runs["span_1"] = _run(root, data, "1")
    runs["range_1_2"] = _run(root, data, "1-2")
    return data, runs


def test_latest_span_is_read_with_names_relative_to_the_span(span_runs):
    data, runs = span_runs
    examples, report, _ = runs["latest_of_2"]
    assert _int(examples, utils.SPAN_PROPERTY_NAME) == 2
    assert (_int(examples, executor.FIRST_SPAN_PROPERTY), _int(examples, executor.LAST_SPAN_PROPERTY)) == (2, 2)
    names = _names(examples)
    assert sorted(names["train"] + names["eval"]) == sorted(
        p for p in os.listdir(data / "span-2") if labels.compile_pattern().match(p)
    )
    assert report["status"] == "ok" and report["previous_span"] == 1 and report["current_spans"] == [2]


def test_unchanged_span_is_cached_and_a_new_span_is_read(span_runs):
    _, runs = span_runs
    assert runs["latest_again"][2] == runs["latest_of_2"][2]  # no new Examples artifact: cached
    examples, report, count = runs["latest_of_3"]
    assert count == runs["latest_of_2"][2] + 1
    assert _int(examples, utils.SPAN_PROPERTY_NAME) == 3
    assert report["previous_span"] == 2


def test_given_span_and_first_span_has_no_drift_baseline(span_runs):
    _, runs = span_runs
    examples, report, _ = runs["span_1"]
    assert _int(examples, utils.SPAN_PROPERTY_NAME) == 1
    assert report["status"] == "skipped" and "first span" in report["message"]


def test_span_range_reads_every_span_in_it(span_runs):
    data, runs = span_runs
    examples, report, _ = runs["range_1_2"]
    assert (_int(examples, executor.FIRST_SPAN_PROPERTY), _int(examples, executor.LAST_SPAN_PROPERTY)) == (1, 2)
    assert _int(examples, utils.SPAN_PROPERTY_NAME) == 2
    names = _names(examples)
    total = len(names["train"]) + len(names["eval"])
    singles = sum(len(v) for v in _names(runs["span_1"][0]).values()) + sum(
        len(v) for v in _names(runs["latest_of_2"][0]).values()
    )
    assert total == singles
    assert report["status"] == "skipped"  # span 1 has no previous span


def test_split_of_a_file_is_the_same_in_every_span(span_runs):
    _, runs = span_runs
    target = _name(33, 0, 1, 77)
    splits = {
        key: next(s for s, names in _names(runs[key][0]).items() if target in names)
        for key in ("span_1", "latest_of_2")
    }
    assert splits["span_1"] == splits["latest_of_2"]


def test_drift_between_spans_is_detected(tmp_path):
    data = tmp_path / "data"
    _write_span(data, 1, num_images=20)
    _write_span(data, 2, num_images=20)
    for path in (data / "span-2").iterdir():  # make span 2 all female
        age, gender, race, rest = path.name.split("_", 3)
        if gender == "0":
            shutil.move(path, path.with_name(f"{age}_1_{race}_{rest}"))
    _, report, _ = _run(tmp_path, data, "latest")
    assert report["status"] == "drift" and report["drifted"] == ["gender"]
    assert report["distances"]["gender"] == pytest.approx(0.5)
    assert report["current"]["fractions"]["gender"]["female"] == 1.0
    assert "gender 0.500" in report["message"] and "--max-label-drift" in report["message"]


def test_a_file_added_deep_in_a_sub_folder_is_not_missed_by_the_cache(tmp_path):
    data = tmp_path / "data"
    (data / "a" / "b").mkdir(parents=True)
    (data / _name(i=1)).write_bytes(_image(1))
    (data / "a" / "b" / _name(i=2)).write_bytes(_image(2))
    first, _, count = _run(tmp_path, data, None)
    _, _, cached_count = _run(tmp_path, data, None)
    assert cached_count == count  # nothing changed: served from the cache
    (data / "a" / "b" / _name(i=3)).write_bytes(_image(3))  # the mtimes of data/ and data/a do not change
    second, report, new_count = _run(tmp_path, data, None)
    assert new_count == count + 1
    names = _names(second)
    assert f"a/b/{_name(i=3)}" in names["train"] + names["eval"]
    assert _int(second, executor.FILES_FOUND_PROPERTY) == 3
    assert report["status"] == "skipped" and "not a span layout" in report["message"]
