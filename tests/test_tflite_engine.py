"""The Trainer's TFLite embedding engine: CPUs, the auto choice, the cache, the check, the fallback.

Cost on the shared 2-core machine: about 1 minute for the fast tests (one EfficientNet-Lite0
conversion at 64 px, shared by the module); the real-weights check at 128 px and the
keras.applications backbones (random weights: no ImageNet files offline) are marked slow.
"""

import io
import logging

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components import cpus
from components.base import labels
from components.trainer import backbones, data, model, tflite_engine, train
from components.trainer.embeddings import embed, tf_embedder

SIZE = 64


@pytest.fixture(scope="module")
def extractor():
    train.skip_autograph_for_tf_keras()
    return model.build_feature_extractor(model.freeze(backbones.build_backbone("efficientnet_lite0", SIZE)))


@pytest.fixture(scope="module")
def converted(extractor, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("tflite-cache"))
    return cache, tflite_engine.load_or_convert(extractor, "efficientnet_lite0", SIZE, cache)


def _jpeg(rng, size=(48, 40)) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)).save(out, format="JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(3)
    n = 20
    return tf.data.Dataset.from_tensor_slices({
        labels.IMAGE_KEY: [_jpeg(rng) for _ in range(n)],
        labels.LABELS_KEY: rng.integers(0, 2, size=(n, len(labels.LABEL_NAMES))).astype(np.float32),
        labels.FILENAME_KEY: [f"img_{i}.jpg" for i in range(n)],
    }).batch(8)


# --- CPUs ---------------------------------------------------------------------------------------


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cpus_follow_the_cgroup_v2_quota_of_the_tightest_ancestor(tmp_path, monkeypatch):
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 64)
    _write(tmp_path / "cgroup.controllers", "cpu memory")
    _write(tmp_path / "kubepods" / "cpu.max", "250000 100000")  # 2.5 CPUs: the pod's limit
    _write(tmp_path / "kubepods" / "pod1" / "cpu.max", "max 100000")
    proc = "0::/kubepods/pod1\n"
    assert cpus.cgroup_cpu_quota(proc, str(tmp_path)) == 2.5
    assert cpus.available_cpus(proc, str(tmp_path)) == 3  # a fractional CPU still runs a thread
    _write(tmp_path / "kubepods" / "cpu.max", "max 100000")
    assert cpus.cgroup_cpu_quota(proc, str(tmp_path)) is None
    assert cpus.available_cpus(proc, str(tmp_path)) == 64


def test_cpus_follow_the_cgroup_v1_quota_and_the_affinity(tmp_path, monkeypatch):
    _write(tmp_path / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "100000")
    _write(tmp_path / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us", "100000")
    _write(tmp_path / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1")
    _write(tmp_path / "cpu,cpuacct" / "cpu.cfs_period_us", "100000")
    proc = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n"
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 16)
    assert cpus.available_cpus(proc, str(tmp_path)) == 1
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 1)
    _write(tmp_path / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us", "400000")
    assert cpus.available_cpus(proc, str(tmp_path)) == 1  # taskset to one CPU beats a quota of 4
    assert cpus.available_cpus("", str(tmp_path)) == 1


def test_cpus_of_this_process_are_at_most_its_affinity():
    import os

    assert 1 <= cpus.available_cpus() <= len(os.sched_getaffinity(0))


# --- the auto choice ------------------------------------------------------------------------------


def test_auto_uses_tflite_above_the_measured_image_counts():
    cached, uncached = tflite_engine.ENGINE_AUTO_MIN_IMAGES_CACHED, tflite_engine.ENGINE_AUTO_MIN_IMAGES_UNCACHED
    assert tflite_engine.choose_engine("auto", cached - 1, cached=True)[0] == "tf"
    assert tflite_engine.choose_engine("auto", cached, cached=True)[0] == "tflite"
    assert tflite_engine.choose_engine("auto", uncached - 1, cached=False)[0] == "tf"
    assert tflite_engine.choose_engine("auto", uncached, cached=False)[0] == "tflite"
    assert tflite_engine.choose_engine("auto", None, cached=False)[0] == "tflite"
    assert tflite_engine.choose_engine("tf", 10**6, cached=True)[0] == "tf"
    assert tflite_engine.choose_engine("tflite", 1, cached=False)[0] == "tflite"
    with pytest.raises(ValueError, match="unknown embedding engine"):
        tflite_engine.choose_engine("onnx", 1, cached=True)


# --- the cache -------------------------------------------------------------------------------------


def test_cache_key_covers_backbone_size_and_weights(extractor):
    key = tflite_engine.cache_key("efficientnet_lite0", SIZE, extractor)
    assert key == tflite_engine.cache_key("efficientnet_lite0", SIZE, extractor)
    assert key != tflite_engine.cache_key("efficientnet_lite0", SIZE + 32, extractor)
    assert key != tflite_engine.cache_key("mobilenet_v2", SIZE, extractor)
    other = model.build_feature_extractor(backbones.build_backbone("efficientnet_lite0", SIZE, weights=None))
    assert key != tflite_engine.cache_key("efficientnet_lite0", SIZE, other)


def test_a_cached_conversion_is_read_not_converted_again(extractor, tmp_path):
    calls = []

    def convert(m, size):
        calls.append(size)
        return b"converted model bytes"

    first = tflite_engine.load_or_convert(extractor, "efficientnet_lite0", SIZE, str(tmp_path), convert)
    second = tflite_engine.load_or_convert(extractor, "efficientnet_lite0", SIZE, str(tmp_path), convert)
    assert calls == [SIZE] and not first.cache_hit and second.cache_hit
    assert second.model == b"converted model bytes" and first.path == second.path
    assert [p.name for p in tmp_path.iterdir()] == [first.path.rsplit("/", 1)[1]]  # no temp file left


# --- TFLite against TF -----------------------------------------------------------------------------


def test_tflite_embeddings_match_tf_within_the_tolerance(extractor, converted):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(6, SIZE, SIZE, 3)).astype(np.float32)
    expected = tf_embedder(extractor)(tf.constant(images))
    got = tflite_engine.TFLiteEmbedder(converted[1].model, num_threads=1)(images)
    check = tflite_engine.compare_embeddings(expected, got)
    assert check.passed, check
    assert check.max_abs_diff < check.tolerance / 10  # measured ~1e-5 against a tolerance of ~5e-3


