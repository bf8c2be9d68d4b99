"""The Evaluator's results as the report shows them: slices in report order, the curves and the
multi-label confusion, and each label's decision threshold with the numbers there."""

from __future__ import annotations

from typing import Any

from components import eval_table, evaluation
from components.base import labels
from components.trainer import calibration, decision

SLICE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("overall", ()),
    ("gender", (labels.GENDER_NAME_KEY,)),
    ("race", (labels.RACE_NAME_KEY,)),
    ("age group", (labels.AGE_GROUP_KEY,)),
    ("gender x race", (labels.GENDER_NAME_KEY, labels.RACE_NAME_KEY)),
)
_VALUE_ORDER = {
    labels.GENDER_NAME_KEY: labels.GENDER_NAMES,
    labels.RACE_NAME_KEY: labels.RACE_NAMES,
    labels.AGE_GROUP_KEY: tuple(name for _, name in labels.AGE_GROUPS),
}



def _slice_group(features: dict[str, str]) -> str:
    keys = tuple(sorted(features, key=lambda k: list(evaluation.SLICE_FEATURE_NAMES).index(k)
                        if k in evaluation.SLICE_FEATURE_NAMES else 99))
    for group, group_keys in SLICE_GROUPS:
        if keys == group_keys:
            return group
    return " x ".join(evaluation.SLICE_FEATURE_NAMES.get(k, k) for k in keys)


def _slice_sort_key(features: dict[str, str]) -> tuple:
    key = []
    for feature in sorted(features):
        order = _VALUE_ORDER.get(feature, ())
        value = features[feature]
        key.append((order.index(value) if value in order else len(order), value))
    return tuple(key)


def ordered_slices(results: evaluation.EvalResults) -> list[dict[str, Any]]:
    """The evaluated slices in report order: overall, gender, race, age group, gender x race, others.

    Args:
      results: the Evaluator's output.

    Returns:
      Dicts: name, group, features, example_count.
    """
    group_rank = {g: i for i, (g, _) in enumerate(SLICE_GROUPS)}
    rows = [
        {
            "name": name,
            "group": _slice_group(features),
            "features": features,
            "example_count": results.value("example_count", evaluation.AGGREGATE, name),
        }
        for name, features in results.slices.items()
    ]
    return sorted(rows, key=lambda r: (group_rank.get(r["group"], len(group_rank)), r["group"],
                                       _slice_sort_key(r["features"])))


