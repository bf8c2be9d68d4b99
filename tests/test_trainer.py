"""Model building, freezing, head training on real images, fine-tuning, and the exported signatures."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.base import labels
from components.trainer import backbones, export, model, train
from components.trainer.batches import batch_indices, image_batches
from components.trainer.config import TrainerConfig
from components.trainer.embeddings import embed
from components.trainer.losses import WeightedBinaryCrossentropy, positive_weights

IMAGE_SIZE = 64
N_LABELS = len(labels.LABEL_NAMES)


def _jpeg(rng: np.random.Generator, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    pixels = rng.integers(0, 255, size=(48, 40, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


@pytest.fixture(scope="module")
def parts():
    train.skip_autograph_for_tf_keras()
    backbone = model.freeze(backbones.build_backbone("efficientnet_lite0", IMAGE_SIZE))
    extractor = model.build_feature_extractor(backbone)
    head = model.build_head(extractor.output_shape[-1], N_LABELS, hidden_units=16, dropout=0.1)
    return backbone, extractor, head


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(0)
    n = 24
    images = [_jpeg(rng) for _ in range(n)]
    y = rng.integers(0, 2, size=(n, N_LABELS)).astype(np.float32)
    names = [f"img_{i}.jpg" for i in range(n)]
    ds = tf.data.Dataset.from_tensor_slices(
        {labels.IMAGE_KEY: images, labels.LABELS_KEY: y, labels.FILENAME_KEY: names}
    ).batch(8)
    return ds, y


def _weights(m):
    return [w.numpy().copy() for w in m.weights]


def test_full_model_has_only_head_trainable(parts):
    backbone, extractor, head = parts
    full = model.build_model(extractor, head)
    assert backbone.trainable_weights == []
    assert len(full.trainable_weights) == len(head.trainable_weights) == 4
    assert full.output_shape == (None, N_LABELS)
    assert full.layers[-1].layers[-1].activation.__name__ == "sigmoid"


def test_backbone_weights_unchanged_by_training(parts, dataset):
    """Trains the whole model end to end (the plain way): the frozen backbone must not move."""
    backbone, extractor, head = parts
    full = model.build_model(extractor, head)
    before_backbone, before_head = _weights(backbone), _weights(head)
    ds, _ = dataset
    from components.trainer.data import decode_images

    images = ds.map(lambda b: (decode_images(b[labels.IMAGE_KEY], IMAGE_SIZE), b[labels.LABELS_KEY]))
    import tf_keras

    full.compile(optimizer=tf_keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    full.fit(images, epochs=1, verbose=0)
    after_backbone, after_head = _weights(backbone), _weights(head)
    assert all(
        np.array_equal(a, b) for a, b in zip(before_backbone, after_backbone, strict=True)
    )  # incl. BN moving stats
    assert not all(np.array_equal(a, b) for a, b in zip(before_head, after_head, strict=True))


def test_embed_once_then_train_head(parts, dataset):
    backbone, extractor, head = parts
    ds, y = dataset
    embedded = embed(extractor, ds, IMAGE_SIZE)
    assert embedded.embeddings.shape == (len(y), extractor.output_shape[-1])
    np.testing.assert_array_equal(embedded.labels, y)
    before = _weights(backbone)
    history = train.train_head(head, embedded, None, TrainerConfig(epochs=3, batch_size=8))
    assert len(history.history["loss"]) == 3
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not any(k.startswith("auc_") for k in history.history)  # no per-batch AUC on training batches
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(backbone), strict=True))


def test_validation_mask_is_stable():
    names = np.array([f"{i}_0_0_x.jpg" for i in range(200)])
    mask = train.validation_mask(names, 10)
    np.testing.assert_array_equal(mask, train.validation_mask(names, 10))
    assert 5 <= mask.sum() <= 40


def test_export_signatures(parts, tmp_path):
    _, extractor, head = parts
    full = model.build_model(extractor, head)
    export_dir = export.export_model(full, str(tmp_path / "model"), IMAGE_SIZE)
    loaded = tf.saved_model.load(export_dir)
    rng = np.random.default_rng(1)
    batch = [_jpeg(rng), _jpeg(rng, "PNG"), _jpeg(rng, "PNG", "L"), _jpeg(rng, "PNG", "RGBA")]

    out = loaded.signatures[export.IMAGES_SIGNATURE](image_bytes=tf.constant(batch))
    assert set(labels.LABEL_NAMES) <= set(out)
    probs = out[labels.PROBABILITIES_KEY].numpy()
    assert probs.shape == (4, N_LABELS)
    assert ((probs > 0) & (probs < 1)).all()
    for i, name in enumerate(labels.LABEL_NAMES):
        np.testing.assert_allclose(out[name].numpy(), probs[:, i])
    # Same numbers as the Keras model on the same decoded pixels.
    from components.trainer.data import decode_images

    np.testing.assert_allclose(full(decode_images(tf.constant(batch), IMAGE_SIZE)).numpy(), probs, atol=1e-5)

    example = tf.train.Example(
        features=tf.train.Features(
            feature={labels.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[batch[0]]))}
        )
    ).SerializeToString()
    served = loaded.signatures[export.SERVING_SIGNATURE](examples=tf.constant([example]))
    np.testing.assert_allclose(served[labels.PROBABILITIES_KEY].numpy()[0], probs[0], atol=1e-5)

    assert [n.decode() for n in loaded.label_names.numpy()] == list(labels.LABEL_NAMES)
    with open(os.path.join(export_dir, "assets.extra", export.LABELS_FILE)) as f:
        assert json.load(f) == {"label_names": list(labels.LABEL_NAMES), "image_size": IMAGE_SIZE}


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="unknown backbone"):
        backbones.build_backbone("alexnet", 64)


# --- embedding cache vs the uncached path, loss, early stopping, spilling, fine-tuning, run wiring ---------


def _decoded(ds):
    from components.trainer.data import decode_images

    images, ys = [], []
    for batch in ds:
        images.append(decode_images(batch[labels.IMAGE_KEY], IMAGE_SIZE).numpy())
        ys.append(batch[labels.LABELS_KEY].numpy())
    return np.concatenate(images), np.concatenate(ys)


def test_cache_gives_the_same_head_training_as_the_uncached_path(parts, dataset):
    """Head on cached embeddings == full model on images (backbone every step), same init and order."""
    import tf_keras

    _, extractor, _ = parts
    ds, y = dataset
    head_cached = model.build_head(extractor.output_shape[-1], N_LABELS, hidden_units=8, dropout=0.0)
    head_plain = model.build_head(extractor.output_shape[-1], N_LABELS, hidden_units=8, dropout=0.0)
    head_plain.set_weights(head_cached.get_weights())
    initial = _weights(head_cached)
    params = TrainerConfig(epochs=3, batch_size=5, learning_rate=1e-2, seed=3, early_stopping_patience=0)

    cached_history = train.train_head(head_cached, embed(extractor, ds, IMAGE_SIZE), None, params)

    images, labels_ = _decoded(ds)
    full = model.build_model(extractor, head_plain)
    train.compile_for_training(full, params.learning_rate, positive_weights(labels_), labels.LABEL_NAMES)
    order = batch_indices(len(y), params.batch_size, params.epochs, params.seed)
    plain_history = full.fit(
        order.map(lambda i: (tf.gather(images, i), tf.gather(labels_, i))),
        epochs=params.epochs,
        steps_per_epoch=int(np.ceil(len(y) / params.batch_size)),
        verbose=0,
    )
    assert isinstance(full.loss, WeightedBinaryCrossentropy)
    assert isinstance(full.optimizer, tf_keras.optimizers.Adam)
    np.testing.assert_allclose(cached_history.history["loss"], plain_history.history["loss"], rtol=1e-4)
    for a, b, w0 in zip(_weights(head_cached), _weights(head_plain), initial, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
        assert not np.allclose(a, w0)  # both actually trained


def test_embeddings_spill_to_a_memory_mapped_file(parts, dataset, tmp_path):
    _, extractor, _ = parts
    ds, y = dataset
    in_memory = embed(extractor, ds, IMAGE_SIZE)
    spilled = embed(extractor, ds, IMAGE_SIZE, memory_limit_bytes=1000, spill_dir=str(tmp_path))
    assert spilled.spilled and not in_memory.spilled
    assert list(tmp_path.iterdir()) == []  # unlinked: nothing left behind
    np.testing.assert_allclose(np.asarray(spilled.embeddings), in_memory.embeddings, atol=1e-6)
    mask = np.arange(len(y)) % 3 == 0
    subset = spilled.take(mask)
    assert subset.embeddings is spilled.embeddings  # a view by row index, not an in-memory copy
    np.testing.assert_allclose(subset.vectors(), in_memory.embeddings[mask], atol=1e-6)
    head = model.build_head(extractor.output_shape[-1], N_LABELS, hidden_units=8, dropout=0.0)
    history = train.train_head(head, spilled.take(~mask), subset, TrainerConfig(epochs=2, batch_size=8))
    assert len(history.history["val_loss"]) == 2


def test_fine_tuning_changes_only_the_unfrozen_top_layers(dataset):
    backbone = model.freeze(backbones.build_backbone("mobilenet_v2", 32, weights=None))
    extractor = model.build_feature_extractor(backbone)
    full = model.build_model(extractor, model.build_head(extractor.output_shape[-1], N_LABELS, 8, 0.0))
    before = {la.name: [w.copy() for w in la.get_weights()] for la in backbone.layers if la.weights}
    names = backbones.unfreeze_top(backbone, 2)
    ds, _ = dataset
    images = image_batches(ds, 32, 8, held_out=False, validation_buckets=1000)
    history = train.fine_tune(full, images, None, np.ones(N_LABELS, np.float32), 1e-2, 0, 1, patience=0)
    assert len(history.history["loss"]) == 1
    for layer in backbone.layers:
        if not layer.weights:
            continue
        same = all(np.array_equal(a, b) for a, b in zip(before[layer.name], layer.get_weights(), strict=True))
        assert same == (layer.name not in names), layer.name


def test_image_batches_split_like_validation_mask(dataset):
    ds, _ = dataset
    names = np.array([f"img_{i}.jpg" for i in range(24)])
    held = train.validation_mask(names, 3)
    assert 0 < held.sum() < len(names)
    counts = [sum(len(y) for _, y in image_batches(ds, 32, 5, flag, 3)) for flag in (True, False)]
    assert counts == [held.sum(), (~held).sum()]


def _write_transformed(path, n, rng):
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(str(path), options) as writer:
        for i in range(n):
            label = (rng.random(N_LABELS) < 0.5).astype(np.float32)
            feature = {
                labels.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[_jpeg(rng)])),
                labels.LABELS_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=label)),
                labels.FILENAME_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"{i}_x.jpg".encode()])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


@pytest.mark.slow
def test_train_and_export_with_fine_tuning(tmp_path):
    """run_fn's typed core on Transform-like files: cache, head, fine-tuning, export, TensorBoard logs."""
    from components.trainer import run

    _write_transformed(tmp_path / "part-0.gz", 40, np.random.default_rng(5))
    spec = {
        labels.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
        labels.LABELS_KEY: tf.io.FixedLenFeature([N_LABELS], tf.float32),
        labels.FILENAME_KEY: tf.io.FixedLenFeature([], tf.string),
    }
    config = TrainerConfig(
        image_size=32, epochs=2, batch_size=8, hidden_units=8, fine_tune_layers=2, fine_tune_epochs=1
    )
    result = run.train_and_export(
        config, str(tmp_path / "part-*.gz"), spec, str(tmp_path / "serving"), str(tmp_path / "run")
    )
    assert result.train_examples + result.validation_examples == 40 and result.validation_examples > 0
    assert result.embedding_dim == 1280 and result.head_epochs == 2 and not result.embeddings_spilled
    assert result.fine_tuned_layers == ("block15_project_conv", "head_conv")  # BatchNorm stays frozen
    assert result.fine_tune_epochs == 1
    assert set(result.seconds) == {"embed", "head", "fine_tune", "export"}
    assert any(name.startswith("events.out") for _, _, files in os.walk(tmp_path / "run") for name in files)
    loaded = tf.saved_model.load(str(tmp_path / "serving"))
    assert [n.decode() for n in loaded.label_names.numpy()] == list(labels.LABEL_NAMES)
    out = loaded.signatures[export.IMAGES_SIGNATURE](image_bytes=tf.constant([_jpeg(np.random.default_rng(9))]))
    assert set(labels.LABEL_NAMES) <= set(out)


