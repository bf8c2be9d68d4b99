"""Replays of the stock TFMA combiners from the shared rows (components.label_rows).

Each replay is a derived step that rebuilds exactly what a stock per-label combiner would have
accumulated (calibration histogram, binary confusion matrices, weighted totals, the multi-label
confusion matrices) from the rows, with array operations, and hands it to the stock combiner's own
``extract_output``, so everything downstream is TFMA's code. It reads the stock combiners' private
attributes, so it is tied to the pinned TFMA (0.47.1);
``tests/test_evaluation.py::test_shared_rows_metrics_equal_stock_tfma_everywhere`` guards it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from tensorflow_model_analysis.metrics import (
    binary_confusion_matrices,
    calibration,
    calibration_histogram,
    metric_types,
    multi_label_confusion_matrix_plot,
)

from components.label_rows import Rows, rows_metric_key


def _pairs(
    rows: Rows,
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
        self._rows_key = rows_metric_key(combiner._key)


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


REPLAYS = {
    calibration_histogram._CalibrationHistogramCombiner: _ReplayHistogram,
    binary_confusion_matrices._BinaryConfusionMatrixCombiner: _ReplayConfusionMatrices,
    calibration._WeightedLabelsPredictionsExamplesCombiner: _ReplayWeightedTotals,
    multi_label_confusion_matrix_plot._MultiLabelConfusionMatrixPlotCombiner: _ReplayMultiLabelMatrices,
}

