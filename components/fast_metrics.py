"""TFMA's own multi-label metrics, fed from one shared per-slice combiner instead of ~30.

This module holds the metric classes an EvalConfig names (``module: components.fast_metrics``;
TFMA imports them from here, so the module keeps its name); the shared combiner is in
components/label_rows.py and the replays of the stock combiners in components/rows_replay.py.

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
``label_rows.LabelRowsCombiner`` that keeps each example's label vector, prediction vector and weight as
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

from collections.abc import Sequence
from typing import Any

import numpy as np
from tensorflow_model_analysis.metrics import (
    calibration,
    calibration_plot,
    confusion_matrix_metrics,
    confusion_matrix_plot,
    metric_types,
    multi_label_confusion_matrix_plot,
)

from components import label_rows
from components.label_rows import ID_FEATURE, ROWS_NAME, captured_features, rows_computation
from components.rows_replay import REPLAYS


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
        replay = REPLAYS.get(type(computation.combiner))
        if replay is None:
            raise NotImplementedError(f"fast_metrics cannot replay {type(computation.combiner).__name__}")
        if computation.preprocessors:
            raise NotImplementedError("fast_metrics does not support metric preprocessors")
        rows_key = label_rows.rows_metric_key(computation.combiner._key)
        out.append(rows_computation(rows_key, eval_config))
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
        computations.append(rows_computation(keys[model], eval_config))
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
