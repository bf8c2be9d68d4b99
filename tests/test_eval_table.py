"""Per-example rows out of real TFMA (fast_metrics.EvalRows), and gates judged with their intervals."""

import numpy as np
import pytest
import tensorflow as tf

from components import eval_table, fast_metrics, uncertainty
from components.base import labels
from components.evaluation.eval_config import ROWS_PARTITION
from components.evaluation.gates import evaluate_gates
from components.evaluation.results import load_eval_results
from components.evaluation.settings import GateSettings
from tests import test_evaluation as te


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """The echo models of test_evaluation (candidate and baseline) through TFMA, all gates on."""
    root = tmp_path_factory.mktemp("rows")
    models = {}
    for role, key in (("candidate", "candidate_scores"), ("baseline", "baseline_scores")):
        module = te._Echo(key, len(te.LABELS3))
        tf.saved_model.save(module, str(root / role), signatures={"serving_default": module.serve})
        models[role] = str(root / role)
    data = root / "eval.tfrecord"
    te._write_examples(data, {("y", "bird"): "random"}, {})
    te._run_tfma(data, str(root / "evaluation"), models, te.GATES)
    return data, str(root / "evaluation")


def test_rows_out_of_tfma_are_the_examples_paired_by_file_name(evaluated):
    data, out = evaluated
    table = eval_table.load_eval_table(out, te.LABELS3)
    spec = {labels.FILENAME_KEY: tf.io.FixedLenFeature([], tf.string),
            labels.LABELS_KEY: tf.io.FixedLenFeature([3], tf.float32),
            "candidate_scores": tf.io.FixedLenFeature([3], tf.float32),
            "baseline_scores": tf.io.FixedLenFeature([3], tf.float32),
            labels.RACE_NAME_KEY: tf.io.FixedLenFeature([], tf.string),
            labels.GENDER_NAME_KEY: tf.io.FixedLenFeature([], tf.string)}
    written = {}
    for record in tf.data.TFRecordDataset(str(data)):
        example = tf.io.parse_single_example(record, spec)
        written[example[labels.FILENAME_KEY].numpy().decode()] = example
    assert len(table) == len(written) == 252 and list(table.ids) == sorted(written)
    assert table.has_baseline
    for i, name in enumerate(table.ids):
        example = written[name]
        assert np.array_equal(table.labels[i], example[labels.LABELS_KEY].numpy())
        assert table.predictions["candidate"][i] == pytest.approx(example["candidate_scores"].numpy())
        assert table.predictions["baseline"][i] == pytest.approx(example["baseline_scores"].numpy())
        assert table.groups[labels.RACE_NAME_KEY][i] == example[labels.RACE_NAME_KEY].numpy().decode()
        assert table.groups[labels.GENDER_NAME_KEY][i] == example[labels.GENDER_NAME_KEY].numpy().decode()
    # The same AUCs TFMA computed (it bins scores into 1,000 thresholds), overall and per group.
    results = load_eval_results(out, te.LABELS3)
    exact = uncertainty.exact_aucs(table.labels, table.predictions["candidate"])
    for k, name in enumerate(te.LABELS3):
        assert exact[k] == pytest.approx(results.value("auc", name), abs=2e-3)
    rows = table.rows_of(labels.RACE_NAME_KEY, "x")
    assert uncertainty.exact_aucs(table.labels[rows], table.predictions["candidate"][rows])[0] == pytest.approx(
        results.value("auc", "cat", "race=x"), abs=2e-3)


def test_rows_are_written_once_per_gender_x_race_cell(evaluated):
    import tensorflow_model_analysis as tfma

    _, out = evaluated
    where = []
    for record in tfma.load_metrics(out):
        if any(kv.key.name.startswith(fast_metrics.EVAL_ROWS_PREFIX) for kv in record.metric_keys_and_values):
            where.append(sorted(k.column for k in record.slice_key.single_slice_keys))
    assert where and all(w == sorted(ROWS_PARTITION) for w in where)
    assert len(where) == 6  # 3 race groups x 2 genders: each example written once