def test_the_engine_embeds_like_tf_and_records_the_check(extractor, converted, dataset, caplog):
    cache, _ = converted
    tf_path = tf_embedder(extractor)
    embedder, report = tflite_engine.select_embedder(
        "tflite", extractor, tf_path, "efficientnet_lite0", SIZE, None, cache_dir=cache
    )
    with caplog.at_level(logging.INFO, logger=tflite_engine.__name__):
        lite = embed(embedder, dataset, SIZE)
    reference = embed(extractor, dataset, SIZE)
    assert report.used == "tflite" and report.cache_hit and report.check.passed and report.check.images == 8
    assert report.threads == cpus.available_cpus()
    assert np.abs(lite.embeddings - reference.embeddings).max() <= report.check.tolerance
    np.testing.assert_array_equal(lite.labels, reference.labels)
    assert any("embedding check on 8 images" in r.getMessage() and "passed" in r.getMessage() for r in caplog.records)


def test_auto_falls_back_to_tf_when_the_conversion_fails(extractor, dataset, tmp_path, caplog):
    def failing_convert(m, size):
        raise RuntimeError("'tfl.some_op' op is neither a custom op nor a flex op\nmore detail")

    tf_path = tf_embedder(extractor)
    with caplog.at_level(logging.WARNING, logger=tflite_engine.__name__):
        embedder, report = tflite_engine.select_embedder(
            "auto", extractor, tf_path, "efficientnet_lite0", SIZE, 10**6, cache_dir=str(tmp_path),
            convert=failing_convert,
        )
    assert embedder is tf_path and report.used == "tf" and "conversion of efficientnet_lite0 failed" in report.fallback
    assert "neither a custom op" in report.fallback and "more detail" not in report.fallback
    assert any("embedding with TensorFlow instead" in r.getMessage() for r in caplog.records)
    assert embed(embedder, dataset, SIZE).embeddings.shape == (20, 1280)
    with pytest.raises(RuntimeError, match="neither a custom op"):  # asked for tflite: no silent fallback
        tflite_engine.select_embedder(
            "tflite", extractor, tf_path, "efficientnet_lite0", SIZE, 10**6, cache_dir=str(tmp_path),
            convert=failing_convert,
        )


def test_a_failed_check_falls_back_to_tf_in_auto_and_stops_tflite(extractor, dataset):
    tf_path = tf_embedder(extractor)

    def wrong(images):  # a broken conversion: e.g. a lost normalization
        return tf_path(tf.constant(images)) + 0.5

    report = tflite_engine.EngineReport("auto", "tflite", "test")
    auto = tflite_engine.CheckedEmbedder(tf_path, {2: wrong}, report, strict=False)
    embedded = embed(auto, dataset, SIZE)
    np.testing.assert_allclose(embedded.embeddings, embed(extractor, dataset, SIZE).embeddings, atol=1e-6)
    assert report.used == "tf" and not report.check.passed and "differ from TensorFlow's" in report.fallback
    report = tflite_engine.EngineReport("tflite", "tflite", "t")
    strict = tflite_engine.CheckedEmbedder(tf_path, {2: wrong}, report, strict=True)
    with pytest.raises(RuntimeError, match="refuses them"):
        embed(strict, dataset, SIZE)


