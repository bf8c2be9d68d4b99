"""Validation that stops bad data: TFDV image statistics + the curated schema, label drift, AnomalyGate.

StatisticsGen and ExampleValidator run through their real TFX executors; the last test runs the
whole pipeline definition with LocalDagRunner and checks that the run stops before Transform.
"""

import io
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from PIL import Image
from tfx.components.example_validator import executor as validator_executor
from tfx.components.statistics_gen import executor as stats_executor
from tfx.types import artifact_utils, standard_artifacts

from components import anomaly_gate, drift, synthetic_data
from components.base import labels
from components.trainer.config import TrainerConfig
from pipeline.config import DEFAULT_SCHEMA_PATH, PipelineConfig
from pipeline.local_run import run_local
from tests.conftest import run_paths
from tests.test_ingest_bad_files import run_executor

SPLITS = ["train", "eval"]


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


def _example(age: int, image: bytes, i: int) -> bytes:
    feature = {
        labels.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        labels.AGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[age])),
        labels.GENDER_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
        labels.RACE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 5])),
        labels.FILENAME_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"{i}.jpg".encode()])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _write_examples(uri: str, rows: list[bytes]) -> standard_artifacts.Examples:
    """Writes the same rows to both splits, as ExampleGen would lay them out."""
    examples = standard_artifacts.Examples()
    examples.uri = uri
    examples.split_names = artifact_utils.encode_split_names(SPLITS)
    for split in SPLITS:
        os.makedirs(os.path.join(uri, f"Split-{split}"))
        with tf.io.TFRecordWriter(os.path.join(uri, f"Split-{split}", "data.gz"), options="GZIP") as w:
            for row in rows:
                w.write(row)
    return examples


def _validate(tmp_path, examples: standard_artifacts.Examples) -> standard_artifacts.ExampleAnomalies:
    """StatisticsGen (semantic-domain stats, as the pipeline) + ExampleValidator vs the curated schema."""
    statistics = standard_artifacts.ExampleStatistics()
    statistics.uri = str(tmp_path / "statistics")
    stats_executor.Executor().Do(
        {"examples": [examples]},
        {"statistics": [statistics]},
        {"stats_options_json": tfdv.StatsOptions(enable_semantic_domain_stats=True).to_json(), "exclude_splits": "[]"},
    )
    schema = standard_artifacts.Schema()
    schema.uri = str(tmp_path / "schema")
    os.makedirs(schema.uri)
    shutil.copy(DEFAULT_SCHEMA_PATH, os.path.join(schema.uri, "schema.pbtxt"))
    anomalies = standard_artifacts.ExampleAnomalies()
    anomalies.uri = str(tmp_path / "anomalies")
    validator_executor.Executor().Do(
        {"statistics": [statistics], "schema": [schema]}, {"anomalies": [anomalies]}, {"exclude_splits": "[]"}
    )
    return anomalies


def _image_domain_stat(tmp_path) -> str:
    stats = tfdv.load_stats_binary(str(tmp_path / "statistics" / "Split-train" / "FeatureStats.pb"))
    feature = next(f for f in stats.datasets[0].features if f.path.step == [labels.IMAGE_KEY])
    return next((c.str for c in feature.custom_stats if c.name == "domain_info"), "")


def test_generated_data_passes_the_curated_schema_with_image_statistics(tmp_path):
    data = tmp_path / "data"
    synthetic_data.generate(data, synthetic_data.SyntheticSpec(num_images=160, seed=3, image_size=48))
    examples = run_executor(str(data), str(tmp_path / "examples"))
    anomalies = _validate(tmp_path, examples)
    assert _image_domain_stat(tmp_path) == "image_domain {}"  # TFDV saw images (>= 100 in train)
    anomaly_gate.check_data(anomalies.uri, SPLITS)  # does not raise


def test_out_of_range_values_stop_the_run_with_the_anomaly_named(tmp_path):
    rows = [_example(150 if i == 3 else 20 + i, _jpeg(i), i) for i in range(12)]
    anomalies = _validate(tmp_path, _write_examples(str(tmp_path / "examples"), rows))
    with pytest.raises(anomaly_gate.DataAnomaliesError) as raised:
        anomaly_gate.check_data(anomalies.uri, SPLITS)
    message = str(raised.value)
    assert "feature 'age'" in message and "Out-of-range" in message and "150" in message
    assert "stops before Transform" in message and message.count("feature 'age'") == 2  # both splits


def test_values_that_are_not_images_stop_the_run(tmp_path):
    rows = [_example(30, b"not an image %d" % i if i < 12 else _jpeg(i), i) for i in range(120)]
    anomalies = _validate(tmp_path, _write_examples(str(tmp_path / "examples"), rows))
    with pytest.raises(anomaly_gate.DataAnomaliesError, match="feature 'image_raw': Low supported image fraction"):
        anomaly_gate.check_data(anomalies.uri, SPLITS)


# --- label drift ------------------------------------------------------------------------------------


def test_label_counts_and_distance():
    people = [labels.ParsedName(age=a, gender=g, race=r) for a, g, r in [(5, 0, 0), (25, 1, 1), (45, 1, 1), (70, 0, 4)]]
    counts = drift.label_counts(people)
    assert counts["gender"] == {"male": 2, "female": 2}
    assert counts["race"] == {"white": 1, "black": 2, "asian": 0, "indian": 0, "other": 1}
    assert counts["age_group"] == {"0-12": 1, "13-19": 0, "20-39": 1, "40-59": 1, "60+": 1}
    assert drift.linf_distance({"a": 1, "b": 1}, {"a": 3, "b": 1}) == pytest.approx(0.25)
    assert drift.linf_distance({"a": 5, "b": 0}, {"a": 0, "b": 7}) == pytest.approx(1.0)
    assert drift.linf_distance(counts["race"], counts["race"]) == 0.0


