"""Export: a SavedModel that takes serialized tf.Examples (for TFMA) or raw image bytes."""

from __future__ import annotations

import json
import posixpath
from typing import Any

import tensorflow as tf
import tf_keras

from components.base import labels
from components.trainer import data

SERVING_SIGNATURE = "serving_default"  # serialized tf.Examples with image_raw -> probabilities
IMAGES_SIGNATURE = "predict_images"  # raw encoded image bytes -> one probability per named label
LABELS_FILE = "labels.json"


class _Untracked:
    """Holds a Keras model out of sight of tf.Module's attribute tracking."""

    def __init__(self, model: tf_keras.Model):
        self.model = model


class _ServingModule(tf.Module):
    def __init__(self, model: tf_keras.Model, label_names: tuple[str, ...], image_size: int):
        super().__init__()
        self.tft_layer = None
        # Track only the weights, not the Keras objects: saving a tracked Keras model traces
        # every layer's call for Keras re-loading (~20 s) that serving never uses.
        self.weights = list(model.weights)
        self._forward = _Untracked(model)
        self.image_size = image_size
        self.label_names = tf.Variable(list(label_names), trainable=False, name="label_names")
        self._names = tuple(label_names)

    def _probabilities(self, image_bytes: tf.Tensor) -> tf.Tensor:
        return self._forward.model(data.decode_images(image_bytes, self.image_size), training=False)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        # Only image_raw is parsed, so raw and transformed examples both work.
        parsed = tf.io.parse_example(serialized, {labels.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string)})
        return {labels.PROBABILITIES_KEY: self._probabilities(parsed[labels.IMAGE_KEY])}

    def add_transform(self, transform_output: str) -> Any:
        """Tracks the Transform graph and returns the ``transform_features`` function to export."""
        import tensorflow_transform as tft  # only exports with a transform need it

        output = tft.TFTransformOutput(transform_output)
        self.tft_layer = output.transform_features_layer()
        raw_spec = output.raw_feature_spec()

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def transform_features(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
            transformed = self.tft_layer(tf.io.parse_example(serialized, raw_spec))
            return {k: transformed[k] for k in labels.EVAL_FEATURE_KEYS}

        return transform_features

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def predict_images(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = self._probabilities(image_bytes)
        outputs = {name: probabilities[:, i] for i, name in enumerate(self._names)}
        outputs[labels.PROBABILITIES_KEY] = probabilities
        return outputs


def export_model(
    model: tf_keras.Model,
    export_dir: str,
    image_size: int,
    label_names: tuple[str, ...] = labels.LABEL_NAMES,
    transform_output: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Writes the serving SavedModel.

    Signatures: ``serving_default`` (serialized tf.Examples -> ``probabilities`` [B, L], used by
    TFMA) and ``predict_images`` (encoded image bytes [B] -> one [B] probability per label
    name, plus ``probabilities``); with ``transform_output`` also ``transform_features``
    (serialized raw tf.Examples -> labels and slice features, TFMA's preprocessing function).
    The label names are stored in the model (variable ``label_names``) and in
    ``assets.extra/labels.json``, with ``metadata`` beside them (the trainer's per-label
    ``thresholds``, which predict.py applies, ``calibration`` and ``decision``).

    Args:
      model: images (0-255) -> probabilities.
      export_dir: output folder (local or gs://).
      image_size: the size images are resized to before the model.
      label_names: one name per model output column.
      transform_output: Transform's graph folder, or None.
      metadata: more JSON-able keys for labels.json.

    Returns:
      export_dir.
    """
    module = _ServingModule(model, label_names, image_size)
    signatures = {SERVING_SIGNATURE: module.serve_examples, IMAGES_SIGNATURE: module.predict_images}
    if transform_output:
        signatures[labels.TRANSFORM_FEATURES_SIGNATURE] = module.add_transform(transform_output)
    tf.saved_model.save(module, export_dir, signatures=signatures)
    extra = posixpath.join(export_dir, "assets.extra")
    tf.io.gfile.makedirs(extra)
    with tf.io.gfile.GFile(posixpath.join(extra, LABELS_FILE), "w") as f:
        json.dump({"label_names": list(label_names), "image_size": image_size, **(metadata or {})}, f, indent=2)
    return export_dir
