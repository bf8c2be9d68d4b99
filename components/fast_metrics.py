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
example with 10 labels), where stock histograms are bounded. The overall slice of 1 million eval
examples would hold 168 MB; beyond that, evaluate with ``build_eval_config(shared_rows=False)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
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


class _Rows:
    """Per-example label rows, prediction rows and weights of one slice (an accumulator).

    Rows are appended as small arrays and stacked lazily; pickling stacks them, so Beam encodes
    three arrays instead of thousands of objects.
    """

    __slots__ = ("labels", "predictions", "weights")

    def __init__(self) -> None:
        self.labels: list[np.ndarray] = []
        self.predictions: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []

    def add(self, label: np.ndarray, prediction: np.ndarray, weight: np.ndarray) -> None:
        self.labels.append(label.reshape(1, -1))
        self.predictions.append(prediction.reshape(1, -1))
        self.weights.append(weight.reshape(-1))

    def extend(self, other: _Rows) -> None:
        self.labels += other.labels
        self.predictions += other.predictions
        self.weights += other.weights

    def compact(self) -> _Rows:
        if len(self.labels) > 1:
            self.labels = [np.concatenate(self.labels)]
            self.predictions = [np.concatenate(self.predictions)]
            self.weights = [np.concatenate(self.weights)]
        return self

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels [n, width], predictions [n, width], weights [n]); empty arrays for no rows."""
        if not self.labels:
            return np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0,))
        self.compact()
        return self.labels[0], self.predictions[0], self.weights[0]

    def __getstate__(self) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        self.compact()
        return self.labels, self.predictions, self.weights

    def __setstate__(self, state: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]) -> None:
        self.labels, self.predictions, self.weights = state


class _LabelRowsCombiner(beam.CombineFn):
    """Collects each example's (label vector, prediction vector, weight) for one model output."""

    def __init__(self, key: metric_types.MetricKey, eval_config: Any) -> None:
        self._key = key
        self._eval_config = eval_config

    def create_accumulator(self) -> _Rows:
        return _Rows()

    def add_input(self, accumulator: _Rows, element: metric_types.StandardMetricInputs) -> _Rows:
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
            accumulator.add(label, prediction, weight)
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
        out.append(metric_types.MetricComputation(keys=[rows_key], preprocessors=None,
                                                  combiner=_LabelRowsCombiner(rows_key, eval_config)))
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
