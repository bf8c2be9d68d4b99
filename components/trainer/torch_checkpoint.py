"""A reader for legacy (pre-zip) ``torch.save`` state dicts, without torch and without ``pickle.load``.

A restricted unpickler only admits the handful of globals a state dict needs (``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter`` and the ``torch.<X>Storage`` type names) and
maps them to harmless stand-ins; every other global (``os.system``, ``builtins.eval``, ...) is refused
before anything can be called. Tensors are read as numpy arrays after every size, stride and offset is
checked against the storage they view. ``components/trainer/efficientnet_lite.py`` reads its bundled
ImageNet weights with it.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
from typing import Any, BinaryIO, ClassVar

import numpy as np

__all__ = ["read_legacy_torch_state_dict"]

# Legacy torch.save format constants (torch/serialization.py).
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

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

