"""Training batches: seeded epoch orders, embedding batches (in memory or spilled), image batches.

The in-memory and the spilled path make exactly the same batches in the same order, so the trained
head is the same either way: the spilled path reads its file in large chunks through tf.data (one
Python call per ~32 MB, never per batch). Image batches are for fine-tuning, which changes the
backbone and so cannot use the embedding cache: it decodes every image every epoch.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from components.base import labels
from components.trainer import data
from components.trainer.embeddings import Embedded

# Rows of a spilled store read per Python call during head training (rounded to whole batches).
SPILLED_CHUNK_BYTES = 32 << 20


def epoch_orders(n: int, epochs: int, seed: int) -> np.ndarray:
    """The item order of every epoch: a seeded permutation of range(n) per epoch, (epochs, n).

    Computed with numpy from (seed, epoch), so the order is the same in every process and for
    the cached, uncached, in-memory and spilled paths.
    """
    return np.stack([np.random.default_rng([seed, epoch]).permutation(n) for epoch in range(epochs)])


def batch_indices(n: int, batch_size: int, epochs: int, seed: int) -> tf.data.Dataset:
    """Index batches for ``epochs`` epochs in the orders of epoch_orders.

    Batches never cross an epoch boundary. Use with ``steps_per_epoch = ceil(n / batch_size)``.

    Args:
      n: number of items.
      batch_size: batch size.
      epochs: number of epochs.
      seed: the shuffling seed.

    Returns:
      A dataset of int64 index vectors.
    """
    return tf.data.Dataset.from_tensor_slices(epoch_orders(n, epochs, seed)).flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
    )


def gather_batches(embedded: Embedded, index_batches: tf.data.Dataset, store: tf.Tensor) -> tf.data.Dataset:
    """(embeddings, labels) batches for index batches, gathered inside tf.data from an in-memory store.

    Args:
      embedded: the items.
      index_batches: item index vectors (batch_indices).
      store: ``embedded.embeddings`` as one tensor (shared by the training and validation views).
    """
    rows = tf.constant(embedded.row_indices())
    label_values = tf.constant(embedded.labels)
    return data.without_autotune(
        index_batches.map(
            lambda items: (tf.gather(store, tf.gather(rows, items)), tf.gather(label_values, items))
        ).prefetch(tf.data.AUTOTUNE)
    )


def spilled_batches(
    embedded: Embedded, orders: np.ndarray, batch_size: int, chunk_bytes: int = SPILLED_CHUNK_BYTES
) -> tf.data.Dataset:
    """(embeddings, labels) batches of a spilled store, in exactly the batches ``gather_batches`` makes.

    Each epoch's order is cut into chunks of whole batches (~chunk_bytes of embeddings); one
    Python call reads a chunk's rows from the file (SpilledEmbeddings.rows, one forward sweep),
    and tf.data cuts it into batches and reads the next chunk while the head trains on this one.
    Per batch, nothing runs in Python.

    Args:
      embedded: items whose embeddings are spilled.
      orders: (epochs, n) item orders (epoch_orders, or one epoch of range(n)).
      batch_size: batch size; batches never cross an epoch boundary.
      chunk_bytes: embedding bytes read per Python call (rounded down to whole batches, at least one).

    Returns:
      A dataset of (float32 [B, C], float32 [B, L]).
    """
    epochs, n = orders.shape
    dim, num_labels = embedded.embeddings.shape[1], embedded.labels.shape[1]
    rows_per_chunk = max(1, chunk_bytes // (dim * 4) // batch_size) * batch_size
    chunks_per_epoch = max(1, math.ceil(n / rows_per_chunk))
    item_rows, label_values = embedded.row_indices(), embedded.labels

    def read(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        epoch, chunk = divmod(int(index), chunks_per_epoch)
        items = orders[epoch, chunk * rows_per_chunk : (chunk + 1) * rows_per_chunk]
        return embedded.embeddings.rows(item_rows[items]), label_values[items]

    def cut(x: tf.Tensor, y: tf.Tensor) -> tf.data.Dataset:
        full = tf.shape(x)[0] // batch_size * batch_size
        whole = tf.data.Dataset.from_tensor_slices((
            tf.reshape(x[:full], [-1, batch_size, dim]),
            tf.reshape(y[:full], [-1, batch_size, num_labels]),
        ))
        rest = tf.data.Dataset.from_tensors((x[full:], y[full:])).filter(lambda a, _: tf.shape(a)[0] > 0)
        return whole.concatenate(rest)

    def load(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = tf.numpy_function(read, [index], (tf.float32, tf.float32), stateful=False)
        x.set_shape([None, dim])
        y.set_shape([None, num_labels])
        return x, y

    batches = tf.data.Dataset.range(epochs * chunks_per_epoch).map(load).prefetch(1).flat_map(cut).prefetch(2)
    # flat_map hides the length, which Keras needs for validation data with steps_per_execution > 1.
    batches = batches.apply(tf.data.experimental.assert_cardinality(epochs * math.ceil(n / batch_size)))
    return data.without_autotune(batches)

def image_batches(
    dataset: tf.data.Dataset,
    image_size: int,
    batch_size: int,
    held_out: bool,
    validation_buckets: int,
    shuffle_buffer: int = 0,
    seed: int = 0,
) -> tf.data.Dataset:
    """(images, labels) batches of the training or the held-out files, decoded on every pass.

    The split is the one validation_mask makes (file-name hash), so fine-tuning validates on the
    same files as head training.

    Args:
      dataset: batches of dicts with image_raw [B], labels and filename [B] (data.with_labels
        over the raw examples, or data.read_examples of examples that hold the labels).
      image_size: the size images are resized to.
      batch_size: output batch size.
      held_out: True for the held-out files, False for the rest.
      validation_buckets: 1 of this many files is held out.
      shuffle_buffer: shuffle buffer size (0: keep file order).
      seed: shuffle seed.

    Returns:
      A dataset of (float32 images 0-255, labels).
    """
    examples = dataset.unbatch().filter(
        lambda x: tf.equal(tf.strings.to_hash_bucket_fast(x[labels.FILENAME_KEY], validation_buckets) == 0, held_out)
    )
    if shuffle_buffer:
        examples = examples.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return data.without_autotune(
        examples.batch(batch_size)
        .map(
            lambda b: (data.decode_images(b[labels.IMAGE_KEY], image_size), b[labels.LABELS_KEY]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )
