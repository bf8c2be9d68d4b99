"""Frozen pretrained backbones, by name.

Every backbone takes float32 RGB images with values 0-255 and does its own input
normalization inside the model, so callers (training, the exported SavedModel) never need a
per-backbone preprocess: the exported model keeps taking raw image bytes.

``efficientnet_lite0`` reads its ImageNet weights from a bundled package (offline). The
``tf_keras.applications`` backbones need the Keras ImageNet weight files: from ``--weights-file``,
from the Keras cache (``~/.keras/models/``), or downloaded into that cache. Offline without a
file, building fails with a one-line message that says what to download and where; it never
falls back to random weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Callable

import numpy as np
import tf_keras

from components.trainer import efficientnet_lite
from components.trainer.backbone_specs import BACKBONE_NAMES, DEFAULT_BACKBONE, KERAS_BACKBONES, BackboneSpec

logger = logging.getLogger(__name__)

MIN_IMAGE_SIZE = 32  # the smallest input every backbone accepts (keras.applications' own minimum)
DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation: a stalled connection fails instead of hanging
PREPROCESS_LAYER = "preprocess"

# ImageNet mean/std of RGB values in [0, 1] ("torch" mode of keras.applications' preprocess_input).
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
# Caffe-style (ResNet50, VGG16): BGR channel means of 0-255 pixels.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

class WeightsUnavailableError(RuntimeError):
    """Pretrained weights can be neither found locally nor downloaded."""


@tf_keras.utils.register_keras_serializable(package="facepipe")
class CaffePreprocess(tf_keras.layers.Layer):
    """RGB 0-255 -> BGR minus the ImageNet channel means (ResNet50, VGG16 'caffe' mode)."""

    def call(self, inputs):  # noqa: D102 (Keras API)
        bgr = inputs[..., ::-1]
        return bgr - np.asarray(CAFFE_MEAN_BGR, dtype=np.float32)


def default_cache_dir() -> str:
    """The Keras cache folder (weights go to its ``models/`` subfolder)."""
    return os.path.join(os.path.expanduser("~"), ".keras")


def _file_matches(path: str, file_hash: str) -> bool:
    algorithm = hashlib.sha256 if len(file_hash) == 64 else hashlib.md5
    digest = algorithm()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest() == file_hash


def _what_to_do(spec: BackboneSpec, image_size: int, cache_dir: str) -> str:
    return (
        f"download {spec.weights_origin(image_size)} into {os.path.join(cache_dir, 'models')}/ "
        f"or pass --weights-file PATH (a local copy of {spec.weights_file_name(image_size)})"
    )


def resolve_weights(
    spec: BackboneSpec, image_size: int, weights_file: str | None = None, cache_dir: str | None = None
) -> str:
    """Finds the ImageNet weights file of a keras.applications backbone, downloading it if needed.

    Order: ``weights_file`` if given; the Keras cache ``<cache_dir>/models/<file name>``; a download
    into that cache (socket timeout DOWNLOAD_TIMEOUT_S).

    Args:
      spec: the backbone.
      image_size: input size (MobileNetV2's weight file depends on it).
      weights_file: a local .h5 weights file, or None.
      cache_dir: the Keras cache folder; default ~/.keras.

    Returns:
      The path of the weights file.

    Raises:
      FileNotFoundError: weights_file does not exist.
      WeightsUnavailableError: no local file and the download failed (offline); the message says what to do.
    """
    if weights_file:
        if not os.path.isfile(weights_file):
            raise FileNotFoundError(f"--weights-file {weights_file} does not exist")
        return weights_file
    cache_dir = cache_dir or default_cache_dir()
    file_name = spec.weights_file_name(image_size)
    cached = os.path.join(cache_dir, "models", file_name)
    if os.path.isfile(cached):
        if spec.file_hash and not _file_matches(cached, spec.file_hash):
            raise WeightsUnavailableError(
                f"{cached} is incomplete or corrupt (hash mismatch): delete it, then "
                + _what_to_do(spec, image_size, cache_dir)
            )
        return cached
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urlretrieve has no timeout argument of its own
    try:
        return tf_keras.utils.get_file(
            file_name,
            spec.weights_origin(image_size),
            cache_subdir="models",
            file_hash=spec.file_hash or None,
            cache_dir=cache_dir,
        )
    except Exception as exc:  # get_file raises a bare Exception for every network error
        # ... wrapping the urllib error, whose reason is the useful part (e.g. "Name or service not known").
        reason = getattr(exc.__context__, "reason", None) or str(exc).splitlines()[0] or type(exc).__name__
        raise WeightsUnavailableError(
            f"cannot download ImageNet weights for backbone {spec.name!r} ({reason}): "
            + _what_to_do(spec, image_size, cache_dir)
        ) from exc
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _set_efficientnet_normalization(model: tf_keras.Model) -> None:
    """Sets EfficientNetB0's input Normalization to the ImageNet mean and variance (std squared).

    tf_keras stores the std (not the variance) in that layer and corrects it with an extra scaling
    layer only when built with ``weights="imagenet"``; we always build with ``weights=None`` and load
    the file ourselves, so the correct statistics are set here explicitly, whatever the file holds.
    """
    norm = next(layer for layer in model.layers if isinstance(layer, tf_keras.layers.Normalization))
    count = norm.get_weights()[2]
    norm.set_weights(
        [np.asarray(IMAGENET_MEAN_RGB, np.float32), np.square(np.asarray(IMAGENET_STD_RGB, np.float32)), count]
    )


def _build_keras_backbone(
    spec: BackboneSpec, image_size: int, weights: str | None, weights_file: str | None, cache_dir: str | None
) -> tf_keras.Model:
    path = resolve_weights(spec, image_size, weights_file, cache_dir) if weights == "imagenet" else None
    images = tf_keras.Input(shape=(image_size, image_size, 3), dtype="float32", name="image")
    if spec.preprocessing == "tf":
        x = tf_keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=PREPROCESS_LAYER)(images)
    elif spec.preprocessing == "caffe":
        x = CaffePreprocess(name=PREPROCESS_LAYER)(images)
    else:
        x = images  # EfficientNetB0 starts with its own Rescaling(1/255) + Normalization layers
    builder: Callable[..., tf_keras.Model] = getattr(tf_keras.applications, spec.builder)
    # input_tensor makes one flat model (preprocessing + backbone layers), so "the top N layers" and
    # freezing work on the backbone's own layers.
    net = builder(include_top=False, weights=None, input_tensor=x)
    model = tf_keras.Model(images, net.output, name=spec.name)
    if path is not None:
        try:
            model.load_weights(path)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path}: not {spec.builder} no-top ImageNet weights ({exc})") from exc
        logger.info("loaded %s weights from %s", spec.name, path)
    if spec.preprocessing == "inside":
        _set_efficientnet_normalization(model)
    return model


def build_backbone(
    name: str,
    image_size: int,
    weights: str | None = "imagenet",
    weights_file: str | None = None,
    cache_dir: str | None = None,
) -> tf_keras.Model:
    """Builds a pretrained backbone that maps images to a feature map.

    Args:
      name: backbone name; one of BACKBONE_NAMES (components.trainer.backbone_specs).
      image_size: square input size in pixels (>= MIN_IMAGE_SIZE).
      weights: "imagenet" for the pretrained weights, None for random init (tests only).
      weights_file: a local Keras .h5 weights file (keras.applications backbones only).
      cache_dir: the Keras cache folder for downloaded weights; default ~/.keras.

    Returns:
      A tf_keras Model, images (B, S, S, 3) in 0-255 -> feature map (B, h, w, C).

    Raises:
      ValueError: unknown backbone name, image size too small, or a weights file that does not fit.
      WeightsUnavailableError: ImageNet weights are neither local nor downloadable.
    """
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None, got {weights!r}")
    if int(image_size) < MIN_IMAGE_SIZE:
        raise ValueError(f"image size must be >= {MIN_IMAGE_SIZE} for every backbone, got {image_size}")
    if name == DEFAULT_BACKBONE:
        if weights_file:
            raise ValueError(f"{name} uses its bundled ImageNet weights; --weights-file is for {list(KERAS_BACKBONES)}")
        return efficientnet_lite.build_efficientnet_lite0(image_size=image_size, weights=weights, include_top=False)
    if name not in KERAS_BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}")
    return _build_keras_backbone(KERAS_BACKBONES[name], int(image_size), weights, weights_file, cache_dir)


def preprocessing_output(backbone: tf_keras.Model) -> tf_keras.Model:
    """The part of a backbone that turns 0-255 RGB into the network's normalized input.

    For tests and debugging: every backbone's own input normalization lives inside it.

    Args:
      backbone: a model from build_backbone.

    Returns:
      A model images (0-255) -> normalized images.
    """
    by_name = {layer.name: layer for layer in backbone.layers}
    layer = by_name.get(PREPROCESS_LAYER) or by_name.get("normalize")  # ours / EfficientNet-Lite0's
    if layer is None:  # EfficientNetB0: its Normalization layer (auto-named)
        layer = next(la for la in backbone.layers if isinstance(la, tf_keras.layers.Normalization))
    return tf_keras.Model(backbone.input, layer.output)


def unfreeze_top(backbone: tf_keras.Model, num_layers: int) -> list[str]:
    """Makes the top ``num_layers`` weight-carrying layers of a backbone trainable for fine-tuning.

    BatchNormalization layers stay frozen (and run in inference mode, see model.build_feature_extractor):
    updating their statistics on small batches would undo the pretrained features.

    Args:
      backbone: a model from build_backbone.
      num_layers: how many layers, counted from the output, become trainable.

    Returns:
      The names of the layers made trainable, bottom to top.
    """
    backbone.trainable = True
    candidates = []
    for layer in backbone.layers:
        layer.trainable = False
        if layer.weights and not isinstance(layer, tf_keras.layers.BatchNormalization):
            candidates.append(layer)
    chosen = candidates[-num_layers:] if num_layers > 0 else []
    for layer in chosen:
        layer.trainable = True
    return [layer.name for layer in chosen]
