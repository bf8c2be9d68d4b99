"""The eval split's per-example rows, read back from an Evaluator output (see fast_metrics.EvalRows).

One row per eval example: its id (the file name), its group in every partition feature (gender,
race), its 0/1 label vector and each model's prediction vector (the candidate's, and the
baseline's when the Evaluator compared with one), paired by id. Everything TFMA does not compute
is computed from this table: DeLong intervals (components.uncertainty), precision/recall/F1 at the
model's tuned thresholds and calibration error, and the error thumbnails of the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from components import fast_metrics
from components.evaluation.eval_config import ROWS_PARTITION
from components.evaluation.results import BASELINE, CANDIDATE


@dataclasses.dataclass(frozen=True)
class EvalTable:
    """Per-example rows of one evaluation, sorted by id.

    Attributes:
      label_names: column names of labels and predictions.
      ids: (n,) example ids (file names).
      groups: partition feature (e.g. race_name) -> (n,) group of each example.
      labels: (n, L) 0/1 labels.
      predictions: CANDIDATE (and BASELINE) -> (n, L) predictions.
    """

    label_names: tuple[str, ...]
    ids: np.ndarray
    groups: dict[str, np.ndarray]
    labels: np.ndarray
    predictions: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_baseline(self) -> bool:
        """Whether the baseline model's predictions are in the table."""
        return BASELINE in self.predictions

    def rows_of(self, feature: str, group: str) -> np.ndarray:
        """Boolean mask of the examples in one group of a partition feature."""
        return self.groups[feature] == group


def _array(value: Any) -> np.ndarray:
    """An ArrayValue proto as a numpy array."""
    from tensorflow_model_analysis.proto import metrics_for_slice_pb2

    kind = metrics_for_slice_pb2.ArrayValue
    field = {
        kind.INT32: "int32_values", kind.INT64: "int64_values", kind.FLOAT32: "float32_values",
        kind.FLOAT64: "float64_values", kind.BYTES: "bytes_values",
    }[value.data_type]
    data = list(getattr(value, field))
    if value.data_type == kind.BYTES:
        array = np.array([b.decode("utf-8") for b in data], dtype=object)
    else:
        array = np.asarray(data, dtype=np.float64)
    return array.reshape(tuple(value.shape))


def load_eval_table(
    evaluation_uri: str,
    label_names: Sequence[str],
    partition: Sequence[str] = ROWS_PARTITION,
) -> EvalTable:
    """Reads the per-example rows an Evaluator wrote.

    Args:
      evaluation_uri: the ModelEvaluation artifact's URI.
      label_names: the model's labels in output order.
      partition: the features whose crossed slice holds the rows (as in build_eval_config).

    Returns:
      The EvalTable.

    Raises:
      ValueError: the output has no rows (an Evaluator from before EvalRows existed), or the rows
        do not add up to the overall slice's example count.
    """
    import tensorflow_model_analysis as tfma

    cells: dict[str, dict[str, Any]] = {}
    overall_count = None
    for record in tfma.load_metrics(evaluation_uri):
        if record.HasField("cross_slice_key"):
            continue
        items = {key.column: (getattr(key, key.WhichOneof("kind")) if key.WhichOneof("kind") else "")
                 for key in record.slice_key.single_slice_keys}
        if not items:
            for kv in record.metric_keys_and_values:
                if kv.key.name == "example_count" and not kv.key.model_name == BASELINE and not kv.key.is_diff:
                    overall_count = int(kv.value.double_value.value)
            continue
        if set(items) != set(partition):
            continue
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in (items[f] for f in partition)]
        prefix = fast_metrics.EVAL_ROWS_PREFIX + fast_metrics.cell_name(partition, values) + ":"
        cell: dict[str, Any] = {"groups": dict(zip(partition, values, strict=True))}
        for kv in record.metric_keys_and_values:
            if kv.key.name.startswith(prefix) and kv.value.HasField("array_value"):
                cell[kv.key.name[len(prefix):]] = _array(kv.value.array_value)
        if "ids" in cell:
            cells[prefix] = cell
    if not cells:
        raise ValueError(f"no per-example rows in {evaluation_uri} (evaluated before EvalRows existed?)")
    parts = sorted(cells.values(), key=lambda c: tuple(c["groups"].values()))
    ids = np.concatenate([c["ids"] for c in parts])
    if overall_count is not None and overall_count != len(ids):
        raise ValueError(f"the per-example rows hold {len(ids)} examples but the eval split has {overall_count}: "
                         f"examples without a {' x '.join(partition)} group are missing")
    predictions: dict[str, np.ndarray] = {}
    for field in parts[0]:
        if field.startswith("predictions:"):
            model = field[len("predictions:"):]
            role = BASELINE if model == BASELINE else CANDIDATE
            predictions[role] = np.concatenate([c[field] for c in parts]).reshape(len(ids), len(label_names))
    labels = np.concatenate([c["labels"] for c in parts]).reshape(len(ids), len(label_names)).astype(np.int8)
    groups = {f: np.concatenate([np.full(len(c["ids"]), c["groups"][f], dtype=object) for c in parts])
              for f in partition}
    order = np.argsort(ids.astype(str), kind="stable")
    return EvalTable(
        label_names=tuple(label_names),
        ids=ids[order],
        groups={f: g[order] for f, g in groups.items()},
        labels=labels[order],
        predictions={k: v[order] for k, v in predictions.items()},
    )
