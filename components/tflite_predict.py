"""model.tflite behind the interface of the SavedModel's ``predict_images`` signature (predict.py --tflite).

Images are decoded as the SavedModel decodes them (components.trainer.data.decode_pixels, the
first half of data.decode_images) and the model resizes inside, so both models see the same
pixels; an image TensorFlow cannot decode raises InvalidArgumentError, as the signature does.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from components import cpus
from components.trainer import data, tflite_export


class TFLiteImages:
    """Callable like ``predict_images``: image_bytes [B] -> {label name: [B] probabilities, ...}.

    Args:
      model_dir: a pushed version folder holding model.tflite.
      num_threads: interpreter threads (default: the CPUs this process may use).

    Raises:
      FileNotFoundError: the version has no model.tflite.
    """

    def __init__(self, model_dir: str, num_threads: int | None = None):
        path = os.path.join(model_dir, tflite_export.TFLITE_FILE)
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(
                f"{path} does not exist: this model version has no on-device model "
                "(train with --export-tflite float|int8)"
            )
        with tf.io.gfile.GFile(path, "rb") as f:
            self._predictor = tflite_export.TFLitePredictor(f.read(), num_threads or cpus.available_cpus())
        self.path = path

    @property
    def label_names(self) -> list[str]:
        """The labels stored in model.tflite, in output order."""
        return self._predictor.label_names

    @property
    def quantization(self) -> str:
        """float or int8."""
        return str(self._predictor.metadata.get("quantization"))

    def __call__(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = [data.decode_pixels(b).numpy() for b in tf.reshape(image_bytes, [-1])]
        probabilities = self._predictor.predict(pixels, batch_size=max(1, len(pixels)))
        outputs = {name: tf.constant(probabilities[:, i]) for i, name in enumerate(self.label_names)}
        outputs["probabilities"] = tf.constant(np.asarray(probabilities))
        return outputs
