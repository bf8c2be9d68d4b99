"""TFMA's own multi-label metrics, fed from one shared per-slice combiner instead of ~30.

Why: with one binarized MetricsSpec per label, stock TFMA 0.47 runs a separate Python combiner
per label and metric family (calibration histogram, binary confusion matrices at 0.5, mean
label/prediction): 34 combiners, each called on every (example, slice) pair, and its sparse
histograms of up to 10,000 ``Bucket`` objects are pickled one object at a time whenever Beam
moves an accumulator between stages. Measured on 2 cores: 17 ms per evaluated example, the
Evaluator's largest cost by far (a config with only an example count runs the same 3,000
examples x 5 slices in 2.6 s instead of 59 s).

What changes: the classes below are the stock TFMA metrics (same names, configs, keys, derived
math, plots and thresholds), except that each per-label combiner of theirs is replaced by a
derived step that replays exactly what that combiner would have accumulated, from one shared
``_LabelRowsCombiner`` that keeps each example's label vector, prediction vector and weight as
numpy rows. The replay follows ``metric_util.to_label_prediction_example_weight`` (class
selection, micro flattening, class weights, fractional labels) with array operations, then
builds the stock accumulator types (histogram buckets, confusion-matrix accumulator, weighted
totals), so everything downstream is TFMA's own code.
``tests/test_evaluation.py::test_shared_rows_metrics_equal_stock_tfma_everywhere`` runs both on
the same data and compares every metric, plot and validation value.

Scope: dense multi-hot labels with one prediction per label (this pipeline's model); top-k and
k sub keys, example-id sampling and metric preprocessors are not supported and raise. The replay
reads the stock combiners' private attributes, so it is tied to the pinned TFMA (0.47.1); the
equality test is what guards an upgrade.

Memory: a slice's accumulator holds its examples' rows (2 x labels + 1 floats: 168 bytes per
example with 10 labels; about 290 bytes with the captured features below, measured with UTKFace
file names), where stock histograms are bounded. The overall slice of 1 million eval examples would
hold about 290 MB; beyond that, evaluate with ``build_eval_config(shared_rows=False)`` (EvalRows
then keeps the rows alone).

Per-example rows out of the Evaluator: the rows also keep each example's file name and slicing
features (``captured_features``), read through a preprocessor that names only those features.
``EvalRows`` (not a stock metric) writes them, with the labels and every model's predictions, as
array-valued metrics, once per gender x race cell (see ``_EmitRows``);
``components.eval_table.load_eval_table`` reads them back for the DeLong intervals, the metrics at
tuned thresholds and the error thumbnails.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis import constants
from tensorflow_model_analysis.metrics import (
    binary_confusion_matrices,
    calibration,
    calibration_histogram,
    calibration_plot,
    confusion_matrix_metrics,
    confusion_matrix_plot,
    metric_types,
    metric_util,
    multi_label_confusion_matrix_plot,
)

ROWS_NAME = "_facepipe_label_rows"  # private (leading underscore): TFMA drops it from the output
# The feature that identifies an example in the per-example rows EvalRows writes (unique per example).
ID_FEATURE = "filename"
_ROWS_PREPROCESSOR = "facepipe_rows_features"


def captured_features(eval_config: Any) -> tuple[str, ...]:
    """The features the shared rows keep per example: the id feature and every slicing feature.

    Derived from the EvalConfig alone, so every metric builds the same shared combiner (TFMA
    de-duplicates computations by combiner class, keys and preprocessor names; the first wins).
    """
    names = {ID_FEATURE}
    specs = list(getattr(eval_config, "slicing_specs", []) or [])
    for cross in getattr(eval_config, "cross_slicing_specs", []) or []:
        specs += [cross.baseline_spec, *cross.slicing_specs]
    for spec in specs:
        names.update(spec.feature_keys)
        names.update(spec.feature_values)
    return tuple(sorted(names))


def _rows_preprocessor(eval_config: Any) -> metric_types.StandardMetricInputsPreprocessor:
    """Adds the captured raw features and all transformed features (slice features live there) to the inputs.

    Only named raw features: the raw example also holds the image bytes, which must not be copied.
    """
    return metric_types.StandardMetricInputsPreprocessor(
        include_filter={
            constants.FEATURES_KEY: {name: {} for name in captured_features(eval_config)},
            constants.TRANSFORMED_FEATURES_KEY: {},
        },
        include_default_inputs=True,
        name=_ROWS_PREPROCESSOR,
    )


def _feature_text(element: Mapping[str, Any], name: str, model_name: str) -> str:
    """One example's value of a feature as text ("" when absent): transformed features first, then raw."""
    for source_key in (constants.TRANSFORMED_FEATURES_KEY, constants.FEATURES_KEY):
        source = element.get(source_key)
        if not isinstance(source, Mapping):
            continue
        if isinstance(source.get(model_name), Mapping):  # multi-model transformed features are per model
            source = source[model_name]
        value = source.get(name)
        if value is None:
            continue
        flat = np.asarray(value).reshape(-1)
        if flat.size != 1:
            raise ValueError(f"fast_metrics keeps one value of feature {name!r} per example, got {flat.size}")
        item = flat[0]
        text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
        # Group names repeat across examples: one string object each instead of one per example.
        return text if name == ID_FEATURE else sys.intern(text)
    return ""