def test_gate_record_of_a_real_evaluation_has_an_interval_per_gate(evaluated):
    _, out = evaluated
    table = eval_table.load_eval_table(out, te.LABELS3)
    intervals = uncertainty.gate_intervals(te.LABELS3, table.labels, table.predictions["candidate"],
                                           table.predictions["baseline"], {labels.RACE_NAME_KEY: table.groups[
                                               labels.RACE_NAME_KEY]})
    results = load_eval_results(out, te.LABELS3)
    gates = {g.name: g for g in evaluate_gates(results, te.GATES, te.RACE_GROUPS, {}, intervals)}
    assert all(g.interval is not None and g.within_noise is not None for g in gates.values())
    change = gates["no_regression"].interval
    assert change["lower"] < gates["no_regression"].value < change["upper"]
    bird = next(d for d in gates["fairness_race"].details if d["label"] == "bird")
    pair = next(p for p in bird["pairs"] if p["groups"] == ["x", "y"])  # y's bird scores are random
    assert pair["interval"]["lower"] > 0  # AUC(x) - AUC(y) is clearly positive
    assert gates["fairness_race"].passed is False and "bird" in gates["fairness_race"].summary


# --- the significance option and "within noise", on hand-made results -----------------------------


def _iv(lower, upper, estimate=None):
    estimate = (lower + upper) / 2 if estimate is None else estimate
    return uncertainty.Interval(estimate, (upper - lower) / 3.92, lower, upper)


def _intervals(change=None, gap=None, macro=(0.85, 0.95)):
    """Hand-made intervals; ``gap`` = (lower, upper, estimate) of AUC(x) - AUC(y) for label a."""
    label = {"a": _iv(0.85, 0.95), "b": _iv(0.85, 0.95)}
    groups = {"x": dict(label), "y": dict(label)}
    if gap is not None:  # two independent groups whose difference has exactly that interval
        se = (gap[1] - gap[0]) / 3.92 / np.sqrt(2)
        for group, sign in (("x", 1), ("y", -1)):
            estimate = 0.9 + sign * gap[2] / 2
            groups[group]["a"] = uncertainty.Interval(estimate, se, estimate - 1.96 * se, estimate + 1.96 * se)
    return uncertainty.GateIntervals(label, _iv(*macro), {"a": None, "b": None},
                                     None if change is None else _iv(*change), {labels.RACE_NAME_KEY: groups})


def test_regression_within_noise_fails_by_default_and_passes_only_when_significance_is_required():
    results = te._results(baseline=True, macro=0.87)  # change -0.03 against a tolerance of 0.02
    noisy = _intervals(change=(-0.07, 0.01, -0.03))
    default = evaluate_gates(results, te.SETTINGS, te.GROUPS, {}, noisy)[2]
    assert default.passed is False and default.within_noise is True and "within noise" in default.summary
    lenient = GateSettings(min_label_auc=0.6, max_fairness_gap=0.1, fairness_min_count=20, require_significance=True)
    excused = evaluate_gates(results, lenient, te.GROUPS, {}, noisy)[2]
    assert excused.passed is True and "not significant" in excused.summary
    real = evaluate_gates(results, lenient, te.GROUPS, {}, _intervals(change=(-0.045, -0.021, -0.03)))[2]
    assert real.passed is False and real.within_noise is False  # significant and beyond the tolerance
    with pytest.raises(ValueError, match="requires significance"):
        evaluate_gates(results, lenient, te.GROUPS, {}, _intervals())


def test_fairness_gap_beyond_the_limit_is_excused_only_when_not_significant():
    results = te._results(cross={("race=x", "race=y"): {"a": 0.2, "b": 0.0}})
    lenient = GateSettings(min_label_auc=0.6, max_fairness_gap=0.1, fairness_min_count=20, require_significance=True)
    noisy = _intervals(gap=(-0.05, 0.45, 0.2))
    strict = evaluate_gates(results, te.SETTINGS, te.GROUPS, {}, noisy)[-1]
    assert strict.passed is False and strict.within_noise is True
    excused = evaluate_gates(results, lenient, te.GROUPS, {}, noisy)[-1]
    pair = excused.details[0]["pairs"][0]
    assert excused.passed is True and pair["excused"] and "passed as not significant" in excused.summary
    significant = evaluate_gates(results, lenient, te.GROUPS, {}, _intervals(gap=(0.12, 0.28, 0.2)))[-1]
    assert significant.passed is False and significant.details[0]["pairs"][0]["excused"] is False


def test_macro_floor_records_its_interval_and_whether_it_is_within_noise():
    results = te._results(macro=0.9)
    close = GateSettings(min_macro_auc=0.88, min_label_auc=0.6, max_fairness_gap=0.1)
    gate = evaluate_gates(results, close, te.GROUPS, {}, _intervals())[0]
    assert gate.passed is True and gate.within_noise is True and gate.interval["lower"] == 0.85
    far = evaluate_gates(results, te.SETTINGS, te.GROUPS, {}, _intervals())[0]
    assert far.within_noise is False
    assert evaluate_gates(results, te.SETTINGS, te.GROUPS, {})[0].within_noise is None  # no intervals
