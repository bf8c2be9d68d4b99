"""One Evaluator output (TFMA metrics and validation result) as plain values keyed by names."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from components.base import labels
from components.evaluation.eval_config import AGGREGATE, OVERALL, SLICE_FEATURE_NAMES, slice_name, value_text

CANDIDATE, BASELINE, DIFF = "candidate", "baseline", "diff"


@dataclasses.dataclass
class EvalResults:
    """One Evaluator output as plain values keyed by names (never class ids).

    Attributes:
      label_names: the model's labels, in output order.
      metrics: CANDIDATE / BASELINE / DIFF (candidate minus baseline) -> slice name -> label
        name (or AGGREGATE) -> metric name -> value; None where TFMA gave NaN.
      slices: slice name -> {feature: value} (empty for the overall slice).
      cross_auc: (baseline slice, comparison slice) -> label -> AUC(baseline) - AUC(comparison),
        the candidate's cross-slice comparisons.
      failures: TFMA validation failures (dicts: metric, label, slice or cross, is_diff, value).
      missing_slices: slicing specs with thresholds that matched no data.
      missing_thresholds: TFMA found no thresholds at all.
      validation_ok: TFMA's own verdict.
    """

    label_names: tuple[str, ...]
    metrics: dict[str, dict[str, dict[str, dict[str, float | None]]]]
    slices: dict[str, dict[str, str]]
    cross_auc: dict[tuple[str, str], dict[str, float | None]]
    failures: list[dict[str, Any]]
    missing_slices: list[str]
    missing_thresholds: bool
    validation_ok: bool

    @property
    def has_baseline(self) -> bool:
        """Whether the Evaluator compared with a baseline model."""
        return bool(self.metrics.get(BASELINE))

    def value(self, metric: str, label: str = AGGREGATE, slice_: str = OVERALL, model: str = CANDIDATE) -> float | None:
        """One metric value, or None when absent or NaN."""
        return self.metrics.get(model, {}).get(slice_, {}).get(label, {}).get(metric)

    def positives_negatives(self, label: str, slice_: str) -> tuple[int, int]:
        """Examples of a slice with and without a label (0, 0 when the slice is absent)."""
        count = self.value("example_count", slice_=slice_)
        if count is None:
            count = self.value("example_count", label, slice_)
        mean = self.value("mean_label", label, slice_)
        if count is None or mean is None:
            return 0, 0
        positives = round(mean * count)
        return positives, round(count) - positives

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view (cross keys as "baseline | comparison")."""
        out = dataclasses.asdict(self)
        out["cross_auc"] = {f"{a} | {b}": v for (a, b), v in self.cross_auc.items()}
        out["label_names"] = list(self.label_names)
        return out


def _finite(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else float(x)


def _slice_items(slice_key_proto: Any) -> list[tuple[str, str]]:
    items = []
    for key in slice_key_proto.single_slice_keys:
        kind = key.WhichOneof("kind")
        items.append((key.column, value_text(getattr(key, kind)) if kind else ""))
    return items


def _label_of(metric_key: Any, label_names: Sequence[str]) -> str:
    if metric_key.HasField("sub_key") and metric_key.sub_key.HasField("class_id"):
        class_id = metric_key.sub_key.class_id.value
        if not 0 <= class_id < len(label_names):
            raise ValueError(f"TFMA output has class id {class_id}, but the model has {len(label_names)} labels")
        return label_names[class_id]
    return AGGREGATE


def _spec_text(spec: Any) -> str:
    if spec.feature_keys:
        return "by " + ", ".join(SLICE_FEATURE_NAMES.get(k, k) for k in spec.feature_keys)
    return slice_name(list(spec.feature_values.items()))


def _role(metric_key: Any) -> str:
    if metric_key.is_diff:
        return DIFF
    return BASELINE if metric_key.model_name == BASELINE else CANDIDATE


def load_eval_results(evaluation_uri: str, label_names: Sequence[str] = labels.LABEL_NAMES) -> EvalResults:
    """Reads an Evaluator's metrics and validation result into EvalResults.

    Args:
      evaluation_uri: the ModelEvaluation artifact's URI.
      label_names: the model's labels, in output order (class id i is label_names[i]).

    Returns:
      The EvalResults.
    """
    import tensorflow_model_analysis as tfma

    label_names = tuple(label_names)
    metrics: dict[str, dict[str, dict[str, dict[str, float | None]]]] = {}
    slices: dict[str, dict[str, str]] = {}
    cross_auc: dict[tuple[str, str], dict[str, float | None]] = {}
    for record in tfma.load_metrics(evaluation_uri):
        if record.HasField("cross_slice_key"):
            pair = (
                slice_name(_slice_items(record.cross_slice_key.baseline_slice_key)),
                slice_name(_slice_items(record.cross_slice_key.comparison_slice_key)),
            )
            for kv in record.metric_keys_and_values:
                if kv.key.name == "auc" and _role(kv.key) == CANDIDATE and kv.value.HasField("double_value"):
                    label = _label_of(kv.key, label_names)
                    cross_auc.setdefault(pair, {})[label] = _finite(kv.value.double_value.value)
            continue
        items = _slice_items(record.slice_key)
        name = slice_name(items)
        slices[name] = dict(items)
        for kv in record.metric_keys_and_values:
            if not kv.value.HasField("double_value"):
                continue
            label = _label_of(kv.key, label_names)
            by_label = metrics.setdefault(_role(kv.key), {}).setdefault(name, {}).setdefault(label, {})
            by_label[kv.key.name] = _finite(kv.value.double_value.value)
    validation = tfma.load_validation_result(evaluation_uri)
    failures = []
    for per_slice in validation.metric_validations_per_slice:
        where: dict[str, Any]
        if per_slice.HasField("cross_slice_key"):
            where = {
                "cross": [
                    slice_name(_slice_items(per_slice.cross_slice_key.baseline_slice_key)),
                    slice_name(_slice_items(per_slice.cross_slice_key.comparison_slice_key)),
                ]
            }
        else:
            where = {"slice": slice_name(_slice_items(per_slice.slice_key))}
        for failure in per_slice.failures:
            value = failure.metric_value
            failures.append(
                {
                    "metric": failure.metric_key.name,
                    "label": _label_of(failure.metric_key, label_names),
                    "is_diff": bool(failure.metric_key.is_diff),
                    "value": _finite(value.double_value.value) if value.HasField("double_value") else None,
                    "message": failure.message.strip(),
                    **where,
                }
            )
    return EvalResults(
        label_names=label_names,
        metrics=metrics,
        slices=slices,
        cross_auc=cross_auc,
        failures=failures,
        missing_slices=[_spec_text(s) for s in validation.missing_slices],
        missing_thresholds=bool(validation.missing_thresholds),
        validation_ok=bool(validation.validation_ok),
    )