class _Rows:
    """Per-example label rows, prediction rows, weights and captured features of one slice (an accumulator).

    Rows are appended as small arrays and stacked lazily; pickling stacks them, so Beam encodes
    four arrays instead of thousands of objects.
    """

    __slots__ = ("labels", "predictions", "weights", "features")

    def __init__(self) -> None:
        self.labels: list[np.ndarray] = []
        self.predictions: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []
        self.features: list[np.ndarray] = []  # object arrays [1, F] of str, in captured_features order

    def add(self, label: np.ndarray, prediction: np.ndarray, weight: np.ndarray, features: np.ndarray) -> None:
        self.labels.append(label.reshape(1, -1))
        self.predictions.append(prediction.reshape(1, -1))
        self.weights.append(weight.reshape(-1))
        self.features.append(features.reshape(1, -1))

    def extend(self, other: _Rows) -> None:
        self.labels += other.labels
        self.predictions += other.predictions
        self.weights += other.weights
        self.features += other.features

    def compact(self) -> _Rows:
        if len(self.labels) > 1:
            self.labels = [np.concatenate(self.labels)]
            self.predictions = [np.concatenate(self.predictions)]
            self.weights = [np.concatenate(self.weights)]
            self.features = [np.concatenate(self.features)]
        return self

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels [n, width], predictions [n, width], weights [n]); empty arrays for no rows."""
        if not self.labels:
            return np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0,))
        self.compact()
        return self.labels[0], self.predictions[0], self.weights[0]

    def feature_array(self) -> np.ndarray:
        """[n, F] object array of the captured features' text (captured_features order)."""
        if not self.features:
            return np.zeros((0, 0), dtype=object)
        self.compact()
        return self.features[0]

    def __getstate__(self) -> tuple[list[np.ndarray], ...]:
        self.compact()
        return self.labels, self.predictions, self.weights, self.features

    def __setstate__(self, state: tuple[list[np.ndarray], ...]) -> None:
        self.labels, self.predictions, self.weights, self.features = state


