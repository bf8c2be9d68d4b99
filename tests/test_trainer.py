"""Model building, freezing, head training on cached embeddings, and the exported signatures."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from components.base import labels
from components.trainer import backbones, export, model, train
from components.trainer.batches import batch_indices, epoch_orders, gather_batches, image_batches, spilled_batches
from components.trainer.config import TrainerConfig
from components.trainer.embeddings import Embedded, _EmbeddingWriter, embed
from components.trainer.losses import WeightedBinaryCrossentropy, positive_weights
from components.trainer.metrics import LabelAUC, roc_auc

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


def test_batch_indices_are_seeded_permutations_per_epoch():
    def epochs_of(seed):
        batches = [b.numpy() for b in batch_indices(10, 4, 3, seed)]
        assert [len(b) for b in batches] == [4, 4, 2] * 3  # no batch crosses an epoch
        return [np.concatenate(batches[i : i + 3]) for i in (0, 3, 6)]

    first = epochs_of(1)
    assert all(sorted(e) == list(range(10)) for e in first)
    assert not np.array_equal(first[0], first[1])
    np.testing.assert_array_equal(np.stack(first), np.stack(epochs_of(1)))
    assert not np.array_equal(np.stack(first), np.stack(epochs_of(2)))


def test_positive_weights_balance_each_label():
    y = np.array([[1, 0, 1, 0], [0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 1, 1]], np.float32)
    # label 0: 1 pos / 3 neg -> 3; label 1: no positives -> 1; label 2: all positive -> 1; label 3: 2/2 -> 1
    np.testing.assert_allclose(positive_weights(y), [3.0, 1.0, 1.0, 1.0])
    many = np.zeros((100, 2), np.float32)
    many[:1, 0] = 1  # 1 positive in 100 -> 99, clipped
    many[:99, 1] = 1  # 99 positives in 100 -> 1/99, clipped
    np.testing.assert_allclose(positive_weights(many, max_weight=20.0), [20.0, 1 / 20.0], rtol=1e-6)


def test_weighted_bce_matches_keras_bce_and_weights_positives():
    import tf_keras

    y = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    p = tf.constant([[0.8, 0.3], [0.4, 0.9]])
    plain = WeightedBinaryCrossentropy([1.0, 1.0])(y, p).numpy()
    np.testing.assert_allclose(plain, tf_keras.losses.BinaryCrossentropy()(y, p).numpy(), rtol=1e-5)
    weighted = WeightedBinaryCrossentropy([3.0, 0.5])(y, p).numpy()
    by_hand = np.mean([-(3 * np.log(0.8) + np.log(0.7)) / 2, -(np.log(0.6) + 0.5 * np.log(0.9)) / 2])
    np.testing.assert_allclose(weighted, by_hand, rtol=1e-5)


def _random_embedded(n, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = (x[:, :N_LABELS] > 0).astype(np.float32)  # learnable labels
    return Embedded(x, y, np.array([f"f{i}.jpg" for i in range(n)]))


def test_early_stopping_on_validation_loss_restores_the_best_weights():
    data = _random_embedded(64)
    # The validation labels are the training labels flipped: fitting the training set makes the
    # validation loss rise from the first epoch on.
    flipped = Embedded(data.embeddings, 1.0 - data.labels, data.filenames)
    head = model.build_head(16, N_LABELS, hidden_units=8, dropout=0.0)
    params = TrainerConfig(
        epochs=20, batch_size=16, learning_rate=3e-2, class_weighting=False, early_stopping_patience=2
    )
    history = train.train_head(head, data, flipped, params)
    val_losses = history.history["val_loss"]
    assert len(val_losses) < params.epochs  # stopped early
    # Per-label validation AUC every epoch; the flipped labels make it worse than chance.
    aucs = [history.history[f"val_auc_{n}"] for n in labels.LABEL_NAMES[:N_LABELS]]
    assert all(len(a) == len(val_losses) for a in aucs)
    assert np.mean([a[-1] for a in aucs]) < 0.5
    best = int(np.argmin(val_losses))
    assert len(val_losses) == best + 1 + params.early_stopping_patience
    restored = head.evaluate(flipped.embeddings, flipped.labels, verbose=0, return_dict=True)["loss"]
    np.testing.assert_allclose(restored, val_losses[best], rtol=1e-4)


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


def _spilled_copy(data: "Embedded", tmp_path) -> "Embedded":
    """The same items with their store written to a file (as embed spills it)."""
    writer = _EmbeddingWriter(memory_limit_bytes=0, spill_dir=str(tmp_path))
    writer.append(data.embeddings)
    spilled = Embedded(writer.finish(), data.labels, data.filenames, data.rows)
    assert spilled.spilled and list(tmp_path.iterdir()) == []
    return spilled


def test_spilled_batches_are_the_in_memory_batches(tmp_path):
    data = _random_embedded(50).take(np.arange(49, -1, -1))  # a view in another order, as after a sort
    spilled = _spilled_copy(Embedded(data.embeddings, data.labels, data.filenames, data.rows), tmp_path)
    batch_size, epochs, seed = 8, 3, 5
    expected = list(gather_batches(data, batch_indices(50, batch_size, epochs, seed),
                                  tf.constant(data.embeddings)))
    # 2 batches per chunk: 4 chunks per epoch, the last one holding a partial batch of 2.
    chunk_bytes = 2 * batch_size * 16 * 4
    got = list(spilled_batches(spilled, epoch_orders(50, epochs, seed), batch_size, chunk_bytes))
    assert [len(x) for x, _ in got] == [8, 8, 8, 8, 8, 8, 2] * epochs
    for (x, y), (ex, ey) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(x.numpy(), ex.numpy())
        np.testing.assert_array_equal(y.numpy(), ey.numpy())


def test_head_trained_on_a_spilled_store_equals_the_in_memory_one(tmp_path):
    data = _random_embedded(120, seed=4)
    held_out = np.arange(120) % 5 == 0
    spilled = _spilled_copy(data, tmp_path)
    params = TrainerConfig(epochs=3, batch_size=16, early_stopping_patience=2)
    heads = [model.build_head(16, N_LABELS, hidden_units=8, dropout=0.0) for _ in range(2)]
    heads[1].set_weights(heads[0].get_weights())
    histories = []
    for head, store in zip(heads, (data, spilled), strict=True):
        histories.append(train.train_head(head, store.take(~held_out), store.take(held_out), params).history)
    assert histories[0].keys() == histories[1].keys()
    for key, values in histories[0].items():
        np.testing.assert_allclose(histories[1][key], values, rtol=1e-6, err_msg=key)
    for a, b in zip(heads[0].get_weights(), heads[1].get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_spilled_rows_come_back_in_the_order_asked(tmp_path):
    data = _random_embedded(30)
    store = _spilled_copy(data, tmp_path).embeddings
    wanted = np.array([29, 0, 7, 7, 3])
    np.testing.assert_array_equal(store.rows(wanted), data.embeddings[wanted])
    assert store.rows(np.array([], np.int64)).shape == (0, 16)
    np.testing.assert_array_equal(np.asarray(store), data.embeddings)


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


def test_label_auc_equals_the_one_hot_weighted_multi_label_auc():
    import tf_keras

    rng = np.random.default_rng(4)
    y = (rng.random((200, N_LABELS)) < 0.3).astype(np.float32)
    p = np.clip(y * 0.3 + rng.random((200, N_LABELS)) * 0.7, 0, 1).astype(np.float32)
    for i in (0, 5, N_LABELS - 1):
        reference = tf_keras.metrics.AUC(multi_label=True, num_labels=N_LABELS, label_weights=np.eye(N_LABELS)[i])
        reference.update_state(y, p)
        ours = LabelAUC(i)
        ours.update_state(y, p)
        np.testing.assert_allclose(ours.result().numpy(), reference.result().numpy(), rtol=1e-6)


def test_roc_auc_matches_sklearn_with_ties_and_single_class():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(np.float32)
    scores = np.round(rng.random(300) * 0.5 + 0.4 * y, 2)  # rounded: many ties
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    assert np.isnan(roc_auc(np.zeros(5), np.arange(5.0)))


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
