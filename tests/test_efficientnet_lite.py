"""Tests for components/trainer/torch_checkpoint.py (restricted torch reader) and
components/trainer/efficientnet_lite.py (tf_keras EfficientNet-Lite0)."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import collections
import io
import pickle
import struct
from typing import ClassVar

import matplotlib
import numpy as np
import pytest
from PIL import Image

from components.trainer import efficientnet_lite as effnet
from components.trainer import torch_checkpoint as ckpt

MILITARY_UNIFORM = 652


# ------------------------------------------------------------------------------------------------------
# Helpers to write legacy-format torch files without torch
# ------------------------------------------------------------------------------------------------------


class _Global:
    """Marker pickled as a bare GLOBAL opcode (module, name) - lets tests name torch globals without torch."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle requires reduce callables to be callable; never called here
        raise AssertionError("marker globals are only written, never called")


class _FakeStorage:
    def __init__(self, key, type_name, data, claimed_numel=None):
        self.key, self.type_name, self.data = key, type_name, np.ascontiguousarray(data)
        self.numel = self.data.size if claimed_numel is None else claimed_numel


class _FakeTensor:
    def __init__(self, storage, offset, size, stride, build_state=None):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)
        self.build_state = build_state  # written as a BUILD opcode after the tensor is rebuilt

    def __reduce__(self):
        rebuild = _Global("torch._utils", "_rebuild_tensor_v2")
        args = (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict())
        return (rebuild, args) if self.build_state is None else (rebuild, args, self.build_state)


class _LegacyPickler(pickle._Pickler):
    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def _save_marker(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_Global] = _save_marker

    def persistent_id(self, obj):
        if isinstance(obj, _FakeStorage):
            return ("storage", _Global("torch", obj.type_name), obj.key, "cpu", obj.numel, None)
        return None


def _legacy_header() -> bytes:
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 8},
    }
    return b"".join(pickle.dumps(o, protocol=2) for o in (0x1950A86A20F9469CFC6C, 1001, sys_info))


def _write_legacy(path, state_dict_bytes: bytes, storages=()):
    with open(path, "wb") as fh:
        fh.write(_legacy_header())
        fh.write(state_dict_bytes)
        fh.write(pickle.dumps([s.key for s in storages], protocol=2))
        for s in storages:
            fh.write(struct.pack("<q", s.numel))
            fh.write(s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())


def _dumps_legacy(obj) -> bytes:
    buf = io.BytesIO()
    _LegacyPickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def state_dict():
    return ckpt.read_legacy_torch_state_dict(effnet.bundled_weights_path())


@pytest.fixture(scope="module")
def classifier():
    return effnet.build_efficientnet_lite0(224, weights="imagenet", include_top=True)


@pytest.fixture(scope="module")
def features_128():
    return effnet.build_efficientnet_lite0(128, weights="imagenet", include_top=False)


# ------------------------------------------------------------------------------------------------------
# Reader
# ------------------------------------------------------------------------------------------------------


def test_bundled_weights_path_exists():
    path = effnet.bundled_weights_path()
    assert path.is_file() and path.name == "efficientnet-lite0-57934424.pth"