def test_compare_flags_only_features_over_the_threshold():
    current = drift.label_counts([labels.ParsedName(30, 1, i % 5) for i in range(10)])
    previous = drift.label_counts([labels.ParsedName(30, i % 2, i % 5) for i in range(10)])
    distances, drifted = drift.compare(current, previous, threshold=0.3)
    assert distances == {"gender": 0.5, "race": 0.0, "age_group": 0.0} and drifted == ["gender"]
    assert drift.compare(current, previous, threshold=0.5)[1] == []  # "more than" the threshold


def _span(folder, names: list[str]) -> None:
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_bytes(b"bytes are not read")


def _names(genders: list[int]) -> list[str]:
    return [f"30_{g}_{i % 5}_20170116174525{i:03d}.jpg.chip.jpg" for i, g in enumerate(genders)]


def test_check_label_drift_on_span_folders(tmp_path):
    _span(tmp_path / "span-1", _names([0, 1] * 10) + ["bad name.jpg", ".hidden"])
    _span(tmp_path / "span-2", _names([0, 1] * 10))
    _span(tmp_path / "span-4", _names([1] * 20))
    pattern = labels.UTKFACE_PATTERN
    ok = drift.check_label_drift(str(tmp_path), pattern, 2, 2, 0.1)
    assert ok["status"] == "ok" and ok["previous_span"] == 1 and ok["max_distance"] == 0.0
    assert ok["previous"]["num_files"] == 20  # the badly named and hidden files do not count
    drifted = drift.check_label_drift(str(tmp_path), pattern, 4, 4, 0.1)
    assert drifted["status"] == "drift" and drifted["previous_span"] == 2 and drifted["drifted"] == ["gender"]
    assert anomaly_gate.describe_drift(drifted) == [f"label drift: {drifted['message']}"]
    loose = drift.check_label_drift(str(tmp_path), pattern, 4, 4, 0.6)
    assert loose["status"] == "ok" and anomaly_gate.describe_drift(loose) == []
    ranged = drift.check_label_drift(str(tmp_path), pattern, 2, 4, 0.1)
    assert ranged["previous_span"] == 1 and ranged["current_spans"] == [2, 4]
    assert ranged["current"]["num_files"] == 40 and ranged["distances"]["gender"] == pytest.approx(0.25)
    first = drift.check_label_drift(str(tmp_path), pattern, 1, 1, 0.1)
    assert first["status"] == "skipped" and "first span" in first["message"]
    flat = drift.check_label_drift(str(tmp_path), pattern, None, None, 0.1)
    assert flat["status"] == "skipped" and "not a span layout" in flat["message"]
    assert anomaly_gate.describe_drift(first) == anomaly_gate.describe_drift(None) == []


def test_drift_report_round_trip(tmp_path):
    report = drift.check_label_drift(str(tmp_path), labels.UTKFACE_PATTERN, None, None, 0.1)
    drift.write_report(str(tmp_path / "report"), report)
    assert drift.read_report(str(tmp_path / "report")) == report
    assert drift.read_report(str(tmp_path / "nothing")) is None


# --- the whole pipeline stops before Transform -------------------------------------------------------


@pytest.mark.e2e
def test_pipeline_stops_before_transform_naming_anomalies_and_drift(tmp_path):
    data = tmp_path / "data"
    for span in (1, 2):
        synthetic_data.generate(
            data / f"span-{span}",
            synthetic_data.SyntheticSpec(num_images=30, seed=span, balanced=True, image_size=48),
        )
    for path in (data / "span-2").iterdir():  # span 2: all female
        age, gender, race, rest = path.name.split("_", 3)
        if gender == "0":
            path.rename(path.with_name(f"{age}_1_{race}_{rest}"))
    (data / "span-2" / "notes.txt").write_text("not an image")
    # A stricter schema (age <= 30) so that valid data has an anomaly ExampleGen cannot catch.
    schema = tmp_path / "schema.pbtxt"
    strict = DEFAULT_SCHEMA_PATH.read_text().replace("int_domain { min: 0 max: 116 }", "int_domain { min: 0 max: 30 }")
    schema.write_text(strict)
    config = PipelineConfig(
        data_dir=str(data),
        **run_paths(tmp_path),
        pipeline_name="facepipe-gate",
        schema_path=str(schema),
        spans="latest",
        max_label_drift=0.2,
        trainer=TrainerConfig(image_size=48, epochs=1),
    )
    summary = run_local(config, out=io.StringIO())

    error = summary["error"] or ""
    assert "DataAnomaliesError" in error and "stops before Transform" in error
    assert "feature 'age': Out-of-range values" in error
    assert "label drift" in error and "gender 0.500" in error
    assert summary["components"]["AnomalyGate"] == "failed"
    assert "Transform" not in summary["components"] and summary["pushed_model"] is None
    assert summary["drift"]["status"] == "drift" and summary["drift"]["previous_span"] == 1
    assert summary["spans"] == [2, 2]
    assert summary["files_found"] == 31 == summary["ingested"] + summary["quarantined"]
    assert summary["quarantined_by_reason"] == {"name_mismatch": 1}