def test_auto_keeps_the_fastest_of_tf_and_each_thread_count(extractor, dataset, caplog):
    import time

    tf_path = tf_embedder(extractor)
    known = {}
    for batch in dataset:
        images = data.decode_images(batch[labels.IMAGE_KEY], SIZE)
        known[float(images.numpy().sum())] = tf_path(images)

    def fast(pixels):  # right answers, at once
        return known[float(pixels.sum())]

    def slow(pixels):  # right answers, slower than TensorFlow
        time.sleep(1.0)
        return known[float(pixels.sum())]

    report = tflite_engine.EngineReport("auto", "tflite", "test", threads=2)
    with caplog.at_level(logging.INFO, logger=tflite_engine.__name__):
        embed(tflite_engine.CheckedEmbedder(tf_path, {2: slow, 1: fast}, report, strict=False), dataset, SIZE)
    assert report.used == "tflite" and report.threads == 1 and not report.fallback
    assert set(report.probe) == {"tf", "tflite_2_threads", "tflite_1_threads"}
    assert report.probe["tflite_2_threads"] > 100  # ms per image: the sleeping one
    assert any("TFLite with 1 thread(s)" in r.getMessage() for r in caplog.records)

    report = tflite_engine.EngineReport("auto", "tflite", "test", threads=2)
    embedded = embed(tflite_engine.CheckedEmbedder(tf_path, {2: slow}, report, strict=False), dataset, SIZE)
    assert report.used == "tf" and "not faster than TensorFlow" in report.fallback
    assert embedded.embeddings.shape == (20, 1280)


@pytest.mark.slow
def test_imagenet_lite0_embeddings_at_128px_match_tf(tmp_path):
    """The one backbone with ImageNet weights offline, at the default size, on real-looking pixels."""
    train.skip_autograph_for_tf_keras()
    ext = model.build_feature_extractor(model.freeze(backbones.build_backbone("efficientnet_lite0", 128)))
    converted = tflite_engine.load_or_convert(ext, "efficientnet_lite0", 128, str(tmp_path))
    rng = np.random.default_rng(1)
    images = tf.image.resize(rng.uniform(0, 255, size=(32, 16, 16, 3)).astype(np.float32), [128, 128]).numpy()
    check = tflite_engine.compare_embeddings(
        tf_embedder(ext)(tf.constant(images)), tflite_engine.TFLiteEmbedder(converted.model)(images)
    )
    assert check.passed and check.max_abs_diff < 1e-4, check


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0", "resnet50", "vgg16"])
def test_keras_backbones_convert_and_match_tf_with_random_weights(name, tmp_path):
    """No ImageNet files offline for these: random weights check the conversion (ops, layout) instead."""
    train.skip_autograph_for_tf_keras()
    ext = model.build_feature_extractor(model.freeze(backbones.build_backbone(name, 32, weights=None)))
    converted = tflite_engine.load_or_convert(ext, name, 32, str(tmp_path))
    images = np.random.default_rng(2).uniform(0, 255, size=(4, 32, 32, 3)).astype(np.float32)
    check = tflite_engine.compare_embeddings(
        tf_embedder(ext)(tf.constant(images)), tflite_engine.TFLiteEmbedder(converted.model)(images)
    )
    assert check.passed, check


# --- flags and pipeline ----------------------------------------------------------------------------


def test_config_choices_are_the_modules_choices():
    from components.trainer import config, tflite_export

    assert config.EMBEDDING_ENGINES == tflite_engine.ENGINES
    assert config.TFLITE_EXPORTS == tflite_export.EXPORT_MODES


def test_tflite_flags_reach_the_trainer_and_add_the_tflite_evaluator(tmp_path):
    import argparse
    import json

    from pipeline import cli
    from pipeline import pipeline as pipeline_def

    parser = argparse.ArgumentParser()
    cli.add_pipeline_flags(parser)

    def build(argv):
        config = cli.config_from_args(parser.parse_args(argv), str(tmp_path), str(tmp_path / "r"), str(tmp_path), None)
        return config, {c.id: c for c in pipeline_def.create_pipeline(config).components}

    config, components = build([])
    assert (config.trainer.embedding_engine, config.trainer.export_tflite, config.max_tflite_auc_drop) == (
        "auto", "none", 0.01)
    assert pipeline_def.TFLITE_EVALUATOR not in components
    config, components = build("--embedding-engine tf --export-tflite int8 --max-tflite-auc-drop 0.005 "
                               "--tflite-cache-dir /c".split())
    custom = components[pipeline_def.TRAINER].exec_properties["custom_config"]
    custom = json.loads(custom) if isinstance(custom, str) else custom
    assert {k: custom[k] for k in ("embedding_engine", "export_tflite", "tflite_cache_dir")} == {
        "embedding_engine": "tf", "export_tflite": "int8", "tflite_cache_dir": "/c"}
    assert pipeline_def.TFLITE_EVALUATOR in components
    gate = components[pipeline_def.EVALUATION_GATE]
    assert gate.exec_properties["max_tflite_auc_drop"] == 0.005
    assert "tflite_evaluation" in gate.inputs
    with pytest.raises(SystemExit):
        parser.parse_args(["--export-tflite", "fp16"])
    with pytest.raises(ValueError, match="max TFLite AUC drop"):
        build(["--max-tflite-auc-drop", "2"])
