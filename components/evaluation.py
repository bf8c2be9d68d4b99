"""TFMA EvalConfig generated from the label list; the gates and their recorded results.

The Evaluator computes, per label and per slice, AUC, PR-AUC, precision, recall and F1 at 0.5,
mean label and mean prediction (calibration), their macro and micro averages, ROC/PR and
calibration plots and the multi-label confusion matrix. Four gates are TFMA thresholds:

- ``macro_auc_floor``: macro-average AUC on the overall slice >= a floor;
- ``label_auc_floors``: each label's AUC on the overall slice >= its floor;
- ``no_regression``: macro AUC not lower than the baseline's (the model serving now) by more
  than a tolerance (skipped when there is no baseline);
- ``fairness_<attribute>``: for each label, the AUC gap between every pair of groups
  (race groups; genders) <= a limit, as TFMA cross-slice thresholds.

TFMA counts a comparison it cannot compute (a group without positives or negatives of a label)
as a failure, and a gap between groups of a handful of positives is mostly noise. So
``evaluate_gates`` reads TFMA's validation result and excuses exactly one kind of failure: a
fairness comparison where either group has fewer than ``fairness_min_count`` positives or
negatives of that label ("not judged"; listed in the gate's record). Every other TFMA failure
stands. Labels defined by the attribute itself (``race_*`` across race groups, ``female``
across genders) are constant within each group and are not compared at all.

Uncertainty: the config also asks for the per-example rows (fast_metrics.EvalRows), from which
EvaluationGate computes DeLong intervals (components.uncertainty) of every gated number; each
gate records its headline value's interval and whether its verdict is within noise, and with
``require_significance`` the regression and fairness gates fail only on significant differences.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from components import uncertainty
from components.base import labels

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

GATE_MACRO = "macro_auc_floor"
GATE_LABELS = "label_auc_floors"
GATE_REGRESSION = "no_regression"
GATE_FAIRNESS_PREFIX = "fairness_"
GATE_OTHER = "other_tfma_validation"
GATES_FILE = "gates.json"  # EvaluationGate's record, inside its ModelBlessing artifact
EVAL_ROWS_MODULE = "components.fast_metrics"  # where TFMA finds the EvalRows metric class


@dataclasses.dataclass(frozen=True)
class GateSettings:
    """The thresholds a model must meet to be blessed (and pushed).

    Attributes:
      min_macro_auc: macro-average AUC floor on the overall slice.
      max_auc_regression: allowed macro-AUC drop against the model serving now; None: no check.
      min_label_auc: AUC floor on the overall slice for every label; None: no per-label floor
        except those in label_auc_floors.
      label_auc_floors: (label name, floor) pairs overriding min_label_auc for single labels.
      max_fairness_gap: largest allowed AUC gap, per label, between two race groups or two
        genders; None disables the fairness gate.
      fairness_min_count: a group is judged for a label only with at least this many positives
        and this many negatives of it (smaller groups are listed as not judged).
      require_significance: the regression and fairness gates fail only on a difference that is
        beyond the tolerance AND significant (its 95% DeLong interval excludes 0); off by default
        (see docs/design.md): a failure within noise is then recorded as such, not excused.
    """

    min_macro_auc: float = 0.7
    max_auc_regression: float | None = 0.02
    min_label_auc: float | None = None
    label_auc_floors: tuple[tuple[str, float], ...] = ()
    # With 20 positives and 20 negatives per group, the standard error of an AUC near 0.9 is about
    # 0.05 (Hanley & McNeil), so of a gap between two groups about 0.07: a 0.15 limit is ~2 standard
    # errors. Smaller groups would make the gate fail on noise.
    max_fairness_gap: float | None = 0.15
    fairness_min_count: int = 20
    require_significance: bool = False

    def __post_init__(self) -> None:
        """Checks the ranges (label names are checked by validate, against a model's labels).

        Raises:
          ValueError: with a message naming the bad setting.
        """
        if not 0.0 <= self.min_macro_auc <= 1.0:
            raise ValueError(f"min macro AUC must be within 0-1, got {self.min_macro_auc}")
        if self.max_auc_regression is not None and self.max_auc_regression < 0:
            raise ValueError(f"max AUC regression must be >= 0, got {self.max_auc_regression}")
        if self.min_label_auc is not None and not 0.0 <= self.min_label_auc <= 1.0:
            raise ValueError(f"min label AUC must be within 0-1, got {self.min_label_auc}")
        for name, floor in self.label_auc_floors:
            if not 0.0 <= floor <= 1.0:
                raise ValueError(f"AUC floor for {name} must be within 0-1, got {floor}")
        if self.max_fairness_gap is not None and not 0.0 <= self.max_fairness_gap <= 1.0:
            raise ValueError(f"max fairness gap must be within 0-1, got {self.max_fairness_gap}")
        if self.fairness_min_count < 1:
            raise ValueError(f"fairness min count must be >= 1, got {self.fairness_min_count}")

    def validate(self, label_names: Sequence[str] = labels.LABEL_NAMES) -> None:
        """Checks that every per-label floor names one of ``label_names`` (ranges: on construction).

        Raises:
          ValueError: with a message naming the bad setting.
        """
        for name, _ in self.label_auc_floors:
            if name not in label_names:
                raise ValueError(f"AUC floor for unknown label {name!r}; labels are {', '.join(label_names)}")

    def label_floor(self, name: str) -> float | None:
        """Returns the AUC floor of one label (None: not gated)."""
        return dict(self.label_auc_floors).get(name, self.min_label_auc)

    def to_json(self) -> str:
        """Serializes the settings (the gate's record, reports)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


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
    return ", ".join(f"{SLICE_FEATURE_NAMES.get(k, k)}={_text(v)}" for k, v in parts)


def _text(value: Any) -> str:
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


# --- reading an Evaluator output -------------------------------------------------------------

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
        items.append((key.column, _text(getattr(key, kind)) if kind else ""))
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


# --- the gates ---------------------------------------------------------------------------------


@dataclasses.dataclass
class GateResult:
    """One gate's verdict, with the values it judged.

    Attributes:
      name: stable id, e.g. ``macro_auc_floor`` or ``fairness_race``.
      title: what the gate checks, in words.
      passed: True, False, or None when it did not apply (no baseline; nothing it could judge).
      threshold: the limit (a floor, a tolerance, a gap), None when there is none.
      value: the headline value judged (macro AUC, worst label AUC, AUC change, largest gap).
      summary: one sentence with the values.
      details: per-label (or per-failure) records.
      interval: the 95% interval of the headline value (Interval.to_dict), None when unknown.
      within_noise: whether the verdict could flip within the intervals of the numbers it
        judged (an interval straddles its threshold); None when there are no intervals.
    """

    name: str
    title: str
    passed: bool | None
    threshold: float | None
    value: float | None
    summary: str
    details: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    interval: dict[str, Any] | None = None
    within_noise: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return dataclasses.asdict(self)


def is_blessed(gate_results: Sequence[GateResult]) -> bool:
    """A model is blessed when the macro-AUC gate passed and no gate failed."""
    by_name = {g.name: g for g in gate_results}
    macro = by_name.get(GATE_MACRO)
    return macro is not None and macro.passed is True and all(g.passed is not False for g in gate_results)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _feature_of(slice_: str, results: EvalResults) -> str | None:
    features = list(results.slices.get(slice_, {}))
    if len(features) == 1:
        return features[0]
    for feature, short in SLICE_FEATURE_NAMES.items():  # a slice absent from the data: parse its name
        if slice_.startswith(f"{short}=") and "," not in slice_:
            return feature
    return None


def _gate_of_failure(failure: Mapping[str, Any], results: EvalResults) -> str:
    if "cross" in failure:
        feature = _feature_of(failure["cross"][0], results)
        if failure["metric"] == "auc" and failure["label"] != AGGREGATE and feature is not None:
            return GATE_FAIRNESS_PREFIX + SLICE_FEATURE_NAMES.get(feature, feature)
        return GATE_OTHER
    if failure.get("slice") != OVERALL:
        return GATE_OTHER
    if failure["metric"] == MACRO_AUC:
        return GATE_REGRESSION if failure["is_diff"] else GATE_MACRO
    if failure["metric"] == "auc" and failure["label"] != AGGREGATE and not failure["is_diff"]:
        return GATE_LABELS
    return GATE_OTHER


def _ci(iv: uncertainty.Interval | None) -> str:
    return "" if iv is None else f" [95% CI {iv.lower:.3f} to {iv.upper:.3f}]"


def _noise(ivs_and_thresholds: Sequence[tuple[uncertainty.Interval | None, float]], passed: bool | None) -> bool | None:
    """Whether a verdict could flip within the intervals of what it judged.

    A pass is within noise when any judged number's interval straddles its threshold; a failure
    when every failing number's does (it needs all of them to flip). None without intervals.
    """
    if passed is None or not ivs_and_thresholds or any(iv is None for iv, _ in ivs_and_thresholds):
        return None
    flags = [iv.straddles(t) for iv, t in ivs_and_thresholds if iv is not None]
    return any(flags) if passed else all(flags)


def _macro_gate(results: EvalResults, gates: GateSettings, tfma_failed: bool,
                intervals: uncertainty.GateIntervals | None) -> GateResult:
    macro = results.value(MACRO_AUC)
    passed = macro is not None and macro >= gates.min_macro_auc and not tfma_failed
    relation = ">=" if passed else "<" if macro is not None and macro < gates.min_macro_auc else "fails"
    iv = intervals.macro_auc if intervals else None
    noise = _noise([(iv, gates.min_macro_auc)], passed) if intervals else None
    return GateResult(
        GATE_MACRO,
        "macro-average AUC floor (overall)",
        passed,
        gates.min_macro_auc,
        macro,
        f"macro AUC {_fmt(macro)}{_ci(iv)} {relation} floor {gates.min_macro_auc:g}"
        + ("; within noise: the interval straddles the floor" if noise else ""),
        interval=None if iv is None else iv.to_dict(),
        within_noise=noise,
    )


def _label_gate(results: EvalResults, gates: GateSettings, failed_labels: set[str],
                intervals: uncertainty.GateIntervals | None) -> GateResult:
    details = []
    for name in results.label_names:
        floor = gates.label_floor(name)
        auc = results.value("auc", name)
        ok = None if floor is None else (auc is not None and auc >= floor and name not in failed_labels)
        iv = intervals.label_auc.get(name) if intervals else None
        details.append({
            "label": name, "auc": auc, "floor": floor, "passed": ok,
            "interval": None if iv is None else iv.to_dict(),
            "within_noise": None if floor is None or iv is None else iv.straddles(floor),
        })
    gated = [d for d in details if d["passed"] is not None]
    if not gated:
        return GateResult(GATE_LABELS, "per-label AUC floors (overall)", None, None, None, "no per-label floor set",
                          details)
    failing = [d for d in gated if not d["passed"]]
    worst = min(gated, key=lambda d: -1.0 if d["auc"] is None else d["auc"] - d["floor"])
    judged = failing if failing else gated
    noise = _noise(
        [(intervals.label_auc.get(d["label"]), d["floor"]) for d in judged], not failing
    ) if intervals else None
    if failing:
        summary = "; ".join(f"{d['label']} AUC {_fmt(d['auc'])} < floor {d['floor']:g}" for d in failing)
    else:
        summary = f"all {len(gated)} labels at or above their floor (closest: {worst['label']} {_fmt(worst['auc'])} " \
                  f"vs {worst['floor']:g})"
    if noise:
        summary += "; within noise: a label's interval straddles its floor"
    worst_iv = intervals.label_auc.get(worst["label"]) if intervals else None
    return GateResult(
        GATE_LABELS, "per-label AUC floors (overall)", not failing, gates.min_label_auc, worst["auc"], summary, details,
        interval=None if worst_iv is None else worst_iv.to_dict(), within_noise=noise,
    )


def _regression_gate(
    results: EvalResults, gates: GateSettings, tfma_failed: bool,
    intervals: uncertainty.GateIntervals | None, baseline_note: str | None = None,
) -> GateResult:
    title = "no macro-AUC regression against the model serving now"
    # Without a baseline TFMA drops change thresholds from the config it writes (rubber stamp).
    if not results.has_baseline:
        why = baseline_note or "no model serving to compare with"
        return GateResult(GATE_REGRESSION, title, None, None, None, f"no baseline: {why}")
    if gates.max_auc_regression is None:
        return GateResult(GATE_REGRESSION, title, None, None, None, "no regression check configured")
    change = results.value(MACRO_AUC, model=DIFF)
    base = results.value(MACRO_AUC, model=BASELINE)
    cand = results.value(MACRO_AUC)
    tolerance = -gates.max_auc_regression
    beyond = change is None or change < tolerance or tfma_failed
    iv = intervals.macro_change if intervals else None
    excused = False
    if beyond and gates.require_significance and change is not None:
        if iv is None:
            raise ValueError("the regression gate requires significance but the change has no interval")
        excused = not iv.upper < 0.0  # a drop that is not significant (the interval reaches 0) passes
    passed = not beyond or excused
    noise = _noise([(iv, tolerance)], passed) if intervals else None
    summary = (
        f"change in macro_auc vs the serving model {_fmt(change, 4)}{_ci(iv)} ({_fmt(cand)} vs {_fmt(base)}) "
        f"is {'beyond' if beyond else 'within'} the allowed drop of {gates.max_auc_regression:g}"
    )
    if excused:
        summary += "; passed: the drop is not significant (its 95% interval includes 0)"
    elif noise:
        summary += "; within noise: the interval straddles the allowed drop"
    details = [
        {
            "label": name,
            "candidate": results.value("auc", name),
            "baseline": results.value("auc", name, model=BASELINE),
            "change": results.value("auc", name, model=DIFF),
            "interval": None if not intervals or intervals.label_change.get(name) is None
            else intervals.label_change[name].to_dict(),
        }
        for name in results.label_names
    ]
    return GateResult(GATE_REGRESSION, title, passed, tolerance, change, summary, details,
                      interval=None if iv is None else iv.to_dict(), within_noise=noise)


def _fairness_gate(
    results: EvalResults,
    gates: GateSettings,
    feature: str,
    groups: Sequence[str],
    exempt: Collection[str],
    tfma_failed_pairs: set[tuple[str, str, str]],
    intervals: uncertainty.GateIntervals | None,
) -> GateResult:
    short = SLICE_FEATURE_NAMES.get(feature, feature)
    limit = gates.max_fairness_gap
    assert limit is not None
    details: list[dict[str, Any]] = []
    judged_total = unjudged_total = 0
    worst: tuple[float, str, str, str] | None = None
    worst_iv: uncertainty.Interval | None = None
    failing: list[str] = []
    excused: list[str] = []
    noise_inputs: list[tuple[uncertainty.Interval | None, float]] = []
    failing_noise: list[tuple[uncertainty.Interval | None, float]] = []
    for name in results.label_names:
        if name in exempt:
            details.append({"label": name, "status": "exempt", "max_gap": None, "pairs": [],
                            "reason": f"defined by {short}: constant within each {short} group"})
            continue
        pairs = []
        for a, b in fairness_pairs(groups):
            sa, sb = slice_name([(feature, a)]), slice_name([(feature, b)])
            pos_a, neg_a = results.positives_negatives(name, sa)
            pos_b, neg_b = results.positives_negatives(name, sb)
            # TFMA reports AUC 0, not NaN, for a group without positives or negatives: undefined here.
            auc_a = results.value("auc", name, sa) if min(pos_a, neg_a) > 0 else None
            auc_b = results.value("auc", name, sb) if min(pos_b, neg_b) > 0 else None
            judged = min(pos_a, neg_a, pos_b, neg_b) >= gates.fairness_min_count
            gap = results.cross_auc.get((sa, sb), {}).get(name) if auc_a is not None and auc_b is not None else None
            tfma_failed = (sa, sb, name) in tfma_failed_pairs
            iv = intervals.gap(feature, a, b, name) if intervals else None
            pair = {
                "groups": [a, b], "auc": [auc_a, auc_b], "positives": [pos_a, pos_b], "negatives": [neg_a, neg_b],
                "gap": None if gap is None else abs(gap), "judged": judged, "tfma_failed": tfma_failed,
                # Signed: AUC(first group) - AUC(second group); "within noise" if it straddles +-limit.
                "interval": None if iv is None else iv.to_dict(),
                "within_noise": None if iv is None else (iv.straddles(limit) or iv.straddles(-limit)),
            }
            if judged:
                judged_total += 1
                # Both must agree: TFMA's cross-slice threshold and the value it computed.
                beyond = gap is None or abs(gap) > limit or tfma_failed
                pair["excused"] = False
                if beyond and gates.require_significance and gap is not None:
                    if iv is None:
                        raise ValueError(f"the fairness gate requires significance but {name} ({a} vs {b}) has no "
                                         "interval")
                    pair["excused"] = not iv.excludes(0.0)
                pair["passed"] = not beyond or pair["excused"]
                if gap is not None and (worst is None or abs(gap) > worst[0]):
                    worst = (abs(gap), name, a, b)
                    worst_iv = iv
                text = f"{name}: {short} {a} {_fmt(auc_a)} vs {b} {_fmt(auc_b)} (gap {_fmt(pair['gap'])}{_ci(iv)})"
                noise_inputs += [(iv, limit), (iv, -limit)]
                if not pair["passed"]:
                    failing.append(text)
                    failing_noise.append((iv, limit if (gap or 0) >= 0 else -limit))
                elif pair["excused"]:
                    excused.append(text)
            else:
                unjudged_total += 1
                pair["passed"] = None
            pairs.append(pair)
        judged_pairs = [p for p in pairs if p["judged"]]
        gaps = [p["gap"] for p in judged_pairs if p["gap"] is not None]
        status = "not judged" if not judged_pairs else "passed" if all(p["passed"] for p in judged_pairs) else "failed"
        details.append({"label": name, "status": status, "max_gap": max(gaps) if gaps else None, "pairs": pairs})
    title = f"AUC gap between {short} groups, per label"
    note = (f"{unjudged_total} of {judged_total + unjudged_total} comparisons not judged (a group with fewer than "
            f"{gates.fairness_min_count} positives or negatives)") if unjudged_total else "every comparison judged"
    if judged_total == 0:
        return GateResult(GATE_FAIRNESS_PREFIX + short, title, None, limit, None,
                          f"nothing to judge: {note}", details)
    passed = not failing
    noise = None if intervals is None else _noise(noise_inputs if passed else failing_noise, passed)
    if failing:
        summary = f"gap above {limit:g}: " + "; ".join(failing) + f"; {note}"
    else:
        assert worst is not None
        summary = (f"largest gap {_fmt(worst[0])} ({worst[1]}: {worst[2]} vs {worst[3]}{_ci(worst_iv)}) <= {limit:g}; "
                   f"{note}")
    if excused:
        summary += f"; {len(excused)} gap(s) above {limit:g} passed as not significant: " + "; ".join(excused)
    if noise:
        summary += "; within noise: a judged gap's interval straddles the limit"
    return GateResult(GATE_FAIRNESS_PREFIX + short, title, passed, limit, worst[0] if worst else None,
                      summary, details, interval=None if worst_iv is None else worst_iv.to_dict(), within_noise=noise)


def evaluate_gates(
    results: EvalResults,
    gates: GateSettings,
    fairness_groups: Mapping[str, Sequence[str]] = FAIRNESS_GROUPS,
    fairness_exempt: Mapping[str, Collection[str]] | None = None,
    intervals: uncertainty.GateIntervals | None = None,
    baseline_note: str | None = None,
) -> list[GateResult]:
    """Judges every gate from an Evaluator's output.

    A gate fails when TFMA's validation failed it or when its own value is missing or out of
    bounds. The one TFMA failure that is excused: a fairness comparison in which a group has
    fewer than ``gates.fairness_min_count`` positives or negatives of the label (recorded as not
    judged). TFMA 0.47 also lists every CrossSlicingSpec that carries a threshold under
    ``missing_cross_slices`` even when it was checked (it looks cross-slice checks up by their
    single-slice spec), so that list is ignored; each judged comparison must instead have a value.
    Any TFMA failure that belongs to no gate fails the extra gate ``other_tfma_validation``.

    With intervals, every gate records the interval of its headline value and whether its
    verdict is within noise; with ``gates.require_significance`` a regression or fairness
    failure whose interval includes 0 passes (recorded as excused).

    Args:
      results: the Evaluator's output (load_eval_results).
      gates: the thresholds the EvalConfig was built with.
      fairness_groups: attribute -> groups, as given to build_eval_config.
      fairness_exempt: attribute -> labels not compared, as given to build_eval_config.
      intervals: DeLong intervals from the Evaluator's per-example rows (None: not recorded).
      baseline_note: why the baseline is what it is (components.baseline), for the regression gate.

    Returns:
      One GateResult per gate, in report order.

    Raises:
      ValueError: significance is required but a judged difference has no interval.
    """
    if fairness_exempt is None:
        fairness_exempt = default_fairness_exempt(
            (d for d in labels.LABELS if d.name in results.label_names), fairness_groups
        )
    by_gate: dict[str, list[Mapping[str, Any]]] = {}
    for failure in results.failures:
        by_gate.setdefault(_gate_of_failure(failure, results), []).append(failure)
    out = [
        _macro_gate(results, gates, bool(by_gate.get(GATE_MACRO)), intervals),
        _label_gate(results, gates, {f["label"] for f in by_gate.get(GATE_LABELS, [])}, intervals),
        _regression_gate(results, gates, bool(by_gate.get(GATE_REGRESSION)), intervals, baseline_note),
    ]
    if gates.max_fairness_gap is not None:
        for feature, groups in fairness_groups.items():
            short = SLICE_FEATURE_NAMES.get(feature, feature)
            failed_pairs = {(f["cross"][0], f["cross"][1], f["label"])
                            for f in by_gate.get(GATE_FAIRNESS_PREFIX + short, [])}
            out.append(_fairness_gate(results, gates, feature, groups, fairness_exempt.get(feature, ()), failed_pairs,
                                      intervals))
    other = [
        f"{f['metric']} ({f['label']}) on {' vs '.join(f['cross']) if 'cross' in f else f['slice']}: "
        f"{_fmt(f['value'])} {f['message']}".strip()
        for f in by_gate.get(GATE_OTHER, [])
    ]
    other += [f"slice with thresholds missing from the eval data: {s}" for s in results.missing_slices]
    if results.missing_thresholds:
        other.append("TFMA found no thresholds to check")
    if other:
        out.append(GateResult(GATE_OTHER, "other TFMA validation failures", False, None, None, "; ".join(other),
                              [{"failure": text} for text in other]))
    return out


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


def read_gates(blessing_uri: str) -> dict[str, Any] | None:
    """Reads the record an EvaluationGate wrote into its blessing (None when there is none).

    Args:
      blessing_uri: the EvaluationGate's ModelBlessing URI.

    Returns:
      The record (see components.evaluation_gate.judge), or None.
    """
    import tensorflow as tf  # already loaded with TFMA; gfile reads gs:// too

    path = f"{blessing_uri.rstrip('/')}/{GATES_FILE}"
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)