def test_trainer_flags_reach_the_trainer_config(tmp_path):
    import argparse

    from pipeline import cli
    from pipeline import pipeline as pipeline_def

    parser = argparse.ArgumentParser()
    cli.add_pipeline_flags(parser)
    args = parser.parse_args(
        "--backbone resnet50 --weights-file /w.h5 --no-class-weighting --early-stopping-patience 5 "
        "--fine-tune-layers 4 --fine-tune-epochs 2".split()
    )
    config = cli.config_from_args(args, str(tmp_path), str(tmp_path / "root"), str(tmp_path / "serving"), None)
    trainer = next(c for c in pipeline_def.create_pipeline(config).components if c.id == pipeline_def.TRAINER)
    custom = trainer.exec_properties["custom_config"]
    custom = json.loads(custom) if isinstance(custom, str) else custom
    expected = {
        "backbone": "resnet50",
        "weights_file": "/w.h5",
        "class_weighting": False,
        "early_stopping_patience": 5,
        "fine_tune_layers": 4,
        "fine_tune_epochs": 2,
    }
    assert {k: custom[k] for k in expected} == expected
    with pytest.raises(ValueError, match="bundled weights"):
        cli.config_from_args(
            parser.parse_args(["--weights-file", "/w.h5"]), str(tmp_path), str(tmp_path), str(tmp_path), None
        )


def test_labels_by_file_name_accept_a_name_found_twice():
    """A span range can hold one relative name in two span folders: two examples, the same labels."""
    from components.trainer.data import with_labels

    batches = tf.data.Dataset.from_tensor_slices({
        labels.FILENAME_KEY: [[b"a.jpg"], [b"b.jpg"], [b"a.jpg"]],
        labels.IMAGE_KEY: [[b"1"], [b"2"], [b"3"]],
    }).batch(3)
    names = np.array(["a.jpg", "b.jpg", "a.jpg"])
    matrix = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
    (batch,) = list(with_labels(batches, names, matrix))
    np.testing.assert_array_equal(batch[labels.LABELS_KEY].numpy(), matrix)
