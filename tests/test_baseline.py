"""Baseline resolution: the newest blessed model other than the candidate that the Evaluator can run."""

import os

import tf_keras
from tfx.types import standard_artifacts

from components import baseline
from components.trainer import export
from pipeline import labels


def _model(model_id: int, uri: str = "") -> standard_artifacts.Model:
    model = standard_artifacts.Model()
    model.id = model_id
    model.uri = uri
    return model


def _blessing(model_id: int, blessed: bool) -> standard_artifacts.ModelBlessing:
    blessing = standard_artifacts.ModelBlessing()
    blessing.set_int_custom_property("current_model_id", model_id)
    blessing.set_int_custom_property("blessed", int(blessed))
    return blessing


def test_newest_blessed_non_candidate_that_is_usable():
    models = [_model(i) for i in (1, 2, 3, 4)]
    blessings = [_blessing(1, True), _blessing(2, True), _blessing(3, False), _blessing(4, True)]
    pick = baseline.latest_blessed_other_than
    assert pick({4}, models, blessings)[0].id == 2  # 4 is the candidate, 3 not blessed
    assert pick({4}, models, blessings, usable=lambda m: m.id != 2)[0].id == 1
    assert pick({4}, models, blessings, usable=lambda m: False) == (None, None)
    assert pick(set(), models, blessings)[1].get_int_custom_property("current_model_id") == 4


def test_has_signature_reads_the_trainer_model_artifact(tmp_path):
    model = tf_keras.Sequential(
        [tf_keras.layers.Input((8, 8, 3)), tf_keras.layers.GlobalAveragePooling2D(), tf_keras.layers.Dense(2)]
    )
    uri = str(tmp_path / "Trainer" / "model" / "7")
    export.export_model(model, os.path.join(uri, "Format-Serving"), 8, label_names=("a", "b"))
    assert baseline.has_signature(uri, export.SERVING_SIGNATURE)
    # Exported without a Transform graph (as before the signature existed): not a usable baseline.
    assert not baseline.has_signature(uri, labels.TRANSFORM_FEATURES_SIGNATURE)
    assert not baseline._evaluable(_model(7, uri))
    assert not baseline.has_signature(str(tmp_path / "missing"), export.SERVING_SIGNATURE)
