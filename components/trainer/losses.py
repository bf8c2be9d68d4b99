"""The losses: per-label positive weighting, weighted binary cross-entropy, and its k-fold form."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

DEFAULT_MAX_POSITIVE_WEIGHT = 20.0  # clip of the per-label positive weight n_neg / n_pos (and of its inverse)


def positive_weights(label_matrix: np.ndarray, max_weight: float = DEFAULT_MAX_POSITIVE_WEIGHT) -> np.ndarray:
    """Per-label weight of positive examples, n_neg / n_pos, clipped to [1 / max_weight, max_weight].

    With it each label's positives and negatives contribute equally to the loss, so rare labels
    (e.g. race_other, age_60_plus) are not drowned by their negatives. A label without positives
    or without negatives keeps weight 1 (there is nothing to balance).

    Args:
      label_matrix: (N, L) 0/1 training labels.
      max_weight: the clip (> 1).

    Returns:
      float32 (L,) weights.
    """
    positives = label_matrix.sum(axis=0)
    negatives = len(label_matrix) - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((positives > 0) & (negatives > 0), negatives / np.maximum(positives, 1), 1.0)
    return np.clip(ratio, 1.0 / max_weight, max_weight).astype(np.float32)

@tf_keras.utils.register_keras_serializable(package="facepipe")
class WeightedBinaryCrossentropy(tf_keras.losses.Loss):
    """Binary cross-entropy on probabilities with a per-label weight on the positive term.

    loss = mean over labels of -(w_l * y * log(p) + (1 - y) * log(1 - p)); with all w_l = 1 it is
    tf_keras' BinaryCrossentropy on probabilities.
    """

    def __init__(self, positive_weights: list[float] | np.ndarray, name: str = "weighted_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weights = [float(w) for w in np.asarray(positive_weights).ravel()]

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:  # noqa: D102 (Keras API)
        eps = tf_keras.backend.epsilon()
        y_true = tf.cast(y_true, y_pred.dtype)
        p = tf.clip_by_value(y_pred, eps, 1.0 - eps)
        weights = tf.constant(self.positive_weights, dtype=y_pred.dtype)
        terms = weights * y_true * tf.math.log(p + eps) + (1.0 - y_true) * tf.math.log(1.0 - p + eps)
        return -tf.reduce_mean(terms, axis=-1)

    def get_config(self) -> dict:  # noqa: D102 (Keras API)
        return {**super().get_config(), "positive_weights": self.positive_weights}

@tf_keras.utils.register_keras_serializable(package="facepipe")
class StackHeads(tf_keras.layers.Layer):
    """Stacks k heads' (B, L) outputs into (B, k, L)."""

    def call(self, inputs):  # noqa: D102 (Keras API)
        return tf.stack(inputs, axis=1)


@tf_keras.utils.register_keras_serializable(package="facepipe")
class FoldMaskedBinaryCrossentropy(tf_keras.losses.Loss):
    """WeightedBinaryCrossentropy of k stacked heads, each over the examples outside its own fold.

    y_true: (B, L + k): the labels, then a one-hot of the example's fold. y_pred: (B, k, L).
    """

    def __init__(self, positive_weights: list[float] | np.ndarray, num_labels: int,
                 name: str = "fold_masked_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weights = [float(w) for w in np.asarray(positive_weights).ravel()]
        self.num_labels = int(num_labels)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:  # noqa: D102 (Keras API)
        eps = tf_keras.backend.epsilon()
        y_true = tf.cast(y_true, y_pred.dtype)
        labels_, in_fold = y_true[:, : self.num_labels], y_true[:, self.num_labels :]
        p = tf.clip_by_value(y_pred, eps, 1.0 - eps)
        y = labels_[:, tf.newaxis, :]
        weights = tf.constant(self.positive_weights, dtype=y_pred.dtype)
        terms = weights * y * tf.math.log(p + eps) + (1.0 - y) * tf.math.log(1.0 - p + eps)
        per_head = -tf.reduce_mean(terms, axis=-1)  # (B, k)
        trains = 1.0 - in_fold  # head j learns from the examples outside fold j
        return tf.reduce_sum(per_head * trains, axis=-1) / tf.maximum(tf.reduce_sum(trains, axis=-1), 1.0)

    def get_config(self) -> dict:  # noqa: D102 (Keras API)
        return {**super().get_config(), "positive_weights": self.positive_weights, "num_labels": self.num_labels}
