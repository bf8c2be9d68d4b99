"""The multi-label model: frozen backbone -> global average pooling -> MLP head -> sigmoids."""

from __future__ import annotations

import tensorflow as tf
import tf_keras


def freeze(backbone: tf_keras.Model) -> tf_keras.Model:
    """Marks every backbone weight non-trainable and returns the backbone."""
    backbone.trainable = False
    return backbone


def build_feature_extractor(backbone: tf_keras.Model) -> tf_keras.Model:
    """Wraps a backbone into images -> pooled embedding.

    The backbone is called with training=False so BatchNorm keeps its ImageNet statistics.

    Args:
      backbone: images (B, S, S, 3) in 0-255 -> feature map.

    Returns:
      A model images -> (B, C) embeddings.
    """
    images = tf_keras.Input(shape=backbone.input_shape[1:], name="images")
    features = backbone(images, training=False)
    pooled = tf_keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    return tf_keras.Model(images, pooled, name="feature_extractor")


def build_head(
    embedding_dim: int, num_labels: int, hidden_units: int = 256, dropout: float = 0.3, name: str = "head"
) -> tf_keras.Model:
    """The trainable head: Dense(relu) -> Dropout -> Dense(sigmoid), one output per label.

    Args:
      embedding_dim: size of the pooled backbone embedding.
      num_labels: number of binary labels.
      hidden_units: units of the hidden layer.
      dropout: dropout rate.
      name: the model's name (unique when several heads sit in one model: the out-of-fold fits).

    Returns:
      A model embeddings (B, embedding_dim) -> probabilities (B, num_labels).
    """
    embeddings = tf_keras.Input(shape=(embedding_dim,), name="embeddings")
    x = tf_keras.layers.Dense(hidden_units, activation="relu", name="hidden")(embeddings)
    x = tf_keras.layers.Dropout(dropout, name="dropout")(x)
    probabilities = tf_keras.layers.Dense(num_labels, activation="sigmoid", name="probabilities")(x)
    return tf_keras.Model(embeddings, probabilities, name=name)


def build_model(feature_extractor: tf_keras.Model, head: tf_keras.Model) -> tf_keras.Model:
    """Joins the feature extractor and the head into images -> probabilities.

    Args:
      feature_extractor: from build_feature_extractor.
      head: from build_head.

    Returns:
      The full model; it shares its layers (and weights) with both parts.
    """
    images = tf_keras.Input(shape=feature_extractor.input_shape[1:], name="images")
    probabilities = head(feature_extractor(images, training=False))
    return tf_keras.Model(images, probabilities, name="face_attributes")


@tf_keras.utils.register_keras_serializable(package="facepipe")
class Logits(tf_keras.layers.Layer):
    """The pre-sigmoid output of a Dense layer (its own weights, no activation).

    The head ends in Dense(sigmoid); calibrating its probability would need logit(sigmoid(z)),
    which saturates in float32 near 0 and 1. This recomputes z from the same weights instead.
    """

    def __init__(self, dense: tf_keras.layers.Dense, **kwargs):
        super().__init__(**kwargs)
        self.dense = dense

    def call(self, inputs):  # noqa: D102 (Keras API)
        return tf.matmul(inputs, self.dense.kernel) + self.dense.bias


@tf_keras.utils.register_keras_serializable(package="facepipe")
class Calibration(tf_keras.layers.Layer):
    """Per-label calibrated probabilities sigmoid(slope * logit + intercept) (fixed constants, not trained)."""

    def __init__(self, slope: list[float], intercept: list[float], **kwargs):
        super().__init__(**kwargs)
        self.slope = [float(v) for v in slope]
        self.intercept = [float(v) for v in intercept]

    def call(self, logits):  # noqa: D102 (Keras API)
        slope = tf.constant(self.slope, dtype=logits.dtype)
        intercept = tf.constant(self.intercept, dtype=logits.dtype)
        return tf.sigmoid(slope * logits + intercept)

    def get_config(self) -> dict:  # noqa: D102 (Keras API)
        return {**super().get_config(), "slope": self.slope, "intercept": self.intercept}


def build_calibrated_model(
    feature_extractor: tf_keras.Model, head: tf_keras.Model, slope: list[float], intercept: list[float]
) -> tf_keras.Model:
    """images -> calibrated probabilities, sharing the extractor's and the head's layers (and weights).

    With slope 1 and intercept 0 it computes exactly what build_model's model does.

    Args:
      feature_extractor: from build_feature_extractor.
      head: from build_head (layers hidden, dropout, probabilities).
      slope / intercept: one per label (components.trainer.calibration).

    Returns:
      The model.
    """
    images = tf_keras.Input(shape=feature_extractor.input_shape[1:], name="images")
    embeddings = feature_extractor(images, training=False)
    x = head.get_layer("hidden")(embeddings)
    x = head.get_layer("dropout")(x, training=False)
    logits = Logits(head.get_layer("probabilities"), name="logits")(x)
    probabilities = Calibration(slope, intercept, name="calibration")(logits)
    return tf_keras.Model(images, probabilities, name="face_attributes_calibrated")
