"""Backbones: build and freeze, per-backbone input preprocessing, weights files, the offline error.

keras.applications backbones are built with weights=None (random init) at 32 px: these tests check
structure, preprocessing and weight loading, never accuracy. No test touches the network: the
offline error is produced with an unreachable local origin.
"""

import dataclasses

import numpy as np
import pytest
import tf_keras

from components.trainer import backbone_specs, backbones, model, train
from components.trainer import config as trainer_config
from pipeline import config as pipeline_config

SIZE = 32  # the smallest size every backbone accepts
KERAS_NAMES = tuple(backbones.KERAS_BACKBONES)
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: the connection is refused at once


@pytest.fixture(scope="module")
def built():
    """One frozen random-init backbone per name (built once: ResNet50/VGG16 take seconds)."""
    train.skip_autograph_for_tf_keras()  # tracing tf_keras through AutoGraph costs seconds per model
    cache = {}

    def get(name):
        if name not in cache:
            weights = "imagenet" if name == backbones.DEFAULT_BACKBONE else None  # lite0: bundled, offline
            cache[name] = model.freeze(backbones.build_backbone(name, SIZE, weights=weights))
        return cache[name]

    return get


def _pixels(n=3, size=SIZE, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(n, size, size, 3)).astype(np.float32)


def test_names_match_the_config_choices():
    # Declared once (backbone_specs): what the flag offers is what backbones builds.
    assert backbones.BACKBONE_NAMES is backbone_specs.BACKBONE_NAMES == trainer_config.BACKBONE_NAMES
    assert backbones.DEFAULT_BACKBONE == pipeline_config.PipelineConfig("", "", "").trainer.backbone


@pytest.mark.parametrize("name", backbones.BACKBONE_NAMES)
def test_backbone_builds_frozen_and_stays_frozen(built, name):
    backbone = built(name)
    assert backbone.input_shape == (None, SIZE, SIZE, 3)
    assert len(backbone.output_shape) == 4
    assert backbone.trainable_weights == []
    extractor = model.build_feature_extractor(backbone)
    head = model.build_head(extractor.output_shape[-1], 2, hidden_units=4, dropout=0.0)
    full = model.build_model(extractor, head)
    assert len(full.trainable_weights) == 4  # the head's two kernels and biases only
    before = [w.numpy().copy() for w in backbone.weights]  # BatchNorm moving statistics included
    full.compile(optimizer=tf_keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    full.fit(_pixels(4), np.array([[0, 1], [1, 0], [1, 1], [0, 0]], np.float32), epochs=1, verbose=0)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, backbone.weights, strict=True))


def _torch_mode(x):
    return (x / 255.0 - np.array(backbones.IMAGENET_MEAN_RGB)) / np.array(backbones.IMAGENET_STD_RGB)


REFERENCE_PREPROCESSING = {
    "efficientnet_lite0": lambda x: (x - 127.0) / 128.0,
    "mobilenet_v2": tf_keras.applications.mobilenet_v2.preprocess_input,
    "efficientnet_b0": _torch_mode,  # the original EfficientNet normalization (ImageNet mean/std)
    "resnet50": tf_keras.applications.resnet50.preprocess_input,
    "vgg16": tf_keras.applications.vgg16.preprocess_input,
}


@pytest.mark.parametrize("name", backbones.BACKBONE_NAMES)
def test_each_backbone_normalizes_raw_pixels_its_own_way(built, name):
    x = _pixels()
    got = backbones.preprocessing_output(built(name))(x).numpy()
    np.testing.assert_allclose(got, REFERENCE_PREPROCESSING[name](x.copy()), rtol=1e-5, atol=1e-4)


def test_caffe_preprocessing_by_hand(built):
    red = np.zeros((1, SIZE, SIZE, 3), np.float32)
    red[..., 0] = 255.0  # RGB red -> BGR (0, 0, 255) minus the BGR means
    got = backbones.preprocessing_output(built("resnet50"))(red).numpy()[0, 0, 0]
    np.testing.assert_allclose(got, [-103.939, -116.779, 255.0 - 123.68], atol=1e-3)


@pytest.mark.parametrize("name", backbones.BACKBONE_NAMES)
def test_too_small_images_are_refused(name):
    with pytest.raises(ValueError, match="image size must be >= 32"):
        backbones.build_backbone(name, 31, weights=None)


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="unknown backbone"):
        backbones.build_backbone("alexnet", SIZE)