def test_reader_param_count_and_shapes(state_dict):
    float_params = sum(v.size for k, v in state_dict.items() if not k.endswith("num_batches_tracked"))
    assert float_params == 4_694_024  # ~4.69M
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_conv_stem.weight"].dtype == np.float32
    assert state_dict["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert state_dict["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state_dict["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state_dict["_fc.weight"].shape == (1000, 1280)
    assert state_dict["_bn0.num_batches_tracked"].dtype == np.int64
    assert all(np.isfinite(v).all() for v in state_dict.values())
    assert np.all(state_dict["_bn1.running_var"] > 0)


def test_reader_handles_views_offsets_and_int64(tmp_path):
    base = np.arange(24, dtype=np.float32)
    floats = _FakeStorage("s0", "FloatStorage", base)
    longs = _FakeStorage("s1", "LongStorage", np.array([7, -3], dtype=np.int64))
    state = collections.OrderedDict(
        [
            ("contiguous", _FakeTensor(floats, 0, (2, 3), (3, 1))),
            ("transposed", _FakeTensor(floats, 0, (3, 2), (1, 3))),  # shares storage, non-contiguous
            ("offset", _FakeTensor(floats, 6, (2, 2, 2), (8, 2, 1))),
            ("scalar_long", _FakeTensor(longs, 1, (), ())),
        ]
    )
    path = tmp_path / "views.pth"
    _write_legacy(path, _dumps_legacy(state), [floats, longs])

    out = ckpt.read_legacy_torch_state_dict(path)
    assert list(out) == list(state)
    np.testing.assert_array_equal(out["contiguous"], base[:6].reshape(2, 3))
    np.testing.assert_array_equal(out["transposed"], base[:6].reshape(2, 3).T)
    expected = np.lib.stride_tricks.as_strided(base[6:], (2, 2, 2), (32, 8, 4))
    np.testing.assert_array_equal(out["offset"], expected)
    assert (
        out["scalar_long"].dtype == np.int64 and out["scalar_long"].shape == () and out["scalar_long"] == -3
    )


def test_reader_rejects_out_of_bounds_view(tmp_path):
    floats = _FakeStorage("s0", "FloatStorage", np.zeros(4, np.float32))
    path = tmp_path / "oob.pth"
    _write_legacy(path, _dumps_legacy({"w": _FakeTensor(floats, 2, (3,), (1,))}), [floats])
    with pytest.raises(ValueError, match="exceeds its storage"):
        ckpt.read_legacy_torch_state_dict(path)


def _crafted(tmp_path, tensor: "_FakeTensor", storage: "_FakeStorage"):
    path = tmp_path / "crafted.pth"
    _write_legacy(path, _dumps_legacy({"w": tensor}), [storage])
    return path


@pytest.mark.parametrize(
    ("size", "stride", "build_state"),
    [
        # A BUILD opcode after the tensor was rebuilt (and, before the fix, bounds-checked) rewrites its geometry.
        ((1000,), (1,), {"stride": (-1,)}),  # read 4,000 bytes of heap before the storage
        ((2,), (1,), {"stride": (-(2**40),)}),  # crashed the process (SIGSEGV)
        ((1000,), (1,), {"size": (1000, 1000, 36), "stride": (0, 0, 0)}),  # 144 MB from a 4 kB file
        ((1000,), (1,), {"offset": -1}),
        # The same geometries given directly to the rebuild call.
        ((1000,), (-1,), None),
        ((1000, 1000, 36), (0, 0, 0), None),
        ((2, 2), (1, 0), None),  # overlapping: more elements than the storage holds
    ],
    ids=["build-stride-1", "build-stride-2e40", "build-zero-strides", "build-offset", "stride-1",
         "zero-strides", "overlap"],
)
def test_crafted_tensor_geometry_is_refused_with_value_error(tmp_path, size, stride, build_state):
    floats = _FakeStorage("s0", "FloatStorage", np.ones(1000 if size[0] == 1000 else 2, np.float32))
    path = _crafted(tmp_path, _FakeTensor(floats, 0, size, stride, build_state), floats)
    with pytest.raises(ValueError):
        ckpt.read_legacy_torch_state_dict(path)


def test_storage_claiming_more_elements_than_the_file_holds_is_a_value_error(tmp_path):
    huge = _FakeStorage("s0", "FloatStorage", np.ones(4, np.float32), claimed_numel=2**40)
    path = _crafted(tmp_path, _FakeTensor(huge, 0, (4,), (1,)), huge)
    with pytest.raises(ValueError, match="claims 1099511627776 elements"):  # not MemoryError
        ckpt.read_legacy_torch_state_dict(path)


def test_size_one_dimensions_may_have_any_stride(tmp_path):
    floats = _FakeStorage("s0", "FloatStorage", np.arange(6, dtype=np.float32))
    path = _crafted(tmp_path, _FakeTensor(floats, 0, (1, 2, 3), (2**62, 3, 1)), floats)
    np.testing.assert_array_equal(ckpt.read_legacy_torch_state_dict(path)["w"], np.arange(6).reshape(1, 2, 3))


class _RunsShell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _RunsEval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return eval, (self.code,)


@pytest.mark.parametrize("payload_kind", ["os.system", "builtins.eval"])
def test_malicious_pickle_is_refused(tmp_path, payload_kind):
    marker = tmp_path / "pwned"
    if payload_kind == "os.system":
        payload = _RunsShell(f"touch {marker}")
    else:
        payload = _RunsEval(f"open({str(marker)!r}, 'w').close()")
    state = collections.OrderedDict([("weight", payload)])
    path = tmp_path / "evil.pth"
    _write_legacy(path, pickle.dumps(state, protocol=2))

    with pytest.raises(
        pickle.UnpicklingError, match="refusing to load global '(posix|os|nt|builtins|__builtin__)"
    ):
        ckpt.read_legacy_torch_state_dict(path)
    assert not marker.exists()


def test_malicious_header_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_header.pth"
    path.write_bytes(pickle.dumps(_RunsShell(f"touch {marker}"), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        ckpt.read_legacy_torch_state_dict(path)
    assert not marker.exists()


def test_non_torch_files_raise_value_error(tmp_path):
    bad_magic = tmp_path / "bad_magic.pth"
    bad_magic.write_bytes(pickle.dumps(12345, protocol=2))
    with pytest.raises(ValueError, match="magic"):
        ckpt.read_legacy_torch_state_dict(bad_magic)
    zipped = tmp_path / "zip.pth"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 32)
    with pytest.raises(ValueError, match="zip"):
        ckpt.read_legacy_torch_state_dict(zipped)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises((ValueError, pickle.UnpicklingError)):
        ckpt.read_legacy_torch_state_dict(garbage)


# ------------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------------


def test_grace_hopper_is_military_uniform(classifier):
    path = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    image = Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR)
    batch = np.asarray(image, dtype=np.float32)[None]  # raw 0-255 pixels
    probs = classifier(effnet.preprocess_input(batch), training=False).numpy()[0]
    assert classifier.output_shape == (None, 1000)
    assert probs.sum() == pytest.approx(1.0, abs=1e-4)
    assert int(np.argmax(probs)) == MILITARY_UNIFORM
    assert probs[MILITARY_UNIFORM] > 0.2


def test_features_128_shape_and_weights(features_128, state_dict):
    model = features_128
    assert model.input_shape == (None, 128, 128, 3)
    assert model.output_shape == (None, 4, 4, 1280)
    sd = state_dict
    np.testing.assert_array_equal(
        model.get_layer("stem_conv").kernel.numpy(), sd["_conv_stem.weight"].transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        model.get_layer("block9_dwconv").depthwise_kernel.numpy(),
        sd["_blocks.9._depthwise_conv.weight"].transpose(2, 3, 0, 1),
    )
    assert model.get_layer("block9_dwconv").depthwise_kernel.shape == (5, 5, 672, 1)
    head_bn = model.get_layer("head_bn")
    np.testing.assert_array_equal(head_bn.moving_variance.numpy(), sd["_bn1.running_var"])
    np.testing.assert_array_equal(head_bn.gamma.numpy(), sd["_bn1.weight"])
    # Every weighted layer was filled from the checkpoint: total parameter count matches (minus the classifier).
    fc = sd["_fc.weight"].size + sd["_fc.bias"].size
    float_params = sum(v.size for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    assert model.count_params() == float_params - fc
    features = model(np.full((2, 128, 128, 3), 127.0, np.float32), training=False).numpy()
    assert features.shape == (2, 4, 4, 1280) and np.isfinite(features).all()
    assert features.min() >= 0.0 and features.max() <= 6.0  # ReLU6 head


def test_features_match_classifier_head(classifier, state_dict):
    """include_top=False features, pooled and passed through the torch fc, reproduce the classifier output."""
    features = effnet.build_efficientnet_lite0(224, weights="imagenet", include_top=False)
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, size=(2, 224, 224, 3)).astype(np.float32)
    pooled = features(batch, training=False).numpy().mean(axis=(1, 2))
    logits = pooled @ state_dict["_fc.weight"].T + state_dict["_fc.bias"]
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(classifier(batch, training=False).numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("size, grid", [(32, 1), (33, 2), (100, 4)])
def test_arbitrary_sizes_random_init(size, grid):
    model = effnet.build_efficientnet_lite0(size, weights=None)
    assert model.output_shape == (None, grid, grid, 1280)
    assert model(np.zeros((1, size, size, 3), np.float32), training=False).shape == (1, grid, grid, 1280)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        effnet.build_efficientnet_lite0(16, weights=None)
    with pytest.raises(ValueError):
        effnet.build_efficientnet_lite0(64, weights="noisy-student")


def test_the_checkpoint_reader_knows_nothing_of_keras():
    """The reader is split from the architecture: it needs the standard library and numpy only."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(ckpt))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "collections", "os", "pickle", "struct", "typing", "numpy"}, imported
