"""The metrics: per-label AUC during training, exact ROC AUC, and validation AUC per epoch."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from components.trainer.embeddings import Embedded


@tf_keras.utils.register_keras_serializable(package="facepipe")
class LabelAUC(tf_keras.metrics.AUC):
    """ROC AUC of one column of a multi-label output.

    Same value as a multi-label AUC with a one-hot ``label_weights``, at a tenth of the cost for
    ten labels: that one computes the confusion counts of every label and then ignores nine.
    """

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def update_state(self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor | None = None):  # noqa: D102
        return super().update_state(y_true[:, self.index], y_pred[:, self.index], sample_weight)

    def get_config(self) -> dict:  # noqa: D102 (Keras API)
        return {**super().get_config(), "index": self.index}


def per_label_auc_metrics(label_names: tuple[str, ...]) -> list[tf_keras.metrics.Metric]:
    """One AUC metric per label, named auc_<label>."""
    return [LabelAUC(i, name=f"auc_{name}") for i, name in enumerate(label_names)]

def roc_auc(label_values: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney, ties count half); NaN without positives or negatives."""
    from scipy.stats import rankdata

    positive = label_values > 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))

class ValidationAUC(tf_keras.callbacks.Callback):
    """Adds val_auc_<label> to each epoch's logs from one forward pass over the validation set.

    Cheaper than compiled AUC metrics, which update 10 threshold tables on every training batch.
    List it before callbacks that read the logs (loggers, TensorBoard, early stopping).
    """

    def __init__(self, validation: Embedded, label_names: tuple[str, ...], chunk: int = 4096):
        super().__init__()
        self._validation = validation
        self._names = label_names
        self._chunk = chunk

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:  # noqa: D102 (Keras API)
        if logs is None:
            return
        n = len(self._validation)
        # In chunks: a disk-backed embedding store is never loaded whole.
        scores = np.concatenate([
            self.model(self._validation.vectors(np.arange(start, min(start + self._chunk, n))), training=False).numpy()
            for start in range(0, n, self._chunk)
        ])
        for i, name in enumerate(self._names):
            logs[f"val_auc_{name}"] = roc_auc(self._validation.labels[:, i], scores[:, i])
