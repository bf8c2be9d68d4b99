"""Head training on cached embeddings: seeded batches, early stopping, and a spilled store equal to memory."""

import numpy as np
import tensorflow as tf

from components.base import labels
from components.trainer import model, train
from components.trainer.batches import batch_indices, epoch_orders, gather_batches, spilled_batches
from components.trainer.config import TrainerConfig
from components.trainer.embeddings import Embedded, _EmbeddingWriter

N_LABELS = len(labels.LABEL_NAMES)


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