def curves(evaluation_uri: str, label_names: tuple[str, ...]) -> dict[str, Any]:
    """ROC, PR and calibration curves per label and the multi-label confusion at 0.5, overall slice.

    Args:
      evaluation_uri: the ModelEvaluation artifact's URI.
      label_names: the model's labels in output order.

    Returns:
      {"per_label": {label: {model: {"roc": [[fpr, tpr], ...], "pr": [[recall, precision], ...],
      "calibration": [[lower, upper, count, mean_label, mean_prediction], ...]}}},
      "co_prediction": {"threshold", "rates": [[rate label i examples predicted j]]}} for the
      candidate (and the baseline's curves under model "baseline").
    """
    import tensorflow_model_analysis as tfma

    per_label: dict[str, dict[str, dict[str, list[list[float]]]]] = {}
    co_prediction: dict[str, Any] = {}
    for record in tfma.load_plots(evaluation_uri):
        if record.HasField("cross_slice_key") or record.slice_key.single_slice_keys:
            continue
        for kv in record.plot_keys_and_values:
            model = evaluation.BASELINE if kv.key.model_name == evaluation.BASELINE else evaluation.CANDIDATE
            value = kv.value
            if value.HasField("multi_label_confusion_matrix_at_thresholds") and model == evaluation.CANDIDATE:
                matrices = value.multi_label_confusion_matrix_at_thresholds.matrices
                if matrices:
                    n = len(label_names)
                    rates: list[list[float | None]] = [[None] * n for _ in range(n)]
                    for e in matrices[0].entries:
                        total = e.true_positives + e.false_positives + e.true_negatives + e.false_negatives
                        if total:
                            rates[e.actual_class_id][e.predicted_class_id] = (
                                (e.true_positives + e.false_positives) / total
                            )
                    co_prediction = {"threshold": matrices[0].threshold, "rates": rates}
                continue
            if not kv.key.sub_key.HasField("class_id"):
                continue
            label = label_names[kv.key.sub_key.class_id.value]
            entry = per_label.setdefault(label, {}).setdefault(model, {})
            if value.HasField("confusion_matrix_at_thresholds"):
                roc, pr = [], []
                for m in value.confusion_matrix_at_thresholds.matrices:
                    negatives = m.false_positives + m.true_negatives
                    positives = m.true_positives + m.false_negatives
                    if negatives and positives:
                        roc.append([m.false_positives / negatives, m.true_positives / positives])
                    predicted = m.true_positives + m.false_positives
                    if positives and predicted:
                        pr.append([m.true_positives / positives, m.true_positives / predicted])
                entry["roc"] = sorted(roc)
                entry["pr"] = sorted(pr)
            if value.HasField("calibration_histogram_buckets"):
                buckets = []
                for b in value.calibration_histogram_buckets.buckets:
                    count = b.num_weighted_examples.value
                    if count <= 0:
                        continue
                    buckets.append([
                        max(b.lower_threshold_inclusive, 0.0), min(b.upper_threshold_exclusive, 1.0), count,
                        b.total_weighted_label.value / count, b.total_weighted_refined_prediction.value / count,
                    ])
                entry["calibration"] = buckets
    return {"per_label": per_label, "co_prediction": co_prediction}



def decision_summary(model: dict[str, Any], table: eval_table.EvalTable | None,
                     label_names: tuple[str, ...]) -> dict[str, Any]:
    """Each label's decision threshold with precision/recall/F1 there and at 0.5, and calibration error.

    Computed outside TFMA (its EvalConfig is fixed before the trainer chooses the thresholds): on
    the eval split from the per-example rows, beside the trainer's out-of-fold numbers stored in
    the model's labels.json.

    Args:
      model: the model's labels.json (``thresholds``, ``calibration``, ``decision``), as _model_info reads it.
      table: the eval split's per-example rows, or None.
      label_names: the labels in output order.

    Returns:
      {"available": whether the model stores thresholds, the trainer's policy settings, "per_label":
      {label: {threshold, stored, choice (the trainer's record), calibration, eval: {at_threshold,
      at_default, calibration_error: {before, after}}}}}.
    """
    stored = model.get("thresholds") or {}
    info = model.get("decision") or {}
    calibrations = model.get("calibration") or {}
    per_label: dict[str, Any] = {}
    for k, name in enumerate(label_names):
        threshold = float(stored.get(name, decision.DEFAULT_THRESHOLD))
        entry: dict[str, Any] = {
            "threshold": threshold,
            "stored": name in stored,
            "choice": (info.get("per_label") or {}).get(name),
            "calibration": calibrations.get(name),
        }
        if table is not None:
            y, scores = table.labels[:, k], table.predictions[eval_table.CANDIDATE][:, k]
            before = None
            if calibrations.get(name):
                before = calibration.expected_calibration_error(
                    y, calibration.LabelCalibration(**calibrations[name]).invert(scores)
                )
            entry["eval"] = {
                "at_threshold": decision.confusion_at(y, scores, threshold),
                "at_default": decision.confusion_at(y, scores, decision.DEFAULT_THRESHOLD),
                "calibration_error": {"before": before,
                                      "after": calibration.expected_calibration_error(y, scores)},
                "positives": int(y.sum()),
                "negatives": int(len(y) - y.sum()),
            }
        per_label[name] = entry
    settings = {k: info.get(k) for k in ("policies", "min_positives", "calibration_method", "folds",
                                         "out_of_fold_examples", "epochs", "skipped")}
    return {"available": bool(stored), **settings, "per_label": per_label}