class _LabelRowsCombiner(beam.CombineFn):
    """Collects each example's (label vector, prediction vector, weight, captured features) for one model output."""

    def __init__(self, key: metric_types.MetricKey, eval_config: Any) -> None:
        self._key = key
        self._eval_config = eval_config
        self._features = captured_features(eval_config)

    def create_accumulator(self) -> _Rows:
        return _Rows()

    def add_input(self, accumulator: _Rows, element: metric_types.StandardMetricInputs) -> _Rows:
        features = np.array(
            [_feature_text(element, name, self._key.model_name) for name in self._features], dtype=object
        )
        for raw_label, raw_prediction, raw_weight in metric_util.to_label_prediction_example_weight(
            element,
            eval_config=self._eval_config,
            model_name=self._key.model_name,
            output_name=self._key.output_name,
            example_weighted=self._key.example_weighted,
            flatten=False,
        ):
            label = np.asarray(raw_label, dtype=np.float64).reshape(-1)
            prediction = np.asarray(raw_prediction, dtype=np.float64).reshape(-1)
            if label.shape != prediction.shape:
                raise ValueError(
                    f"fast_metrics needs one dense label per prediction (multi-hot labels); got label shape "
                    f"{label.shape} and prediction shape {prediction.shape}"
                )
            weight = np.asarray(raw_weight, dtype=np.float64).reshape(-1)
            if weight.size != 1:
                raise ValueError(f"fast_metrics needs one weight per example, got {weight.size}")
            accumulator.add(label, prediction, weight, features)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[_Rows]) -> _Rows:
        it = iter(accumulators)
        result = next(it)
        for acc in it:
            result.extend(acc)
        return result

    def compact(self, accumulator: _Rows) -> _Rows:
        return accumulator.compact()

    def extract_output(self, accumulator: _Rows) -> dict[metric_types.MetricKey, _Rows]:
        return {self._key: accumulator.compact()}


def _rows_key(key: metric_types.MetricKey) -> metric_types.MetricKey:
    return metric_types.MetricKey(
        name=ROWS_NAME, model_name=key.model_name, output_name=key.output_name, example_weighted=key.example_weighted
    )


def _rows_computation(rows_key: metric_types.MetricKey, eval_config: Any) -> metric_types.MetricComputation:
    """The shared rows combiner of one model output (identical wherever it is built, so TFMA runs it once)."""
    return metric_types.MetricComputation(
        keys=[rows_key],
        preprocessors=[_rows_preprocessor(eval_config)],
        combiner=_LabelRowsCombiner(rows_key, eval_config),
    )


