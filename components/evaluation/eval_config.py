"""The Evaluator's tfma.EvalConfig, generated from the label list and the GateSettings, and read back.

The slices (overall, one feature at a time, gender x race), the per-label and averaged metrics,
and the gates as TFMA thresholds: floors and the regression check on the overall slice,
fairness as cross-slice thresholds. ``gates_from_eval_config`` reads the settings back from the
config an Evaluator actually ran with (it can be replaced at run time on Kubeflow).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from components.base import labels
from components.evaluation.settings import GateSettings

if TYPE_CHECKING:  # TFMA (and TensorFlow) load only where a function needs them: the report renders without
    import tensorflow_model_analysis as tfma

MACRO_AUC = "macro_auc"  # reported name of the macro-average AUC
# TFMA's default of 10,000 AUC thresholds doubles the Evaluator's time on 2 cores; 1,000 changes
# AUC by well under 0.001 at our eval-set sizes.
AUC_THRESHOLDS = 1000
CURVE_THRESHOLDS = 100  # points of the ROC/PR curves in the report
CALIBRATION_BUCKETS = 10
# Class names of the per-label AUC: stock TFMA's and components.fast_metrics' (read back by the gate).
AUC_CLASS_NAMES = frozenset({"AUC", "RowsAUC"})
DECISION_THRESHOLD = 0.5  # precision, recall, F1 and the confusion matrix are at this score

SLICE_FEATURES: tuple[str, ...] = (labels.GENDER_NAME_KEY, labels.RACE_NAME_KEY, labels.AGE_GROUP_KEY)
CROSSED_SLICES: tuple[tuple[str, ...], ...] = ((labels.GENDER_NAME_KEY, labels.RACE_NAME_KEY),)
# The Evaluator writes its per-example rows (components.fast_metrics.EvalRows) once per cell of this
# crossed slice; every example lies in one cell, and the fairness groups are unions of cells.
ROWS_PARTITION: tuple[str, ...] = (labels.GENDER_NAME_KEY, labels.RACE_NAME_KEY)
# Attribute -> its groups, compared pairwise by the fairness gate.
FAIRNESS_GROUPS: Mapping[str, tuple[str, ...]] = {
    labels.RACE_NAME_KEY: labels.RACE_NAMES,
    labels.GENDER_NAME_KEY: labels.GENDER_NAMES,
}
# Slice feature -> the raw field it is derived from (to find labels defined by the attribute).
_SLICE_SOURCE_FIELD = {
    labels.RACE_NAME_KEY: labels.RACE_KEY,
    labels.GENDER_NAME_KEY: labels.GENDER_KEY,
    labels.AGE_GROUP_KEY: labels.AGE_KEY,
}
# Short names used in slice names: "race=white", "gender=female, race=white".
SLICE_FEATURE_NAMES: Mapping[str, str] = {
    labels.GENDER_NAME_KEY: "gender",
    labels.RACE_NAME_KEY: "race",
    labels.AGE_GROUP_KEY: "age",
}
OVERALL = "overall"
AGGREGATE = "_all_labels"  # the "label" under which aggregate (macro/micro) metrics are stored

# Metrics averaged over labels, as macro_<name> / micro_<name> (the macro AUC is MACRO_AUC itself).
_AVERAGED = ("auc", "auc_precision_recall", "precision", "recall", "f1_score")
_AVERAGED_CLASSES = ("AUC", "AUCPrecisionRecall", "Precision", "Recall", "F1Score")

EVAL_ROWS_MODULE = "components.fast_metrics"  # where TFMA finds the EvalRows metric class


def default_fairness_exempt(
    label_defs: Iterable[labels.LabelDef] = labels.LABELS, fairness_features: Iterable[str] = FAIRNESS_GROUPS
) -> dict[str, tuple[str, ...]]:
    """Labels defined by a fairness attribute, which are constant inside its groups.

    Args:
      label_defs: the label definitions.
      fairness_features: the slice features compared by the fairness gate.

    Returns:
      slice feature -> names of the labels derived from the same raw field.
    """
    defs = list(label_defs)
    return {
        feature: tuple(d.name for d in defs if d.field == _SLICE_SOURCE_FIELD.get(feature))
        for feature in fairness_features
    }


def slice_name(slice_key: Iterable[tuple[str, Any]]) -> str:
    """Readable, stable slice name, e.g. ``overall``, ``race=white``, ``gender=female, race=white``."""
    parts = sorted(slice_key, key=lambda kv: list(SLICE_FEATURE_NAMES).index(kv[0]) if kv[0] in SLICE_FEATURE_NAMES
                   else len(SLICE_FEATURE_NAMES))
    if not parts:
        return OVERALL
    return ", ".join(f"{SLICE_FEATURE_NAMES.get(k, k)}={value_text(v)}" for k, v in parts)


def value_text(value: Any) -> str:
    """A slice value as text (TFMA gives bytes for string features)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def fairness_pairs(groups: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair of groups, in the order of ``groups``."""
    return list(itertools.combinations(groups, 2))


def build_eval_config(
    label_names: Sequence[str] = labels.LABEL_NAMES,
    gates: GateSettings | None = None,
    slice_features: Sequence[str] = SLICE_FEATURES,
    crossed_slices: Sequence[Sequence[str]] = CROSSED_SLICES,
    fairness_groups: Mapping[str, Sequence[str]] = FAIRNESS_GROUPS,
    fairness_exempt: Mapping[str, Collection[str]] | None = None,
    shared_rows: bool = True,
    preprocessing: bool = True,
) -> tfma.EvalConfig:
    """Builds the Evaluator's config from the label list and the gate settings.

    One MetricsSpec per label (binarized by its class id) so that each label gets its own
    AUC floor and its own fairness thresholds; one spec each for macro and micro averages;
    one for the example count and the multi-label confusion matrix. Every threshold is scoped:
    floors and the regression check to the overall slice, fairness to cross slices.

    Args:
      label_names: one per model output column, in order.
      gates: the thresholds; GateSettings() by default.
      slice_features: features to slice by one at a time, besides the overall slice.
      crossed_slices: feature tuples to slice by jointly (e.g. gender x race).
      fairness_groups: attribute -> groups compared pairwise by the fairness gate.
      fairness_exempt: attribute -> labels not compared across its groups; by default the labels
        of components.base.labels.LABELS derived from that attribute.
      shared_rows: use components.fast_metrics (the same TFMA metrics fed by one shared combiner
        per slice, 7x faster at 3,000 examples); False: the stock classes (tests compare the two).
      preprocessing: labels and slice features come from the model's ``transform_features``
        signature (raw examples, as in the pipeline); False: from the examples themselves.

    Returns:
      A tfma.EvalConfig.
    """
    import tensorflow_model_analysis as tfma

    gates = gates or GateSettings()
    gates.validate(label_names)
    if fairness_exempt is None:
        fairness_exempt = default_fairness_exempt(
            (d for d in labels.LABELS if d.name in label_names), fairness_groups
        )
    overall = tfma.SlicingSpec()
    slicing_specs = [overall, *(tfma.SlicingSpec(feature_keys=[f]) for f in slice_features)]
    slicing_specs += [tfma.SlicingSpec(feature_keys=list(keys)) for keys in crossed_slices]
    partition = tfma.SlicingSpec(feature_keys=list(ROWS_PARTITION))
    if partition not in slicing_specs:  # the per-example rows are written per cell of this slice
        slicing_specs.append(partition)
    cross_specs_by_feature: dict[str, list[tfma.CrossSlicingSpec]] = {}
    if gates.max_fairness_gap is not None:
        for feature, groups in fairness_groups.items():
            specs = []
            for i, base in enumerate(groups[:-1]):
                specs.append(
                    tfma.CrossSlicingSpec(
                        baseline_spec=tfma.SlicingSpec(feature_values={feature: base}),
                        slicing_specs=[tfma.SlicingSpec(feature_values={feature: g}) for g in groups[i + 1 :]],
                    )
                )
            cross_specs_by_feature[feature] = specs
    cross_slicing_specs = [s for specs in cross_specs_by_feature.values() for s in specs]
    at_decision = json.dumps({"thresholds": [DECISION_THRESHOLD]})
    auc_grid = json.dumps({"num_thresholds": AUC_THRESHOLDS})
    curve_grid = json.dumps({"num_thresholds": CURVE_THRESHOLDS})
    calibration_grid = json.dumps({"num_buckets": CALIBRATION_BUCKETS})

    def auc_config(name: str) -> tfma.MetricConfig:
        floor = gates.label_floor(name)
        per_slice = []
        if floor is not None:
            per_slice.append(
                tfma.PerSliceMetricThreshold(
                    slicing_specs=[overall],
                    threshold=tfma.MetricThreshold(
                        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": floor})
                    ),
                )
            )
        cross = []
        if gates.max_fairness_gap is not None:
            gap = gates.max_fairness_gap
            for feature, specs in cross_specs_by_feature.items():
                if name in fairness_exempt.get(feature, ()):
                    continue
                cross.append(
                    tfma.CrossSliceMetricThreshold(
                        cross_slicing_specs=specs,
                        threshold=tfma.MetricThreshold(
                            value_threshold=tfma.GenericValueThreshold(
                                lower_bound={"value": -gap}, upper_bound={"value": gap}
                            )
                        ),
                    )
                )
        return tfma.MetricConfig(
            class_name="AUC",
            config=auc_grid,
            per_slice_thresholds=per_slice,
            cross_slice_thresholds=cross,
        )

    per_label_specs = [
        tfma.MetricsSpec(
            metrics=[
                auc_config(name),
                tfma.MetricConfig(class_name="AUCPrecisionRecall", config=auc_grid),
                tfma.MetricConfig(class_name="Precision", config=at_decision),
                tfma.MetricConfig(class_name="Recall", config=at_decision),
                tfma.MetricConfig(class_name="F1Score", config=at_decision),
                tfma.MetricConfig(class_name="MeanLabel"),
                tfma.MetricConfig(class_name="MeanPrediction"),
                # ROC and PR curves and calibration for the report (TFMA computes plots on every slice).
                tfma.MetricConfig(class_name="ConfusionMatrixPlot", config=curve_grid),
                tfma.MetricConfig(class_name="CalibrationPlot", config=calibration_grid),
            ],
            binarize=tfma.BinarizationOptions(class_ids={"values": [class_id]}),
        )
        for class_id, name in enumerate(label_names)
    ]
    macro_gate = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": gates.min_macro_auc})
    )
    if gates.max_auc_regression is not None:
        macro_gate.change_threshold.CopyFrom(
            tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -gates.max_auc_regression}
            )
        )
    class_weights = {i: 1.0 for i in range(len(label_names))}

    def averaged(prefix: str, aggregate: tfma.AggregationOptions) -> tfma.MetricsSpec:
        metrics = []
        for base, class_name in zip(_AVERAGED, _AVERAGED_CLASSES, strict=True):
            config: dict[str, Any] = {"name": f"{prefix}_{base}"}
            if base in ("auc", "auc_precision_recall"):
                config["num_thresholds"] = AUC_THRESHOLDS
            else:
                config["thresholds"] = [DECISION_THRESHOLD]
            per_slice = []
            if config["name"] == MACRO_AUC:
                per_slice = [tfma.PerSliceMetricThreshold(slicing_specs=[overall], threshold=macro_gate)]
            metrics.append(
                tfma.MetricConfig(class_name=class_name, config=json.dumps(config), per_slice_thresholds=per_slice)
            )
        return tfma.MetricsSpec(metrics=metrics, aggregate=aggregate)

    config = tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name="serving_default",
                # Labels and slice features come from the model's Transform signature: the
                # Evaluator reads ExampleGen's raw examples (Transform does not materialize).
                preprocessing_function_names=[labels.TRANSFORM_FEATURES_SIGNATURE] if preprocessing else [],
                label_key=labels.LABELS_KEY,
                prediction_key=labels.PROBABILITIES_KEY,
                model_type=tfma.TF_GENERIC,
            )
        ],
        slicing_specs=slicing_specs,
        cross_slicing_specs=cross_slicing_specs,
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(
                        class_name="MultiLabelConfusionMatrixPlot",
                        config=json.dumps({"thresholds": [DECISION_THRESHOLD]}),
                    ),
                    # Per-example rows (ids, labels, predictions) for what TFMA does not compute:
                    # DeLong intervals, metrics at tuned thresholds, the error thumbnails.
                    tfma.MetricConfig(
                        class_name="EvalRows",
                        module=EVAL_ROWS_MODULE,
                        config=json.dumps({"partition": list(ROWS_PARTITION)}),
                    ),
                ]
            ),
            *per_label_specs,
            averaged("macro", tfma.AggregationOptions(macro_average=True, class_weights=class_weights)),
            averaged("micro", tfma.AggregationOptions(micro_average=True)),
        ],
    )
    if shared_rows:
        from components import fast_metrics  # Beam and TFMA: the CLI imports this module (via config) without them

        for spec in config.metrics_specs:
            for metric in spec.metrics:
                if metric.class_name in fast_metrics.REPLACEMENTS:
                    metric.class_name = fast_metrics.REPLACEMENTS[metric.class_name]
                    metric.module = fast_metrics.__name__
    return config


def gates_from_eval_config(
    eval_config: tfma.EvalConfig, label_names: Sequence[str], fairness_min_count: int,
    require_significance: bool = False,
) -> tuple[GateSettings, dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """Reads the gate settings back from the EvalConfig an Evaluator ran with.

    The Evaluator's config can be replaced at run time (a Kubeflow runtime parameter), so the
    gates are judged against the thresholds TFMA actually used, not against compile-time values.

    Args:
      eval_config: the config (as written by build_eval_config, possibly with other values).
      label_names: the model's labels in output order.
      fairness_min_count: see GateSettings (not part of a TFMA config).
      require_significance: see GateSettings (not part of a TFMA config).

    Returns:
      (GateSettings, fairness groups: attribute -> groups, fairness exempt: attribute -> labels
      without a cross-slice threshold).

    Raises:
      ValueError: the config is not one build_eval_config could have made (e.g. two different
        fairness limits).
    """
    import tensorflow_model_analysis as tfma

    floors: dict[str, float | None] = {name: None for name in label_names}
    gaps: set[float] = set()
    gated_labels: dict[str, set[str]] = {}
    min_macro_auc, max_regression = 0.0, None
    for spec in eval_config.metrics_specs:
        class_ids = list(spec.binarize.class_ids.values) if spec.HasField("binarize") else []
        for metric in spec.metrics:
            name = json.loads(metric.config or "{}").get("name", "")
            for per_slice in metric.per_slice_thresholds:
                if not any(s == tfma.SlicingSpec() for s in per_slice.slicing_specs):
                    continue
                threshold = per_slice.threshold
                if name == MACRO_AUC:
                    if threshold.HasField("value_threshold"):
                        min_macro_auc = threshold.value_threshold.lower_bound.value
                    if threshold.HasField("change_threshold"):
                        max_regression = -threshold.change_threshold.absolute.value
                elif (
                    metric.class_name in AUC_CLASS_NAMES
                    and len(class_ids) == 1
                    and threshold.HasField("value_threshold")
                ):
                    floors[label_names[class_ids[0]]] = threshold.value_threshold.lower_bound.value
            for cross in metric.cross_slice_thresholds:
                if metric.class_name not in AUC_CLASS_NAMES or len(class_ids) != 1:
                    continue
                gaps.add(cross.threshold.value_threshold.upper_bound.value)
                for cross_spec in cross.cross_slicing_specs:
                    for feature in cross_spec.baseline_spec.feature_values:
                        gated_labels.setdefault(feature, set()).add(label_names[class_ids[0]])
    if len(gaps) > 1:
        raise ValueError(f"the eval config has different fairness limits {sorted(gaps)}; expected one")
    groups: dict[str, list[str]] = {}
    for cross_spec in eval_config.cross_slicing_specs:
        for spec in (cross_spec.baseline_spec, *cross_spec.slicing_specs):
            for feature, value in spec.feature_values.items():
                if value not in groups.setdefault(feature, []):
                    groups[feature].append(value)
    values = {f for f in floors.values() if f is not None}
    if all(f is not None for f in floors.values()) and len(values) == 1:
        min_label_auc, overrides = values.pop(), ()
    else:
        min_label_auc, overrides = None, tuple((n, f) for n, f in floors.items() if f is not None)
    settings = GateSettings(
        min_macro_auc=min_macro_auc,
        max_auc_regression=max_regression,
        min_label_auc=min_label_auc,
        label_auc_floors=overrides,
        max_fairness_gap=gaps.pop() if gaps else None,
        fairness_min_count=fairness_min_count,
        require_significance=require_significance,
    )
    fairness_groups = {f: tuple(g) for f, g in groups.items() if f in gated_labels}
    exempt = {f: tuple(n for n in label_names if n not in gated_labels[f]) for f in fairness_groups}
    return settings, fairness_groups, exempt
