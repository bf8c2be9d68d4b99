"""The on-device model: ``model.tflite`` (backbone + head), float32 or full-integer int8.

Input contract (the same for float and int8):

- input ``image``: uint8 RGB pixels, shape [N, H, W, 3], any H and W (the same for all images
  of one call; resize the interpreter's input to the shape of the batch), values as a decoder
  gives them (``tf.io.decode_image``, PIL ``convert("RGB")``): no scaling, no normalization;
- the model resizes inside, bilinearly to ``image_size`` exactly as the SavedModel does
  (components.trainer.data.resize_pixels), so callers cannot resize differently from training;
- output: float32 [N, L], one probability per label, in the order of ``label_names`` stored in
  the model file itself (flatbuffer metadata entry ``facepipe``, read_metadata).

int8 is full-integer (every op int8, TFLITE_BUILTINS_INT8), calibrated on a few hundred
training images; its uint8 input has scale 1 and zero point 0, so it takes the same raw pixels
(checked at export), and its output is dequantized to float32 probabilities.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from components.base import labels
from components.trainer import data
from components.trainer.config import TFLITE_EXPORTS

logger = logging.getLogger(__name__)

EXPORT_MODES: tuple[str, ...] = TFLITE_EXPORTS
NONE, FLOAT, INT8 = EXPORT_MODES
TFLITE_FILE = "model.tflite"  # at the top of the SavedModel folder, so the Pusher publishes it with the model
METADATA_NAME = "facepipe"
METADATA_FORMAT = 1
CALIBRATION_IMAGES = 300  # "a few hundred training images"
# The float model must predict like the Keras model it was converted from (measured: ~1e-6); a
# larger difference on the export check means a broken conversion, and the export fails.
FLOAT_MAX_PROBABILITY_DIFF = 1e-3
# Pins the calibrated input range to exactly 0-255 (scale 1, zero point 0): real images need
# not contain both a 0 and a 255 value in every channel.
_RANGE_PIN = np.concatenate([np.zeros((1, 8, 8, 3)), np.full((1, 8, 8, 3), 255.0)], axis=1).astype(np.float32)


def _predict_function(
    model: tf_keras.Model, image_size: int, input_dtype: tf.DType
) -> tf.types.experimental.ConcreteFunction:
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], input_dtype, name="image")])
    def predict(image: tf.Tensor) -> tf.Tensor:
        return model(data.resize_pixels(image, image_size), training=False)

    return predict.get_concrete_function()


def convert(
    model: tf_keras.Model, image_size: int, mode: str, calibration: Sequence[np.ndarray] = ()
) -> bytes:
    """Converts images -> probabilities to TFLite (without metadata; see export_tflite).

    Args:
      model: images (float32 0-255 [B, S, S, 3]) -> probabilities [B, L].
      image_size: S.
      mode: float or int8.
      calibration: uint8 RGB images [H, W, 3] (int8 only; each its own size).

    Returns:
      The .tflite flatbuffer.

    Raises:
      ValueError: unknown mode, int8 without calibration images, or an int8 input that does not
        take raw pixels.
    """
    if mode == FLOAT:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([_predict_function(model, image_size, tf.uint8)])
        return converter.convert()
    if mode != INT8:
        raise ValueError(f"unknown TFLite export mode {mode!r}; choose one of {', '.join(EXPORT_MODES[1:])}")
    if not calibration:
        raise ValueError("int8 export needs calibration images")

    def representative() -> Iterable[list[np.ndarray]]:
        yield [_RANGE_PIN]
        for image in calibration:
            yield [np.asarray(image, np.float32)[None]]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([_predict_function(model, image_size, tf.float32)])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32
    with warnings.catch_warnings():
        # The converter's check for quantized_input_stats, which only the legacy (non-calibrated)
        # path uses: here the input's range comes from calibration (and is checked just below).
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        content = converter.convert()
    interpreter = tf.lite.Interpreter(model_content=content)
    scale, zero_point = interpreter.get_input_details()[0]["quantization"]
    if abs(scale - 1.0) > 1e-6 or zero_point != 0:
        raise ValueError(f"int8 model input is quantized with scale {scale}, zero point {zero_point}: not raw pixels")
    return content


def add_metadata(content: bytes, metadata: dict) -> bytes:
    """Stores a JSON document in the flatbuffer's metadata (entry METADATA_NAME)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME.encode()
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_metadata(content: bytes) -> dict:
    """The JSON document export_tflite stored in a model.tflite.

    Raises:
      ValueError: the file has no facepipe metadata.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(content, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() and entry.Name().decode() == METADATA_NAME:
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    raise ValueError(f"the TFLite model has no '{METADATA_NAME}' metadata (label names): not exported by facepipe")


def contract(label_names: Sequence[str], image_size: int, mode: str) -> dict:
    """The metadata document: label order, input and output contract."""
    return {
        "format": METADATA_FORMAT,
        "label_names": list(label_names),
        "image_size": int(image_size),
        "quantization": mode,
        "input": {
            "name": "image",
            "dtype": "uint8",
            "shape": "[N, H, W, 3], any H and W",
            "values": "RGB pixels 0-255 as decoded, no scaling or normalization",
            "resize": f"inside the model: bilinear to {image_size}x{image_size}, as the SavedModel",
        },
        "output": {"dtype": "float32", "shape": f"[N, {len(label_names)}]", "values": "probability per label"},
    }


class TFLitePredictor:
    """Runs a model.tflite on uint8 images, one call per run of equally sized images.

    Args:
      content: the .tflite flatbuffer (export_tflite's).
      num_threads: interpreter threads.
    """

    def __init__(self, content: bytes, num_threads: int | None = None):
        self.metadata = read_metadata(content)
        self._interpreter = tf.lite.Interpreter(model_content=content, num_threads=num_threads)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape: tuple[int, ...] = ()

    @property
    def label_names(self) -> list[str]:
        """Output columns, in order."""
        return list(self.metadata["label_names"])

    def predict_batch(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> float32 [N, L]."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.shape != self._shape:
            self._interpreter.resize_tensor_input(self._input, list(images.shape))
            self._interpreter.allocate_tensors()
            self._shape = images.shape
        self._interpreter.set_tensor(self._input, images)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output).copy()

    def predict(self, images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """A list of uint8 [H, W, 3] images (any sizes) -> float32 [len, L], in order.

        Consecutive images of one size go through the model together, up to batch_size.
        """
        out = np.zeros((len(images), len(self.label_names)), np.float32)
        start = 0
        while start < len(images):
            end = start + 1
            while end < len(images) and end - start < batch_size and images[end].shape == images[start].shape:
                end += 1
            out[start:end] = self.predict_batch(np.stack(images[start:end]))
            start = end
        return out


def export_tflite(
    model: tf_keras.Model,
    path: str,
    image_size: int,
    label_names: Sequence[str],
    mode: str,
    calibration: Sequence[np.ndarray] = (),
    check_images: Sequence[bytes] = (),
) -> dict:
    """Writes model.tflite with its contract in its metadata, and checks it against the Keras model.

    Args:
      model: images -> probabilities (the model the SavedModel is exported from).
      path: the file to write (local or gs://).
      image_size: the size the model resizes to.
      label_names: the output columns, stored in the file.
      mode: float or int8.
      calibration: uint8 RGB training images [H, W, 3] for int8 calibration.
      check_images: encoded images compared end to end: TFLite on decoded pixels against the
        Keras model on data.decode_images of the same bytes (what the SavedModel runs).

    Returns:
      The stored metadata, with ``check`` (images, max_abs_diff) and ``bytes``.

    Raises:
      ValueError: see convert; or a float model whose probabilities differ from the Keras
        model's by more than FLOAT_MAX_PROBABILITY_DIFF.
    """
    metadata = contract(label_names, image_size, mode)
    content = add_metadata(convert(model, image_size, mode, calibration), metadata)
    check = {"images": 0, "max_abs_diff": None}
    if check_images:
        encoded = tf.constant(list(check_images))
        expected = model(data.decode_images(encoded, image_size), training=False).numpy()
        pixels = [data.decode_pixels(b).numpy() for b in check_images]
        got = TFLitePredictor(content).predict(pixels)
        check = {"images": len(check_images), "max_abs_diff": float(np.abs(got - expected).max())}
        logger.info("model.tflite (%s) vs the Keras model on %d training images: max |difference| %.3g",
                    mode, check["images"], check["max_abs_diff"])
        if mode == FLOAT and check["max_abs_diff"] > FLOAT_MAX_PROBABILITY_DIFF:
            raise ValueError(
                f"float model.tflite differs from the Keras model by {check['max_abs_diff']:.3g} "
                f"(> {FLOAT_MAX_PROBABILITY_DIFF}): the conversion is broken"
            )
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(content)
    return {**metadata, "check": check, "bytes": len(content)}


def sample_images(dataset: tf.data.Dataset, count: int) -> list[bytes]:
    """The first ``count`` encoded images of a dataset of example batches (file order: deterministic)."""
    images: list[bytes] = []
    for batch in dataset:
        images += [bytes(b) for b in tf.reshape(batch[labels.IMAGE_KEY], [-1]).numpy()]
        if len(images) >= count:
            break
    return images[:count]


def export_from_training_data(
    model: tf_keras.Model,
    serving_model_dir: str,
    image_size: int,
    mode: str,
    training_batches: tf.data.Dataset,
    check_count: int = 32,
) -> dict:
    """Exports ``<serving_model_dir>/model.tflite``, calibrated and checked on training images.

    Args:
      model: images -> probabilities (the SavedModel's Keras model).
      serving_model_dir: the exported SavedModel's folder.
      image_size: the size the model resizes to.
      mode: float or int8.
      training_batches: batches of raw training examples (data.read_examples).
      check_count: images of the end-to-end check against the Keras model.

    Returns:
      export_tflite's record, with ``path`` and ``calibration_images``.
    """
    encoded = sample_images(training_batches, CALIBRATION_IMAGES if mode == INT8 else check_count)
    calibration = [data.decode_pixels(b).numpy() for b in encoded] if mode == INT8 else []
    path = f"{serving_model_dir.rstrip('/')}/{TFLITE_FILE}"
    record = export_tflite(
        model, path, image_size, labels.LABEL_NAMES, mode, calibration, encoded[:check_count]
    )
    return {**record, "path": path, "calibration_images": len(calibration)}
