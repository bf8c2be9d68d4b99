"""The multi-label model: frozen backbone -> global average pooling -> MLP head -> sigmoids."""

from __future__ import annotations

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


def build_head(embedding_dim: int, num_labels: int, hidden_units: int = 256, dropout: float = 0.3) -> tf_keras.Model:
    """The trainable head: Dense(relu) -> Dropout -> Dense(sigmoid), one output per label.

    Args:
      embedding_dim: size of the pooled backbone embedding.
      num_labels: number of binary labels.
      hidden_units: units of the hidden layer.
      dropout: dropout rate.

    Returns:
      A model embeddings (B, embedding_dim) -> probabilities (B, num_labels).
    """
    embeddings = tf_keras.Input(shape=(embedding_dim,), name="embeddings")
    x = tf_keras.layers.Dense(hidden_units, activation="relu", name="hidden")(embeddings)
    x = tf_keras.layers.Dropout(dropout, name="dropout")(x)
    probabilities = tf_keras.layers.Dense(num_labels, activation="sigmoid", name="probabilities")(x)
    return tf_keras.Model(embeddings, probabilities, name="head")


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
