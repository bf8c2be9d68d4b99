"""EvalConfig generation from a label list, and the gates.

Each gate passes and fails on controlled predictions that real TFMA evaluates: two tiny
SavedModels echo probabilities stored in the examples (candidate and baseline), so the test
controls every AUC while TFMA runs exactly as in the Evaluator (tf_generic model, serving_default).
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.writers import eval_config_writer

from components import fast_metrics
from components.base import labels
from components.evaluation.eval_config import (
    AGGREGATE,
    AUC_CLASS_NAMES,
    MACRO_AUC,
    build_eval_config,
    gates_from_eval_config,
)
from components.evaluation.gates import GATE_OTHER, evaluate_gates, is_blessed
from components.evaluation.results import BASELINE, CANDIDATE, DIFF, EvalResults, load_eval_results
from components.evaluation.settings import GateSettings

LABELS3 = ("cat", "dog", "bird")
RACE_GROUPS = {labels.RACE_NAME_KEY: ("x", "y", "z")}


def _auc_metric(spec: tfma.MetricsSpec) -> tfma.MetricConfig:
    return next(m for m in spec.metrics if m.class_name in AUC_CLASS_NAMES)


def _per_label_specs(config: tfma.EvalConfig) -> list[tfma.MetricsSpec]:
    return [s for s in config.metrics_specs if s.binarize.class_ids.values]


def test_eval_config_for_a_three_label_list():
    gates = GateSettings(min_label_auc=0.6, label_auc_floors=(("dog", 0.8),))
    config = build_eval_config(LABELS3, gates, fairness_exempt={}, shared_rows=False)
    per_label = _per_label_specs(config)
    assert [list(s.binarize.class_ids.values) for s in per_label] == [[0], [1], [2]]
    expected = {"AUC", "AUCPrecisionRecall", "Precision", "Recall", "F1Score", "MeanLabel", "MeanPrediction",
                "ConfusionMatrixPlot", "CalibrationPlot"}
    assert all(expected <= {m.class_name for m in s.metrics} for s in per_label)
    floors = [_auc_metric(s).per_slice_thresholds[0].threshold.value_threshold.lower_bound.value for s in per_label]
    assert floors == [0.6, 0.8, 0.6]
    aggregates = [s for s in config.metrics_specs if s.HasField("aggregate")]
    assert aggregates[0].aggregate.macro_average and dict(aggregates[0].aggregate.class_weights) == {0: 1, 1: 1, 2: 1}
    assert aggregates[1].aggregate.micro_average
    assert any(m.class_name == "MultiLabelConfusionMatrixPlot" for s in config.metrics_specs for m in s.metrics)
    keys = [tuple(s.feature_keys) for s in config.slicing_specs]
    assert keys == [(), ("gender_name",), ("race_name",), ("age_group",), ("gender_name", "race_name")]
    # Every race pair and the gender pair are compared; 5 races -> 10 pairs.
    pairs = [(c.baseline_spec.feature_values, s.feature_values) for c in config.cross_slicing_specs
             for s in c.slicing_specs]
    assert len(pairs) == 10 + 1
    # TFMA applies an unscoped threshold to every slice and class: every threshold here is scoped.
    assert not any(m.HasField("threshold") for s in config.metrics_specs for m in s.metrics)
    # The gate reads its settings back from the config the Evaluator ran with.
    settings, groups, exempt = gates_from_eval_config(config, LABELS3, gates.fairness_min_count)
    assert settings == GateSettings(min_label_auc=None, label_auc_floors=(("cat", 0.6), ("dog", 0.8), ("bird", 0.6)))
    assert groups == {labels.GENDER_NAME_KEY: labels.GENDER_NAMES, labels.RACE_NAME_KEY: labels.RACE_NAMES}
    assert exempt == {labels.GENDER_NAME_KEY: (), labels.RACE_NAME_KEY: ()}


def test_default_config_uses_the_shared_rows_classes_for_every_per_label_metric():
    stock = build_eval_config(LABELS3, fairness_exempt={}, shared_rows=False)
    fast = build_eval_config(LABELS3, fairness_exempt={})
    pairs = [(a, b) for sa, sb in zip(stock.metrics_specs, fast.metrics_specs, strict=True)
             for a, b in zip(sa.metrics, sb.metrics, strict=True)]
    replaced = [(a.class_name, b.class_name) for a, b in pairs if a.class_name != b.class_name]
    assert {a for a, _ in replaced} == set(fast_metrics.REPLACEMENTS)
    assert all(b == fast_metrics.REPLACEMENTS[a] for a, b in replaced)
    assert fast_metrics.REPLACEMENTS["AUC"] in AUC_CLASS_NAMES  # the gate reads it back
    assert all(b.module == fast_metrics.__name__ for a, b in pairs if a.class_name != b.class_name)
    # Nothing else differs: same configs (names, grids), thresholds, slices.
    for a, b in pairs:
        b.class_name, b.module = a.class_name, a.module
    assert fast == stock


def test_default_labels_are_not_compared_across_the_attribute_that_defines_them():
    config = build_eval_config()
    compared = {}
    for name, spec in zip(labels.LABEL_NAMES, _per_label_specs(config), strict=True):
        compared[name] = {k for t in _auc_metric(spec).cross_slice_thresholds
                          for c in t.cross_slicing_specs for k in c.baseline_spec.feature_values}
    assert compared["female"] == {labels.RACE_NAME_KEY}
    assert compared["race_other"] == {labels.GENDER_NAME_KEY}
    assert compared["age_60_plus"] == {labels.RACE_NAME_KEY, labels.GENDER_NAME_KEY}


def test_gates_that_are_off_leave_no_thresholds():
    gates = GateSettings(max_fairness_gap=None, max_auc_regression=None)  # and no label floor: the default
    config = build_eval_config(LABELS3, gates)
    assert not config.cross_slicing_specs
    assert not any(_auc_metric(s).per_slice_thresholds for s in _per_label_specs(config))
    macro = next(m for s in config.metrics_specs for m in s.metrics if MACRO_AUC in m.config)
    assert not macro.per_slice_thresholds[0].threshold.HasField("change_threshold")
    settings, groups, _ = gates_from_eval_config(config, LABELS3, 20)
    assert settings == gates and groups == {}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"label_auc_floors": (("wolf", 0.7),)}, "unknown label 'wolf'"),
        ({"label_auc_floors": (("dog", 1.2),)}, "floor for dog"),
        ({"max_fairness_gap": 1.5}, "fairness gap"),
        ({"fairness_min_count": 0}, "min count"),
        ({"min_label_auc": -0.1}, "min label AUC"),
    ],
)
def test_gate_settings_reject_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_eval_config(LABELS3, GateSettings(**kwargs))


# --- gates through real TFMA --------------------------------------------------------------------


class _Echo(tf.Module):
    """A 'model' whose probabilities are a float feature of the example: the test sets every score."""

    def __init__(self, key: str, width: int):
        super().__init__()
        self._spec = {key: tf.io.FixedLenFeature([width], tf.float32)}
        self._key = key

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(self, serialized):
        return {labels.PROBABILITIES_KEY: tf.io.parse_example(serialized, self._spec)[self._key]}


@pytest.fixture(scope="module")
def echo_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("echo")
    paths = {}
    for role, key in (("candidate", "candidate_scores"), ("baseline", "baseline_scores")):
        module = _Echo(key, len(LABELS3))
        tf.saved_model.save(module, str(root / role), signatures={"serving_default": module.serve})
        paths[role] = str(root / role)
    return paths


def _scores(rng, y, how: str):
    if how == "good":  # AUC ~0.99
        return np.clip(0.25 + 0.5 * y + rng.normal(0, 0.1, y.shape), 0, 1)
    if how == "fair":  # AUC ~0.9
        return np.clip(0.35 + 0.3 * y + rng.normal(0, 0.15, y.shape), 0, 1)
    if how == "random":
        return rng.uniform(0, 1, y.shape)
    if how == "inverted":
        return np.clip(0.75 - 0.5 * y + rng.normal(0, 0.05, y.shape), 0, 1)
    raise ValueError(how)


def _write_examples(path, candidate: dict, baseline: dict, seed: int = 0) -> None:
    """120 examples in race groups x and y, 12 in z; labels alternate so every group has both classes.

    candidate / baseline: (group, label) -> how its scores are drawn ("good" when absent).
    """
    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for group, n in (("x", 120), ("y", 120), ("z", 12)):
            for i in range(n):
                y = np.array([i % 2, (i // 2) % 2, (i // 4) % 2], dtype=np.float32)
                cand = np.array([_scores(rng, y[j : j + 1], candidate.get((group, name), "good"))[0]
                                 for j, name in enumerate(LABELS3)])
                base = np.array([_scores(rng, y[j : j + 1], baseline.get((group, name), "fair"))[0]
                                 for j, name in enumerate(LABELS3)])
                feature = {
                    labels.FILENAME_KEY: tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[f"{group}/{i:04d}.jpg".encode()])
                    ),
                    labels.LABELS_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=y)),
                    "candidate_scores": tf.train.Feature(float_list=tf.train.FloatList(value=cand)),
                    "baseline_scores": tf.train.Feature(float_list=tf.train.FloatList(value=base)),
                    labels.RACE_NAME_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[group.encode()])),
                    labels.GENDER_NAME_KEY: tf.train.Feature(
                        bytes_list=tf.train.BytesList(value=[labels.GENDER_NAMES[i % 2].encode()])
                    ),
                    labels.AGE_GROUP_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"20-39"])),
                }
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


def _run_tfma(data, out: str, echo_models, gates: GateSettings, shared_rows: bool = True) -> None:
    # The examples hold the labels and slice features already (no Transform signature in the echo models).
    config = build_eval_config(
        LABELS3, gates, fairness_groups=RACE_GROUPS, fairness_exempt={}, shared_rows=shared_rows, preprocessing=False
    )
    config = tfma.utils.update_eval_config_with_defaults(config, has_baseline=True, rubber_stamp=True)
    models = [
        tfma.default_eval_shared_model(echo_models["candidate"], eval_config=config, model_name=tfma.CANDIDATE_KEY),
        tfma.default_eval_shared_model(echo_models["baseline"], eval_config=config, model_name=tfma.BASELINE_KEY),
    ]
    tfma.run_model_analysis(eval_shared_model=models, eval_config=config, data_location=str(data), output_path=out)


def _evaluate(tmp_path, echo_models, gates: GateSettings, candidate: dict, baseline: dict):
    """Runs TFMA like the Evaluator (candidate + baseline), then judges the gates from its output."""
    data = tmp_path / "eval.tfrecord"
    _write_examples(data, candidate, baseline)
    out = str(tmp_path / "evaluation")
    _run_tfma(data, out, echo_models, gates)
    written = eval_config_writer.load_eval_run(out)[0]
    settings, groups, exempt = gates_from_eval_config(written, LABELS3, gates.fairness_min_count)
    assert settings == gates  # the gate judges exactly what TFMA was configured with
    results = load_eval_results(out, LABELS3)
    gate_results = evaluate_gates(results, settings, groups, exempt)
    return results, {g.name: g for g in gate_results}, is_blessed(gate_results)


GATES = GateSettings(min_macro_auc=0.7, max_auc_regression=0.02, min_label_auc=0.6, max_fairness_gap=0.15,
                     fairness_min_count=20)


def test_every_gate_passes_and_a_small_group_is_not_judged(tmp_path, echo_models):
    # cat is inverted in the 12-example group z: TFMA fails those comparisons, the gate must not.
    results, gates, blessed = _evaluate(tmp_path, echo_models, GATES, {("z", "cat"): "inverted"}, {})
    assert {n: g.passed for n, g in gates.items()} == {
        "macro_auc_floor": True, "label_auc_floors": True, "no_regression": True, "fairness_race": True,
    }
    assert blessed
    assert gates["macro_auc_floor"].value > 0.9 and gates["no_regression"].value > 0.02
    cat = next(d for d in gates["fairness_race"].details if d["label"] == "cat")
    z_pairs = [p for p in cat["pairs"] if "z" in p["groups"]]
    assert z_pairs and all(not p["judged"] and p["tfma_failed"] for p in z_pairs)
    assert all(p["judged"] and p["passed"] for p in cat["pairs"] if "z" not in p["groups"])
    assert "not judged" in gates["fairness_race"].summary
    assert any("cross" in f for f in results.failures)  # TFMA itself did fail them


def test_every_gate_fails_on_a_bad_candidate(tmp_path, echo_models):
    candidate = {("x", "dog"): "random", ("y", "dog"): "random", ("z", "dog"): "random", ("y", "cat"): "random"}
    strict = GateSettings(min_macro_auc=0.9, max_auc_regression=0.02, min_label_auc=0.6, max_fairness_gap=0.15,
                          fairness_min_count=20)
    _, gates, blessed = _evaluate(tmp_path, echo_models, strict, candidate, {})
    assert {n: g.passed for n, g in gates.items()} == {
        "macro_auc_floor": False, "label_auc_floors": False, "no_regression": False, "fairness_race": False,
    }
    assert not blessed
    assert "dog AUC" in gates["label_auc_floors"].summary and "cat" not in gates["label_auc_floors"].summary
    assert "change in macro_auc" in gates["no_regression"].summary
    failed = [p for d in gates["fairness_race"].details for p in d["pairs"] if p["passed"] is False]
    assert ("cat", ["x", "y"]) in [(d["label"], p["groups"]) for d in gates["fairness_race"].details
                                   for p in d["pairs"] if p in failed]
    assert all(p["gap"] > 0.15 for p in failed)


# --- gate logic on hand-made results -------------------------------------------------------------


def _results(failures=(), cross=None, baseline=False, macro=0.9) -> EvalResults:
    """Two labels, race groups x and y with 50 positives and 50 negatives each."""
    slices = {"overall": {}, "race=x": {labels.RACE_NAME_KEY: "x"}, "race=y": {labels.RACE_NAME_KEY: "y"}}
    candidate = {}
    for name in slices:
        per_label = {label: {"auc": 0.9, "mean_label": 0.5} for label in ("a", "b")}
        candidate[name] = {AGGREGATE: {"example_count": 100.0, MACRO_AUC: macro}, **per_label}
    metrics = {CANDIDATE: candidate}
    if baseline:
        metrics[BASELINE] = {"overall": {AGGREGATE: {MACRO_AUC: 0.9}}}
        metrics[DIFF] = {"overall": {AGGREGATE: {MACRO_AUC: macro - 0.9}}}
    return EvalResults(
        label_names=("a", "b"), metrics=metrics, slices=slices,
        cross_auc={("race=x", "race=y"): {"a": 0.0, "b": 0.0}} if cross is None else cross,
        failures=list(failures), missing_slices=[], missing_thresholds=False, validation_ok=not failures,
    )


SETTINGS = GateSettings(min_label_auc=0.6, max_fairness_gap=0.1, fairness_min_count=20)
GROUPS = {labels.RACE_NAME_KEY: ("x", "y")}


def test_hand_made_results_pass():
    gates = evaluate_gates(_results(), SETTINGS, GROUPS, {})
    assert [g.passed for g in gates] == [True, True, None, True]
    assert is_blessed(gates)


def test_a_tfma_failure_no_gate_explains_blocks_blessing():
    failure = {"metric": "recall", "label": "a", "is_diff": False, "value": 0.1, "message": "", "slice": "race=x"}
    gates = evaluate_gates(_results(failures=[failure]), SETTINGS, GROUPS, {})
    assert gates[-1].name == GATE_OTHER and gates[-1].passed is False
    assert not is_blessed(gates)


def test_a_judged_comparison_without_a_value_fails():
    gates = evaluate_gates(_results(cross={}), SETTINGS, GROUPS, {})
    fairness = gates[-1]
    assert fairness.name == "fairness_race" and fairness.passed is False
    assert not is_blessed(gates)


def test_regression_gate_needs_a_baseline_and_judges_the_change():
    assert evaluate_gates(_results(), SETTINGS, GROUPS, {})[2].passed is None
    worse = evaluate_gates(_results(baseline=True, macro=0.85), SETTINGS, GROUPS, {})
    assert worse[2].passed is False and worse[2].value == pytest.approx(-0.05)
    same = evaluate_gates(_results(baseline=True, macro=0.89), SETTINGS, GROUPS, {})
    assert same[2].passed is True


def test_missing_macro_auc_fails_the_floor():
    gates = evaluate_gates(_results(macro=None), SETTINGS, GROUPS, {})
    assert gates[0].passed is False and not is_blessed(gates)


def _leaves(message) -> dict[str, object]:
    """Every scalar of a proto as path -> value (floats as floats, NaN kept)."""
    from google.protobuf import json_format

    out: dict[str, object] = {}

    def walk(value, path):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")
        else:
            out[path] = value

    walk(json_format.MessageToDict(message, preserving_proto_field_name=True), "")
    return out


def _tfma_output(out: str) -> dict[str, object]:
    records = {}
    for kind, loaded in (("metrics", tfma.load_metrics(out)), ("plots", tfma.load_plots(out))):
        for record in loaded:
            where = (record.cross_slice_key if record.HasField("cross_slice_key") else record.slice_key)
            items = (record.metric_keys_and_values if kind == "metrics" else record.plot_keys_and_values)
            for kv in items:
                prefix = f"{kind} {where.SerializeToString().hex()} {kv.key.SerializeToString().hex()}"
                for path, value in _leaves(kv.value).items():
                    records[prefix + path] = value
    for path, value in _leaves(tfma.load_validation_result(out)).items():
        records[f"validation{path}"] = value
    return records


def _same(a, b) -> bool:
    if isinstance(a, str) and isinstance(b, str) and a in ("NaN", "Infinity", "-Infinity"):
        return a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == pytest.approx(b, rel=1e-9, abs=1e-12)
    return a == b


def test_shared_rows_metrics_equal_stock_tfma_everywhere(tmp_path, echo_models):
    """Every metric, plot and validation value of components.fast_metrics equals stock TFMA's.

    Candidate and baseline (so diff metrics too), all gates on (per-slice, change and cross-slice
    thresholds), a group whose label scores are inverted and one with random scores.
    """
    data = tmp_path / "eval.tfrecord"
    _write_examples(data, {("z", "cat"): "inverted", ("y", "bird"): "random"}, {("x", "dog"): "random"})
    outputs = {}
    for shared in (False, True):
        out = str(tmp_path / f"shared_{shared}")
        _run_tfma(data, out, echo_models, GATES, shared_rows=shared)
        outputs[shared] = _tfma_output(out)
    stock, fast = outputs[False], outputs[True]
    assert len(stock) > 10_000  # metrics and plots of every slice, label and model were compared
    assert set(stock) == set(fast)
    different = [k for k in stock if not _same(stock[k], fast[k])]
    assert not different, [(k, stock[k], fast[k]) for k in different[:5]]