def _pairs(
    rows: _Rows,
    sub_key: metric_types.SubKey | None,
    class_weights: dict[int, float] | None,
    fractional_labels: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The flattened (label, prediction, weight) pairs a stock combiner would have seen, in order.

    Mirrors metric_util.to_label_prediction_example_weight(flatten=True) for dense labels.
    """
    labels, predictions, weights = rows.arrays()
    if sub_key is not None and (sub_key.k is not None or sub_key.top_k is not None):
        raise NotImplementedError(f"fast_metrics does not support top-k sub keys ({sub_key})")
    if sub_key is not None and sub_key.class_id is not None:
        if labels.size and not 0 <= sub_key.class_id < labels.shape[1]:
            raise ValueError(f"class id {sub_key.class_id} out of range for {labels.shape[1]} labels")
        labels = labels[:, sub_key.class_id : sub_key.class_id + 1]
        predictions = predictions[:, sub_key.class_id : sub_key.class_id + 1]
    w = np.broadcast_to(weights.reshape(-1, 1), labels.shape).astype(np.float64)
    if class_weights:
        # Stock behaviour: weights indexed by position within each example's flattened vector.
        scale = np.array([class_weights.get(i, 0.0) for i in range(labels.shape[1])], dtype=np.float64)
        w = w * scale
    label, prediction, weight = labels.reshape(-1), predictions.reshape(-1), w.reshape(-1)
    if not fractional_labels:
        return label, prediction, weight
    outside = (label < 0.0) & ~np.isclose(label, 0.0) | (label > 1.0) & ~np.isclose(label, 1.0)
    if outside.any():
        raise ValueError(f"label must be within [0, 1]: label={label[outside][0]}")
    # Each pair becomes (0, p, w * (1 - l)) then (1, p, w * l); stock drops pairs whose weight
    # math.isclose(w, 0.0) with default tolerances, i.e. exactly zero.
    split_label = np.stack([np.zeros_like(label), np.ones_like(label)], axis=1).reshape(-1)
    split_pred = np.repeat(prediction, 2)
    split_weight = np.stack([weight * (1.0 - label), weight * label], axis=1).reshape(-1)
    keep = split_weight != 0.0
    return split_label[keep], split_pred[keep], split_weight[keep]


class _Histogram(Sequence):
    """A stock calibration histogram (a sequence of Buckets) kept as four arrays.

    Derived metrics travel between Beam stages inside each slice's metrics dict, long after
    they were used: as a list, the histogram is pickled one Bucket object at a time and rebuilt
    object by object at every stage, which cost as much as computing it. Buckets are built
    only when TFMA's own code reads the histogram.
    """

    def __init__(self, ids: np.ndarray, labels: np.ndarray, predictions: np.ndarray, examples: np.ndarray) -> None:
        self._arrays = (ids, labels, predictions, examples)
        self._buckets: list[calibration_histogram.Bucket] | None = None

    def _materialized(self) -> list[calibration_histogram.Bucket]:
        if self._buckets is None:
            self._buckets = [
                calibration_histogram.Bucket(int(i), float(lab), float(pred), float(ex))
                for i, lab, pred, ex in zip(*self._arrays, strict=True)
            ]
        return self._buckets

    def __len__(self) -> int:
        return len(self._arrays[0])

    def __getitem__(self, index: Any) -> Any:
        return self._materialized()[index]

    def __iter__(self) -> Iterator[calibration_histogram.Bucket]:
        return iter(self._materialized())

    def __reduce__(self) -> tuple[Any, tuple[np.ndarray, ...]]:
        return _Histogram, self._arrays


class _Replay:
    """A derived step standing in for one stock combiner: reads the shared rows of its model output.

    TFMA de-duplicates derived steps by class name and keys, so each kind is its own subclass.
    """

    def __init__(self, combiner: Any) -> None:
        self._combiner = combiner
        self._rows_key = _rows_key(combiner._key)


class _ReplayHistogram(_Replay):
    """Derived step: the stock calibration histogram of one sub key, from the shared rows."""

    def __call__(self, metrics: dict[metric_types.MetricKey, Any]) -> dict[metric_types.MetricKey, Any]:
        c = self._combiner
        label, prediction, weight = _pairs(
            metrics[self._rows_key], c._key.sub_key, c._class_weights, c._fractional_labels
        )
        value = prediction if c._prediction_based_bucketing else label
        # Stock: int(((v - left) / range * num_buckets) + 1), clipped to [0, num_buckets + 1].
        raw = (value - c._left) / c._range * c._num_buckets + 1
        index = np.where(raw < 0, 0, np.where(raw >= c._num_buckets + 1, c._num_buckets + 1, raw)).astype(np.int64)
        size = c._num_buckets + 2
        counts = np.bincount(index, minlength=size)
        labels_sum = np.bincount(index, weights=label * weight, minlength=size)
        predictions_sum = np.bincount(index, weights=prediction * weight, minlength=size)
        examples_sum = np.bincount(index, weights=weight, minlength=size)
        hit = np.flatnonzero(counts)
        return {c._key: _Histogram(hit, labels_sum[hit], predictions_sum[hit], examples_sum[hit])}


class _ReplayConfusionMatrices(_Replay):
    """Derived step: the stock binary-confusion-matrix accumulator (explicit thresholds)."""

    def __call__(self, metrics: dict[metric_types.MetricKey, Any]) -> dict[metric_types.MetricKey, Any]:
        c = self._combiner
        if c._example_id_key:
            raise NotImplementedError("fast_metrics does not sample example ids")
        label, prediction, weight = _pairs(
            metrics[self._rows_key], c._key.sub_key, c._class_weights, c._enable_fractional_labels
        )
        matrices = c._binary_confusion_matrices
        accumulator = matrices.create_accumulator()
        if label.size:
            # One call with every pair: the helper loops over pairs exactly as it does per example.
            accumulator = matrices.add_input(
                accumulator, labels=label.tolist(), predictions=prediction.tolist(),
                example_weights=weight.tolist(), example_id=None,
            )
        return {c._key: matrices.extract_output(accumulator)}


class _ReplayWeightedTotals(_Replay):
    """Derived step: the stock (weighted labels, predictions, examples) totals of one sub key."""

    def __call__(self, metrics: dict[metric_types.MetricKey, Any]) -> dict[metric_types.MetricKey, Any]:
        c = self._combiner
        label, prediction, weight = _pairs(metrics[self._rows_key], c._key.sub_key, c._class_weights, False)
        totals = c.create_accumulator()
        totals.total_weighted_examples = float(np.sum(weight))
        totals.total_weighted_labels = float(np.sum(label * weight))
        totals.total_weighted_predictions = float(np.sum(prediction * weight))
        return {c._key: totals}


class _ReplayMultiLabelMatrices(_Replay):
    """Derived step: the stock multi-label confusion matrices (actual class x predicted class)."""

    def __call__(self, metrics: dict[metric_types.MetricKey, Any]) -> dict[metric_types.MetricKey, Any]:
        c = self._combiner
        labels, predictions, weights = metrics[self._rows_key].arrays()
        accumulator: dict[float, dict[Any, Any]] = {}
        if labels.size:
            present = labels != 0  # the stock combiner tests labels by truthiness
            weighted_actual = present * weights.reshape(-1, 1)  # [n, actual class]
            actual_seen = present.any(axis=0)
            for threshold in c._thresholds:
                above = predictions > threshold
                # [actual, predicted] sums over the examples that carry the actual class.
                counts = {
                    "true_positives": weighted_actual.T @ (present & above),
                    "false_negatives": weighted_actual.T @ (present & ~above),
                    "false_positives": weighted_actual.T @ (~present & above),
                    "true_negatives": weighted_actual.T @ (~present & ~above),
                }
                entries = accumulator[threshold] = {}
                for actual in np.flatnonzero(actual_seen):
                    for predicted in range(labels.shape[1]):
                        matrix = multi_label_confusion_matrix_plot._ConfusionMatrix()
                        for field, values in counts.items():
                            setattr(matrix, field, float(values[actual, predicted]))
                        entries[multi_label_confusion_matrix_plot._MatrixEntryKey(int(actual), predicted)] = matrix
        return c.extract_output(accumulator)


_REPLAYS = {
    calibration_histogram._CalibrationHistogramCombiner: _ReplayHistogram,
    binary_confusion_matrices._BinaryConfusionMatrixCombiner: _ReplayConfusionMatrices,
    calibration._WeightedLabelsPredictionsExamplesCombiner: _ReplayWeightedTotals,
    multi_label_confusion_matrix_plot._MultiLabelConfusionMatrixPlotCombiner: _ReplayMultiLabelMatrices,
}


def share_rows(computations: metric_types.MetricComputations, eval_config: Any) -> metric_types.MetricComputations:
    """Replaces each per-label stock combiner by the shared rows combiner plus a replay step.

    Args:
      computations: a stock metric's computations.
      eval_config: the EvalConfig (passed to the rows combiner's label/prediction extraction).

    Returns:
      Computations with the same output keys, in dependency order.

    Raises:
      NotImplementedError: for a combiner type this module cannot replay.
    """
    out: list[Any] = []
    for computation in computations:
        if not isinstance(computation, metric_types.MetricComputation):
            out.append(computation)
            continue
        replay = _REPLAYS.get(type(computation.combiner))
        if replay is None:
            raise NotImplementedError(f"fast_metrics cannot replay {type(computation.combiner).__name__}")
        if computation.preprocessors:
            raise NotImplementedError("fast_metrics does not support metric preprocessors")
        rows_key = _rows_key(computation.combiner._key)
        out.append(_rows_computation(rows_key, eval_config))
        out.append(metric_types.DerivedMetricComputation(keys=computation.keys, result=replay(computation.combiner)))
    return out


class _SharedRows:
    """Mixin: a stock TFMA metric whose combiners are replaced by share_rows."""

    def computations(self, eval_config: Any = None, *args: Any, **kwargs: Any) -> metric_types.MetricComputations:
        return share_rows(super().computations(eval_config, *args, **kwargs), eval_config)  # type: ignore[misc]


class RowsAUC(_SharedRows, confusion_matrix_metrics.AUC):
    """tfma.metrics.AUC on shared rows."""


class RowsAUCPrecisionRecall(_SharedRows, confusion_matrix_metrics.AUCPrecisionRecall):
    """tfma.metrics.AUCPrecisionRecall on shared rows."""


class RowsPrecision(_SharedRows, confusion_matrix_metrics.Precision):
    """tfma.metrics.Precision on shared rows."""


class RowsRecall(_SharedRows, confusion_matrix_metrics.Recall):
    """tfma.metrics.Recall on shared rows."""


class RowsF1Score(_SharedRows, confusion_matrix_metrics.F1Score):
    """tfma.metrics.F1Score on shared rows."""


class RowsMeanLabel(_SharedRows, calibration.MeanLabel):
    """tfma.metrics.MeanLabel on shared rows."""


class RowsMeanPrediction(_SharedRows, calibration.MeanPrediction):
    """tfma.metrics.MeanPrediction on shared rows."""


class RowsConfusionMatrixPlot(_SharedRows, confusion_matrix_plot.ConfusionMatrixPlot):
    """tfma.metrics.ConfusionMatrixPlot on shared rows."""


class RowsCalibrationPlot(_SharedRows, calibration_plot.CalibrationPlot):
    """tfma.metrics.CalibrationPlot on shared rows."""


class RowsMultiLabelConfusionMatrixPlot(_SharedRows, multi_label_confusion_matrix_plot.MultiLabelConfusionMatrixPlot):
    """tfma.metrics.MultiLabelConfusionMatrixPlot on shared rows."""


# Stock class name -> this module's class (TFMA resolves registered stock names before modules,
# so the replacements need names of their own; their metric names and keys are the stock ones).
REPLACEMENTS: dict[str, str] = {
    name: f"Rows{name}"
    for name in (
        "AUC", "AUCPrecisionRecall", "Precision", "Recall", "F1Score", "MeanLabel", "MeanPrediction",
        "ConfusionMatrixPlot", "CalibrationPlot", "MultiLabelConfusionMatrixPlot",
    )
}


# --- per-example rows out of the Evaluator ---------------------------------------------------------

EVAL_ROWS_PREFIX = "eval_rows:"  # metric names: eval_rows:<cell>:ids|labels|predictions:<model>


def cell_name(partition: Sequence[str], values: Sequence[str]) -> str:
    """The name of one partition cell in EvalRows' metric names, e.g. ``gender_name=female;race_name=white``."""
    return ";".join(f"{f}={v}" for f, v in zip(partition, values, strict=True))


class _EmitRows:
    """Derived step: on a partition cell's slice, its examples' ids, labels and every model's predictions.

    TFMA hands a derived step the metrics of one slice without saying which slice, so the rows are
    written where they are constant on every partition feature: the cells of the partition's
    crossed slice (gender x race). Every example lies in exactly one cell, so the cells together
    hold each example once (EvalRows' output is the size of the eval split, not five times it).
    A slice of a coarser spec is constant too only when the data makes it equal to a cell; the
    reader takes the cells of the crossed slice only. The metric names carry the cell, so TFMA's
    cross-slice and cross-model differences never subtract two different cells' arrays.
    """

    def __init__(self, rows_keys: dict[str, metric_types.MetricKey], candidate: str, partition: Sequence[str],
                 features: Sequence[str], output_name: str, example_weighted: bool) -> None:
        self._rows_keys = rows_keys
        self._candidate = candidate
        self._partition = tuple(partition)
        self._features = tuple(features)
        self._output_name = output_name
        self._example_weighted = example_weighted

    def _key(self, suffix: str) -> metric_types.MetricKey:
        return metric_types.MetricKey(name=EVAL_ROWS_PREFIX + suffix, model_name=self._candidate,
                                      output_name=self._output_name, example_weighted=self._example_weighted)

    def __call__(self, metrics: dict[metric_types.MetricKey, Any]) -> dict[metric_types.MetricKey, Any]:
        candidate = metrics.get(self._rows_keys[self._candidate])
        if candidate is None or not candidate.labels:
            return {}
        table = candidate.feature_array()
        columns = [self._features.index(f) for f in self._partition]
        values = []
        for column in columns:
            distinct = set(table[:, column])
            if len(distinct) != 1:
                return {}  # not a partition cell
            values.append(distinct.pop())
        cell = cell_name(self._partition, values)
        out: dict[metric_types.MetricKey, Any] = {}
        ids_column = self._features.index(ID_FEATURE)
        reference = None
        for model, key in self._rows_keys.items():
            rows = metrics[key]
            labels, predictions, _ = rows.arrays()
            ids = rows.feature_array()[:, ids_column].astype(str)
            if np.any(ids == ""):
                raise ValueError(f"EvalRows needs the {ID_FEATURE!r} feature of every example (raw or transformed)")
            order = np.argsort(ids, kind="stable")  # rows in id order: deterministic, and paired across models
            ids = ids[order]
            if reference is None:
                reference = ids
                if len(np.unique(ids)) != len(ids):
                    raise ValueError(f"EvalRows needs unique {ID_FEATURE!r} values; cell {cell} repeats one")
                if not np.all((labels == 0) | (labels == 1)):
                    raise ValueError("EvalRows writes 0/1 labels; got fractional labels")
                out[self._key(f"{cell}:ids")] = ids
                out[self._key(f"{cell}:labels")] = labels[order].astype(np.int32)
            elif not np.array_equal(ids, reference):
                raise ValueError(f"models {self._candidate!r} and {model!r} saw different examples in cell {cell}")
            out[self._key(f"{cell}:predictions:{model}")] = predictions[order].astype(np.float32)
        return out


def _eval_rows_computations(
    partition: Sequence[str],
    name: str = "eval_rows",
    eval_config: Any = None,
    model_names: list[str] | None = None,
    output_names: list[str] | None = None,
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    del name  # the output names are EVAL_ROWS_PREFIX + cell + field
    model_names = list(model_names or [""])
    output_name = (output_names or [""])[0]
    baselines = {spec.name for spec in getattr(eval_config, "model_specs", []) if spec.is_baseline}
    candidates = [m for m in model_names if m not in baselines]
    if len(candidates) != 1:
        raise ValueError(f"EvalRows needs exactly one candidate model, got {candidates}")
    features = captured_features(eval_config)
    missing = [f for f in partition if f not in features]
    if missing:
        raise ValueError(f"EvalRows' partition features {missing} are no slicing features of the EvalConfig")
    computations: list[Any] = []
    keys = {}
    for model in model_names:
        keys[model] = metric_types.MetricKey(name=ROWS_NAME, model_name=model, output_name=output_name,
                                             example_weighted=example_weighted)
        computations.append(_rows_computation(keys[model], eval_config))
    emit = _EmitRows(keys, candidates[0], partition, features, output_name, example_weighted)
    computations.append(metric_types.DerivedMetricComputation(keys=[], result=emit))
    return computations


class EvalRows(metric_types.Metric):
    """Per-example rows of the eval split: id, 0/1 label vector and each model's prediction vector.

    TFMA writes aggregates only; the intervals (DeLong), the metrics at tuned thresholds and the
    error thumbnails need each example. These rows come from the shared rows combiner the other
    metrics use (no second pass over the data), one partition cell per slice: see _EmitRows.
    Read them back with components.eval_table.load_eval_table.
    """

    def __init__(self, partition: Sequence[str] = (), name: str = "eval_rows") -> None:
        super().__init__(_eval_rows_computations, partition=list(partition), name=name)
