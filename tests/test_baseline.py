"""ServingBaseline: the model serving now (the highest version in the serving folder) as the Evaluator's baseline."""

import json
import os

import pytest
import tf_keras
from tfx.types import standard_artifacts

from components import artifact_properties, baseline, pusher, serving_folder
from components.base import labels
from components.evaluator import Executor as EvaluatorExecutor
from components.trainer import export


def _saved_model(path, with_transform_signature: bool = True, units: int = 2) -> str:
    """A tiny real SavedModel; with or without the transform_features signature (fake, but present)."""
    model = tf_keras.Sequential(
        [tf_keras.layers.Input((8, 8, 3)), tf_keras.layers.GlobalAveragePooling2D(), tf_keras.layers.Dense(units)]
    )
    export.export_model(model, str(path), 8, label_names=tuple(f"l{i}" for i in range(units)))
    if with_transform_signature:
        # Rename an existing signature in saved_model.pb: has_signature reads only the names.
        from tensorflow.core.protobuf import saved_model_pb2

        pb = path / "saved_model.pb"
        saved = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
        graph = saved.meta_graphs[0]
        graph.signature_def[labels.TRANSFORM_FEATURES_SIGNATURE].CopyFrom(graph.signature_def[export.SERVING_SIGNATURE])
        pb.write_bytes(saved.SerializeToString())
    return str(path)


def _version(base, number: int, model_dir: str, inputs: str = "") -> None:
    target = os.path.join(base, str(number))
    pusher.copy_tree(model_dir, target)
    with open(os.path.join(target, serving_folder.PUSH_RECORD), "w") as f:
        json.dump({"fingerprint": pusher.model_fingerprint(model_dir), "input_fingerprint": inputs,
                   "version": number}, f)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "a": _saved_model(root / "a", units=2),
        "b": _saved_model(root / "b", units=3),
        "old": _saved_model(root / "old", with_transform_signature=False),
    }


def _select(base, candidate_dir, inputs=""):
    listing = serving_folder.list_serving_folder(str(base))
    return baseline.select_baseline(listing, pusher.model_fingerprint(candidate_dir), inputs)


def test_no_baseline_on_an_empty_folder_or_a_foreign_top(tmp_path, models):
    base = tmp_path / "serving"
    selection = _select(base, models["a"])
    assert selection.version is None and selection.key == "none" and "no model" in selection.note
    os.makedirs(base / "5")  # another tool's version, no record
    selection = _select(base, models["a"])
    assert selection.version is None and "no facepipe push record" in selection.note
    _version(base, 3, models["b"])
    selection = _select(base, models["a"])  # ours is 3, but TF Serving serves 5
    assert selection.version is None and "not one of ours" in selection.note


def test_the_serving_version_is_the_baseline_unless_it_is_the_candidate(tmp_path, models):
    base = tmp_path / "serving"
    _version(base, 10, models["a"], inputs="inputs-a")
    _version(base, 20, models["b"], inputs="inputs-b")
    selection = _select(base, models["a"])
    assert selection.version.number == 20 and selection.key.startswith("v20:") and "serving now" in selection.note
    # The candidate is what serves (same content, or same training inputs): nothing to compare with.
    assert _select(base, models["b"]).version is None
    assert "already serving as version 20" in _select(base, models["a"], inputs="inputs-b").note


def test_a_version_without_the_transform_signature_is_skipped(tmp_path, models):
    base = tmp_path / "serving"
    _version(base, 10, models["b"])
    _version(base, 20, models["old"])
    selection = _select(base, models["a"])
    assert selection.version.number == 10 and selection.skipped[0][0] == 20
    assert "1 newer skipped" in selection.note


def test_a_link_where_a_version_belongs_is_refused(tmp_path, models):
    base = tmp_path / "serving"
    _version(base, 10, models["b"])
    os.symlink(models["a"], base / "30")
    with pytest.raises(serving_folder.ServingFolderError, match="symbolic link"):
        _select(base, models["a"])


def _model_artifact(uri: str) -> standard_artifacts.Model:
    model = standard_artifacts.Model()
    model.uri = uri
    return model


def _run_executor(base, candidate_model_dir, out_uri):
    candidate = _model_artifact(os.path.dirname(candidate_model_dir))
    output = _model_artifact(str(out_uri))
    baseline.Executor().Do(
        {baseline.CANDIDATE_KEY: [candidate]},
        {baseline.BASELINE_KEY: [output]},
        {baseline.SERVING_BASE_KEY: str(base), baseline.CODE_VERSION_KEY: "test"},
    )
    return output


def test_executor_copies_the_version_where_the_evaluator_loads_it(tmp_path, models):
    base = tmp_path / "serving"
    _version(base, 20, models["b"], inputs="inputs-b")
    candidate_dir = tmp_path / "Trainer" / "model" / "1" / "Format-Serving"
    pusher.copy_tree(models["a"], str(candidate_dir))
    output = _run_executor(base, str(candidate_dir), tmp_path / "ServingBaseline" / "baseline_model" / "2")
    assert output.get_int_custom_property(baseline.VERSION_PROPERTY) == 20
    assert output.get_string_custom_property(baseline.PATH_PROPERTY) == str(base / "20")
    assert output.get_string_custom_property(artifact_properties.MODEL_INPUTS) == "inputs-b"
    from tfx.utils import path_utils

    copied = path_utils.serving_model_path(output.uri)
    assert copied == os.path.join(output.uri, "Format-Serving")
    assert pusher.model_fingerprint(copied) == pusher.model_fingerprint(models["b"])
    assert not baseline.is_empty(output)


def test_executor_leaves_an_empty_artifact_that_the_evaluator_drops(tmp_path, models, monkeypatch):
    candidate_dir = tmp_path / "Trainer" / "model" / "1" / "Format-Serving"
    pusher.copy_tree(models["a"], str(candidate_dir))
    output = _run_executor(tmp_path / "serving", str(candidate_dir), tmp_path / "out")
    assert baseline.is_empty(output) and output.get_string_custom_property(baseline.NOTE_PROPERTY)
    assert not os.path.exists(os.path.join(output.uri, "Format-Serving"))

    seen = {}
    monkeypatch.setattr(
        "tfx.components.evaluator.executor.Executor.Do", lambda self, i, o, e: seen.update(inputs=sorted(i))
    )
    EvaluatorExecutor().Do({"examples": [], "model": [], "baseline_model": [output]}, {}, {})
    assert seen["inputs"] == ["examples", "model"]  # TFMA then runs without a baseline
    full = _run_executor(tmp_path / "serving", str(candidate_dir), tmp_path / "out2")  # still empty: no versions
    _version(tmp_path / "serving", 5, models["b"])
    full = _run_executor(tmp_path / "serving", str(candidate_dir), tmp_path / "out3")
    EvaluatorExecutor().Do({"examples": [], "model": [], "baseline_model": [full]}, {}, {})
    assert seen["inputs"] == ["baseline_model", "examples", "model"]