def _keras_weights_file(tmp_path, builder, file_name="weights.h5"):
    """Saves a plain keras.applications model's weights, as Keras' own ImageNet files are made."""
    reference = builder(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    path = tmp_path / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    reference.save_weights(str(path))
    return reference, str(path)


def _weights_by_layer(m):
    return {layer.name: layer.get_weights() for layer in m.layers if layer.weights}


def test_weights_file_is_loaded(tmp_path):
    reference, path = _keras_weights_file(tmp_path, tf_keras.applications.MobileNetV2)
    loaded = backbones.build_backbone("mobilenet_v2", SIZE, weights_file=path)
    expected, got = _weights_by_layer(reference), _weights_by_layer(loaded)
    assert set(expected) == set(got)
    for name, values in expected.items():
        for a, b in zip(values, got[name], strict=True):
            np.testing.assert_array_equal(a, b)
    fresh = backbones.build_backbone("mobilenet_v2", SIZE, weights=None)  # random: must differ
    assert not np.array_equal(_weights_by_layer(fresh)["Conv1"][0], got["Conv1"][0])


def test_efficientnet_b0_weights_file_keeps_imagenet_normalization(tmp_path):
    reference, path = _keras_weights_file(tmp_path, tf_keras.applications.EfficientNetB0)
    loaded = backbones.build_backbone("efficientnet_b0", SIZE, weights_file=path)
    norm = next(la for la in loaded.layers if isinstance(la, tf_keras.layers.Normalization))
    np.testing.assert_allclose(norm.get_weights()[0], backbones.IMAGENET_MEAN_RGB, rtol=1e-6)
    np.testing.assert_allclose(norm.get_weights()[1], np.square(backbones.IMAGENET_STD_RGB), rtol=1e-6)
    expected = _weights_by_layer(reference)
    got = _weights_by_layer(loaded)
    np.testing.assert_array_equal(expected["stem_conv"][0], got["stem_conv"][0])
    np.testing.assert_array_equal(expected["top_conv"][0], got["top_conv"][0])
    x = _pixels(1)
    np.testing.assert_allclose(backbones.preprocessing_output(loaded)(x).numpy(), _torch_mode(x), atol=1e-4)


def test_weights_file_of_another_network_is_refused(tmp_path):
    _, path = _keras_weights_file(tmp_path, tf_keras.applications.MobileNetV2)
    with pytest.raises(ValueError, match="not EfficientNetB0 no-top ImageNet weights"):
        backbones.build_backbone("efficientnet_b0", SIZE, weights_file=path)


def test_missing_weights_file_and_lite0_weights_file_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        backbones.build_backbone("vgg16", SIZE, weights_file=str(tmp_path / "nope.h5"))
    with pytest.raises(ValueError, match="bundled ImageNet weights"):
        backbones.build_backbone("efficientnet_lite0", SIZE, weights_file=str(tmp_path / "x.h5"))


def test_weights_in_the_keras_cache_are_used_offline(tmp_path, monkeypatch):
    spec = backbones.KERAS_BACKBONES["mobilenet_v2"]
    # Offline: a download attempt would fail, so success proves the cached file was used.
    monkeypatch.setitem(backbones.KERAS_BACKBONES, "mobilenet_v2", dataclasses.replace(spec, weights_url=UNREACHABLE))
    file_name = spec.weights_file_name(SIZE)
    reference, _ = _keras_weights_file(tmp_path / "models", tf_keras.applications.MobileNetV2, file_name)
    loaded = backbones.build_backbone("mobilenet_v2", SIZE, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(_weights_by_layer(reference)["Conv1"][0], _weights_by_layer(loaded)["Conv1"][0])


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_offline_without_weights_is_a_clear_one_line_error(tmp_path, monkeypatch, name):
    spec = dataclasses.replace(backbones.KERAS_BACKBONES[name], weights_url=UNREACHABLE)
    monkeypatch.setitem(backbones.KERAS_BACKBONES, name, spec)
    with pytest.raises(backbones.WeightsUnavailableError) as err:
        backbones.build_backbone(name, 128, cache_dir=str(tmp_path))
    message = str(err.value)
    assert "\n" not in message
    assert spec.weights_file_name(128) in message
    assert UNREACHABLE in message and str(tmp_path / "models") in message and "--weights-file" in message
    assert not (tmp_path / "models" / spec.weights_file_name(128)).exists()  # no partial file left


def test_corrupt_cached_weights_are_reported(tmp_path):
    spec = backbones.KERAS_BACKBONES["resnet50"]
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / spec.weights_file_name(SIZE)).write_bytes(b"truncated")
    with pytest.raises(backbones.WeightsUnavailableError, match="corrupt .* delete it"):
        backbones.resolve_weights(spec, SIZE, cache_dir=str(tmp_path))


def test_mobilenet_weight_file_depends_on_size():
    spec = backbones.KERAS_BACKBONES["mobilenet_v2"]
    assert spec.weights_file_name(128).endswith("_1.0_128_no_top.h5")
    assert spec.weights_file_name(100).endswith("_1.0_224_no_top.h5")  # Keras' fallback


def test_unfreeze_top_trains_only_the_top_layers():
    backbone = model.freeze(backbones.build_backbone("mobilenet_v2", SIZE, weights=None))
    names = backbones.unfreeze_top(backbone, 2)
    assert names == ["block_16_project", "Conv_1"]
    trainable = {w.name.split("/")[0] for w in backbone.trainable_weights}
    assert trainable == set(names)
    assert not any(isinstance(la, tf_keras.layers.BatchNormalization) and la.trainable for la in backbone.layers)
    assert backbones.unfreeze_top(model.freeze(backbone), 0) == []
    assert backbone.trainable_weights == []

