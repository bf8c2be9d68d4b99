"""Per-label decision thresholds (components.trainer.decision) and calibration (components.trainer.calibration)."""

import json

import numpy as np
import pytest

from components.trainer import calibration, decision
from components.trainer.config import TrainerConfig


def _known_optimum():
    """40 positives at 0.60-0.99 and 10 more at 0.30-0.39; 100 negatives at 0.01-0.50.

    Predicting 'positive at >= s' for s in the gap 0.50-0.60 catches 40 of 50 positives and no
    negative (F1 = 80 / 90 = 0.889); going down to 0.30 catches all 50 positives but also 20 negatives
    (F1 = 100 / 120 = 0.833): the F1 optimum is the gap, and the threshold sits in its middle.
    """
    pos = np.r_[np.linspace(0.60, 0.99, 40), np.linspace(0.30, 0.39, 10)]
    neg = np.linspace(0.01, 0.50, 100)
    return np.r_[np.ones(50), np.zeros(100)], np.r_[pos, neg]


def test_f1_policy_finds_the_known_optimum_in_the_middle_of_its_gap():
    labels, scores = _known_optimum()
    choice = decision.choose_threshold(labels, scores, decision.parse_policy("f1"), min_positives=20)
    assert choice.tuned and choice.threshold == pytest.approx((0.60 + 0.50) / 2)
    assert choice.at_threshold["f1"] == pytest.approx(80 / 90)
    assert choice.at_threshold["precision"] == 1.0 and choice.at_threshold["recall"] == pytest.approx(0.8)
    # Brute force over every possible threshold: nothing beats it.
    best = max(decision.confusion_at(labels, scores, t)["f1"] for t in np.r_[scores, 1.0])
    assert choice.at_threshold["f1"] == pytest.approx(best)
    assert choice.at_default["recall"] == pytest.approx(40 / 50)


def test_precision_and_recall_policies_take_the_best_threshold_that_meets_the_target():
    labels, scores = _known_optimum()
    every = [decision.confusion_at(labels, scores, t) for t in np.r_[scores, 1.0]]
    precision = decision.choose_threshold(labels, scores, decision.parse_policy("precision=0.7"), 20)
    # The most recall among thresholds with precision >= 0.7 (brute force over every threshold).
    assert precision.at_threshold["precision"] >= 0.7
    assert precision.at_threshold["recall"] == max(m["recall"] for m in every if (m["precision"] or 0) >= 0.7)
    recall = decision.choose_threshold(labels, scores, decision.parse_policy("recall=0.8"), 20)
    assert recall.threshold == pytest.approx(0.55) and recall.at_threshold["precision"] == 1.0
    assert recall.at_threshold["precision"] == max(m["precision"] or 0 for m in every if m["recall"] >= 0.8)
    unreachable = decision.choose_threshold(labels, scores + (labels == 0) * 1.0, decision.parse_policy(
        "precision=0.9"), 20)  # every negative now outranks every positive
    assert not unreachable.tuned and unreachable.threshold == 0.5 and "no threshold reaches precision 0.9" in \
        unreachable.reason
    fixed = decision.choose_threshold(labels, scores, decision.parse_policy("fixed=0.25"), 20)
    assert fixed.threshold == 0.25 and "fixed" in fixed.reason


def test_a_label_with_too_few_positives_keeps_one_half_and_says_so():
    labels, scores = _known_optimum()
    few = np.r_[np.ones(5), np.zeros(100)], np.r_[scores[:5], scores[50:]]
    choice = decision.choose_threshold(*few, decision.parse_policy("f1"), min_positives=20)
    assert not choice.tuned and choice.threshold == 0.5
    assert choice.reason == "kept 0.5: only 5 positives / 100 negatives out of fold (fewer than 20)"
    assert choice.at_threshold == choice.at_default


def test_policies_parse_and_are_checked():
    assert str(decision.parse_policy(" Precision=0.80 ")) == "precision=0.8"
    for bad in ("f2", "precision", "recall=1.5", "precision=0", "top=3"):
        with pytest.raises(ValueError, match="threshold policy"):
            decision.parse_policy(bad)
    policies = decision.policies_for(("a", "b"), "f1", {"b": "recall=0.9"})
    assert {k: str(v) for k, v in policies.items()} == {"a": "f1", "b": "recall=0.9"}
    with pytest.raises(ValueError, match="unknown label"):
        decision.policies_for(("a",), "f1", {"c": "f1"})


def test_threshold_flags_reach_the_trainer_and_bad_ones_are_refused(tmp_path):
    import argparse

    from pipeline import cli
    from pipeline import pipeline as pipeline_def

    parser = argparse.ArgumentParser()
    cli.add_pipeline_flags(parser)
    args = parser.parse_args("--threshold-policy recall=0.9 --label-threshold-policy race_other=precision=0.8 "
                             "--threshold-min-positives 15 --calibration platt --require-significance".split())
    config = cli.config_from_args(args, str(tmp_path), str(tmp_path / "root"), str(tmp_path / "serving"), None)
    assert config.gates.require_significance
    components = {c.id: c for c in pipeline_def.create_pipeline(config).components}
    custom = components[pipeline_def.TRAINER].exec_properties["custom_config"]
    custom = json.loads(custom) if isinstance(custom, str) else custom
    assert {k: custom[k] for k in ("threshold_policy", "label_threshold_policies", "threshold_min_positives",
                                   "calibration")} == {"threshold_policy": "recall=0.9",
                                                       "label_threshold_policies": {"race_other": "precision=0.8"},
                                                       "threshold_min_positives": 15, "calibration": "platt"}
    assert components[pipeline_def.EVALUATION_GATE].exec_properties["require_significance"] == 1
    for bad, message in (("--threshold-policy f2", "threshold policy"),
                         ("--label-threshold-policy nose=f1", "unknown label")):
        with pytest.raises(ValueError, match=message):
            cli.config_from_args(parser.parse_args(bad.split()), str(tmp_path), str(tmp_path), str(tmp_path), None)


def test_platt_scaling_recovers_a_known_calibration_and_keeps_the_order():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20_000)
    labels = rng.random(20_000) < calibration.sigmoid(0.5 * z - 1.0)  # true P(y) = sigmoid(0.5 z - 1)
    a, b = calibration.fit_platt(z, labels)
    assert a == pytest.approx(0.5, abs=0.03) and b == pytest.approx(-1.0, abs=0.05)
    fitted = calibration.LabelCalibration("platt", a, b)
    p = calibration.sigmoid(z)
    calibrated = fitted.apply(p)
    assert np.all(np.diff(calibrated[np.argsort(p)]) >= 0)  # monotone: AUC unchanged
    assert fitted.invert(calibrated) == pytest.approx(p, abs=1e-6)
    assert calibration.expected_calibration_error(labels, calibrated) < 0.02 < \
        calibration.expected_calibration_error(labels, p)


def test_prior_correction_undoes_positive_weighting():
    """A head trained with positive weight w estimates odds w q / (1 - q); the prior correction gives q back."""
    q = np.array([0.01, 0.1, 0.5, 0.9])
    w = 12.0
    weighted = w * q / (w * q + 1 - q)
    fitted = calibration.fit("prior", weighted[:, None], np.zeros((4, 1)), np.array([w]), ["x"], 20)["x"]
    assert fitted.method == "prior" and fitted.apply(weighted) == pytest.approx(q)
    assert fitted.apply(weighted) == pytest.approx(weighted / (weighted + w * (1 - weighted)))  # p / (p + w (1 - p))


def test_calibration_falls_back_to_the_prior_correction_only_with_a_stated_reason():
    rng = np.random.default_rng(1)
    labels = np.c_[rng.random(200) < 0.5, np.r_[np.ones(5), np.zeros(195)]].astype(float)
    probabilities = np.c_[np.clip(labels[:, 0] * 0.3 + rng.random(200) * 0.7, 0.01, 0.99), rng.random(200)]
    fitted = calibration.fit("platt", probabilities, labels, np.array([1.0, 20.0]), ["a", "rare"], 20)
    assert fitted["a"].method == "platt" and fitted["a"].slope > 0
    assert fitted["rare"].method == "prior" and "5 positives" in fitted["rare"].reason
    assert fitted["rare"].intercept == pytest.approx(-np.log(20.0))
    noise = calibration.fit("platt", np.c_[1 - probabilities[:, 0]], labels[:, :1], np.ones(1), ["a"], 20)["a"]
    assert noise.method == "prior" and "not increasing" in noise.reason
    with pytest.raises(ValueError, match="unknown calibration"):
        calibration.fit("isotonic", probabilities, labels, np.ones(2), ["a", "b"], 20)


# --- in the trainer: out-of-fold predictions and the calibrated export ---------------------------


@pytest.mark.slow
def test_out_of_fold_predictions_come_from_heads_that_did_not_see_the_example():
    """Random labels on random embeddings: a head memorizes what it saw, so only honest out-of-fold
    predictions score near AUC 0.5, while predictions on seen examples score far above it."""
    from components.trainer import model, train
    from components.trainer.embeddings import Embedded
    from components.uncertainty import exact_aucs

    rng = np.random.default_rng(0)
    n, dim = 240, 16
    embeddings = rng.normal(size=(n, dim)).astype(np.float32)
    labels = (rng.random((n, 2)) < 0.5).astype(np.float32)
    embedded = Embedded(embeddings, labels, np.array([f"{i}.jpg" for i in range(n)]))
    train.skip_autograph_for_tf_keras()  # as the Trainer does (AutoGraph converting tf_keras costs seconds)
    params = TrainerConfig(epochs=20, batch_size=32, learning_rate=2e-2, class_weighting=False)

    def build(name="head"):
        return model.build_head(dim, 2, 64, 0.0, name)

    oof = train.out_of_fold_predictions(embedded, build, params, folds=3)
    assert oof.shape == (n, 2) and np.all((oof >= 0) & (oof <= 1))
    assert np.all(np.abs(exact_aucs(labels, oof) - 0.5) < 0.1)
    seen = build()
    train.train_head(seen, embedded, None, params, label_names=("a", "b"))
    assert np.all(exact_aucs(labels, seen(embeddings).numpy()) > 0.9)
    again = train.out_of_fold_predictions(embedded, build, params, folds=3)
    assert np.array_equal(oof, again)  # seeded


def test_calibrated_model_applies_the_map_to_the_exact_logits():
    import tensorflow as tf
    import tf_keras

    from components.trainer import model

    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input(shape=(8, 8, 3))
    extractor = tf_keras.Model(inputs, tf_keras.layers.GlobalAveragePooling2D()(inputs * 0.1))
    head = model.build_head(3, 2, 4, 0.0)
    images = tf.random.uniform((5, 8, 8, 3), 0, 255, seed=1)
    plain = model.build_model(extractor, head)(images).numpy()
    identity = model.build_calibrated_model(extractor, head, [1.0, 1.0], [0.0, 0.0])(images).numpy()
    assert identity == pytest.approx(plain, abs=1e-6)
    shifted = model.build_calibrated_model(extractor, head, [0.5, 2.0], [-1.0, 0.3])(images).numpy()
    expected = calibration.sigmoid(np.array([0.5, 2.0]) * calibration.logit(plain) + np.array([-1.0, 0.3]))
    assert shifted == pytest.approx(expected, abs=1e-5)
