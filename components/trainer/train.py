"""Training: each image passes the frozen backbone once, the head trains on embeddings.

The backbone is frozen, so its output for an image never changes during training;
computing it once and training the head on the cached embeddings gives the same
result as running the backbone every epoch, at a fraction of the cost.

The cache stays in memory up to a limit (DEFAULT_EMBEDDING_MEMORY_LIMIT: ~52,000 1280-d
embeddings) and spills to a file on local disk beyond it (SpilledEmbeddings). Head training then
reads that file in large chunks through tf.data (one Python call per ~32 MB, never per batch),
in exactly the batches the in-memory path makes, so memory stays bounded whatever the number of
images and the trained head is the same. The optional fine-tuning phase changes the backbone, so
it cannot use the cache: it decodes and runs every image through the backbone every epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import mmap
import os
import tempfile
import threading
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tf_keras

from components.base import labels
from components.trainer import config as trainer_config
from components.trainer import data
from components.trainer.config import TrainerConfig

logger = logging.getLogger(__name__)

# Bytes of embeddings kept in memory before spilling to disk (see trainer_config.DEFAULT_EMBEDDING_MEMORY_MB).
DEFAULT_EMBEDDING_MEMORY_LIMIT = trainer_config.DEFAULT_EMBEDDING_MEMORY_MB << 20
# Rows of a spilled store read per Python call during head training (rounded to whole batches).
SPILLED_CHUNK_BYTES = 32 << 20
DEFAULT_MAX_POSITIVE_WEIGHT = 20.0  # clip of the per-label positive weight n_neg / n_pos (and of its inverse)
VALIDATION_BUCKETS = 10  # 1 of this many training files (by name hash) is held out for validation
_EVAL_BATCH = 256
# Keras' Python loop between graph calls cost nearly as much as the head's steps themselves:
# 10 epochs on 17,098 random embeddings took 30.6 s at one step per call, 17.6 s at 64 (measured).
HEAD_STEPS_PER_EXECUTION = 64


class SpilledEmbeddings:
    """An (N, C) float32 embedding store in an unlinked local file, read by rows.

    Rows are read through a shared read-only mapping whose pages are released after every read
    (madvise DONTNEED): a mapped page counts in the process's resident memory, and after one
    epoch the whole store would; released, they stay in the kernel's page cache only.
    """

    def __init__(self, fd: int, rows: int, dim: int):
        self.shape = (rows, dim)
        self.dtype = np.dtype(np.float32)
        self._map = mmap.mmap(fd, rows * dim * 4, prot=mmap.PROT_READ) if rows else None
        self._lock = threading.Lock()  # tf.data's reader thread and the validation callback share it

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """The given rows, in the given order, as an in-memory array."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), self.shape[1]), np.float32)
        if not len(indices):
            return out
        order = np.argsort(indices, kind="stable")  # one forward sweep through the file
        with self._lock:
            table = np.frombuffer(self._map, np.float32).reshape(self.shape)
            out[order] = table[indices[order]]
            del table  # the mapping can only be advised once no array exports it
            self._map.madvise(mmap.MADV_DONTNEED)
        return out

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        everything = self.rows(np.arange(self.shape[0]))
        return everything if dtype is None else everything.astype(dtype)


@dataclasses.dataclass(frozen=True)
class Embedded:
    """Embeddings of a set of images with their labels.

    A subset made by ``take`` shares the embedding store (which may be on disk) instead of
    copying it: item i of the set is ``embeddings[rows[i]]``.

    Attributes:
      embeddings: float32 (M, C) store: an array in memory, or SpilledEmbeddings.
      labels: float32 (N, L), one row per item.
      filenames: (N,) file names, as str.
      rows: (N,) row of each item in ``embeddings``; None means item i is row i.
    """

    embeddings: np.ndarray | SpilledEmbeddings
    labels: np.ndarray
    filenames: np.ndarray
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def spilled(self) -> bool:
        """Whether the embeddings live in a file rather than in memory."""
        return isinstance(self.embeddings, SpilledEmbeddings)

    def row_indices(self) -> np.ndarray:
        """The row in ``embeddings`` of every item."""
        return np.arange(len(self.labels)) if self.rows is None else self.rows

    def take(self, mask: np.ndarray) -> "Embedded":
        """Returns the items a boolean mask or an index array selects, in that order (sharing the store)."""
        return Embedded(self.embeddings, self.labels[mask], self.filenames[mask], self.row_indices()[mask])

    def vectors(self, items: np.ndarray | None = None) -> np.ndarray:
        """The embeddings of the given items (all when None), as an in-memory array."""
        rows = self.row_indices() if items is None else self.row_indices()[items]
        if isinstance(self.embeddings, SpilledEmbeddings):
            return self.embeddings.rows(rows)
        return np.asarray(self.embeddings[rows], dtype=np.float32)


# Progress of the embedding pass in the run's log: the first batch, then every this many batches.
EMBED_LOG_PREFIX = "embedding pass:"
EMBED_LOG_EVERY = 100


class _EmbeddingWriter:
    """Collects embedding batches in memory, moving them to a file once they exceed a byte limit."""

    def __init__(self, memory_limit_bytes: int, spill_dir: str | None):
        self._limit = memory_limit_bytes
        self._spill_dir = spill_dir
        self._chunks: list[np.ndarray] = []
        self._file = None
        self._path = ""
        self._rows = 0
        self._dim = 0

    def append(self, chunk: np.ndarray) -> None:
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        self._dim = chunk.shape[1]
        if self._file is None and (self._rows + len(chunk)) * self._dim * 4 > self._limit:
            fd, self._path = tempfile.mkstemp(prefix="embeddings-", suffix=".f32", dir=self._spill_dir)
            self._file = os.fdopen(fd, "wb")
            logger.info("embeddings exceed %d bytes: spilling to %s", self._limit, self._path)
            for previous in self._chunks:
                self._file.write(previous.tobytes())
            self._chunks = []
        if self._file is not None:
            self._file.write(chunk.tobytes())
        else:
            self._chunks.append(chunk)
        self._rows += len(chunk)

    def finish(self) -> np.ndarray | SpilledEmbeddings:
        if self._file is None:
            return np.concatenate(self._chunks)
        self._file.close()
        fd = os.open(self._path, os.O_RDONLY)
        try:
            # The mapping keeps the data alive; unlinking now means nothing is left behind on disk.
            os.unlink(self._path)
            return SpilledEmbeddings(fd, self._rows, self._dim)
        finally:
            os.close(fd)


def tf_embedder(feature_extractor: tf_keras.Model) -> Callable[[tf.Tensor], np.ndarray]:
    """The TensorFlow embedding path: images [B, S, S, 3] -> numpy embeddings [B, C] (one traced function)."""

    @tf.function(reduce_retracing=True)
    def _embed(images: tf.Tensor) -> tf.Tensor:
        return feature_extractor(images, training=False)

    return lambda images: _embed(images).numpy()


def embed(
    feature_extractor: tf_keras.Model | Callable[[tf.Tensor], np.ndarray],
    dataset: tf.data.Dataset,
    image_size: int,
    memory_limit_bytes: int = DEFAULT_EMBEDDING_MEMORY_LIMIT,
    spill_dir: str | None = None,
    transform: Callable[[dict[str, tf.Tensor]], dict[str, tf.Tensor]] | None = None,
) -> Embedded:
    """Runs every image of a dataset through the feature extractor once.

    Decoding runs in tf.data (parallel, prefetched) so it overlaps with the backbone.

    Args:
      feature_extractor: images -> embeddings: a Keras model (run by tf_embedder), or a function
        returning numpy embeddings (tflite_engine.select_embedder's).
      dataset: batches of dicts with image_raw ([B] or raw [B, 1]) and filename, and labels
        unless ``transform`` makes them (data.read_examples).
      image_size: the size images are resized to.
      memory_limit_bytes: embeddings beyond this size go to a local file instead of memory.
      spill_dir: local folder for that file (default: the system temp folder).
      transform: raw features -> features with labels and filename
        (tft.TFTransformOutput.transform_raw_features), run as one traced function per batch
        on this thread (well under a second for 19,000 examples).

    Returns:
      The embeddings, labels and file names, in dataset order.

    Raises:
      ValueError: the dataset is empty.
    """
    run = tf_embedder(feature_extractor) if isinstance(feature_extractor, tf_keras.Model) else feature_extractor
    features_of = None if transform is None else tf.function(transform, input_signature=[dataset.element_spec])

    decoded = data.without_autotune(
        dataset.map(
            lambda b: (data.decode_images(tf.reshape(b[labels.IMAGE_KEY], [-1]), image_size), b),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        ).prefetch(2)
    )
    writer = _EmbeddingWriter(memory_limit_bytes, spill_dir)
    label_chunks, names = [], []
    embedded = 0
    for batch, (images, parsed) in enumerate(decoded, start=1):
        writer.append(run(images))
        features = parsed if features_of is None else features_of(parsed)
        label_chunks.append(features[labels.LABELS_KEY].numpy())
        names.append(features[labels.FILENAME_KEY].numpy())
        embedded += len(label_chunks[-1])
        if batch == 1 or batch % EMBED_LOG_EVERY == 0:
            logger.info("%s batch %d, %d images so far", EMBED_LOG_PREFIX, batch, embedded)
    if not label_chunks:
        raise ValueError("no examples to embed")
    return Embedded(
        writer.finish(),
        np.concatenate(label_chunks).astype(np.float32),
        np.array([n.decode() for n in np.concatenate(names)]),
    )


def validation_mask(filenames: np.ndarray, buckets: int) -> np.ndarray:
    """Stable hold-out by file-name hash: True for 1 of ``buckets`` files."""
    hashed = tf.strings.to_hash_bucket_fast(tf.constant(filenames.astype(str)), buckets).numpy()
    return hashed == 0


def positive_weights(label_matrix: np.ndarray, max_weight: float = DEFAULT_MAX_POSITIVE_WEIGHT) -> np.ndarray:
    """Per-label weight of positive examples, n_neg / n_pos, clipped to [1 / max_weight, max_weight].

    With it each label's positives and negatives contribute equally to the loss, so rare labels
    (e.g. race_other, age_60_plus) are not drowned by their negatives. A label without positives
    or without negatives keeps weight 1 (there is nothing to balance).

    Args:
      label_matrix: (N, L) 0/1 training labels.
      max_weight: the clip (> 1).

    Returns:
      float32 (L,) weights.
    """
    positives = label_matrix.sum(axis=0)
    negatives = len(label_matrix) - positives
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((positives > 0) & (negatives > 0), negatives / np.maximum(positives, 1), 1.0)
    return np.clip(ratio, 1.0 / max_weight, max_weight).astype(np.float32)


@tf_keras.utils.register_keras_serializable(package="facepipe")
class WeightedBinaryCrossentropy(tf_keras.losses.Loss):
    """Binary cross-entropy on probabilities with a per-label weight on the positive term.

    loss = mean over labels of -(w_l * y * log(p) + (1 - y) * log(1 - p)); with all w_l = 1 it is
    tf_keras' BinaryCrossentropy on probabilities.
    """

    def __init__(self, positive_weights: list[float] | np.ndarray, name: str = "weighted_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weights = [float(w) for w in np.asarray(positive_weights).ravel()]

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:  # noqa: D102 (Keras API)
        eps = tf_keras.backend.epsilon()
        y_true = tf.cast(y_true, y_pred.dtype)
        p = tf.clip_by_value(y_pred, eps, 1.0 - eps)
        weights = tf.constant(self.positive_weights, dtype=y_pred.dtype)
        terms = weights * y_true * tf.math.log(p + eps) + (1.0 - y_true) * tf.math.log(1.0 - p + eps)
        return -tf.reduce_mean(terms, axis=-1)

    def get_config(self) -> dict:  # noqa: D102 (Keras API)
        return {**super().get_config(), "positive_weights": self.positive_weights}


@tf_keras.utils.register_keras_serializable(package="facepipe")
class LabelAUC(tf_keras.metrics.AUC):
    """ROC AUC of one column of a multi-label output.

    Same value as a multi-label AUC with a one-hot ``label_weights``, at a tenth of the cost for
    ten labels: that one computes the confusion counts of every label and then ignores nine.
    """

    def __init__(self, index: int, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def update_state(self, y_true: tf.Tensor, y_pred: tf.Tensor, sample_weight: tf.Tensor | None = None):  # noqa: D102
        return super().update_state(y_true[:, self.index], y_pred[:, self.index], sample_weight)

    def get_config(self) -> dict:  # noqa: D102 (Keras API)
        return {**super().get_config(), "index": self.index}


def per_label_auc_metrics(label_names: tuple[str, ...]) -> list[tf_keras.metrics.Metric]:
    """One AUC metric per label, named auc_<label>."""
    return [LabelAUC(i, name=f"auc_{name}") for i, name in enumerate(label_names)]


def compile_for_training(
    model: tf_keras.Model,
    learning_rate: float,
    pos_weights: np.ndarray,
    label_names: tuple[str, ...],
    step_metrics: bool = True,
    steps_per_execution: int = 1,
) -> None:
    """Compiles a head or a full model with Adam and weighted BCE.

    Args:
      model: outputs (B, L) probabilities.
      learning_rate: Adam learning rate.
      pos_weights: (L,) positive weights (ones for plain BCE).
      label_names: names for the AUC metrics.
      step_metrics: update per-label AUC metrics on every batch (training and validation).
      steps_per_execution: training steps per graph call (same updates, less per-step overhead).
    """
    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        loss=WeightedBinaryCrossentropy(pos_weights),
        metrics=per_label_auc_metrics(label_names) if step_metrics else None,
        steps_per_execution=steps_per_execution,
    )


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


def _gather(embedded: Embedded, index_batches: tf.data.Dataset, store: tf.Tensor) -> tf.data.Dataset:
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
    """(embeddings, labels) batches of a spilled store, in exactly the batches ``_gather`` makes.

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


def epoch_logger(prefix: str = "epoch") -> tf_keras.callbacks.Callback:
    """Logs every epoch's metrics to the Python logger (the run's log file)."""
    return tf_keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: logger.info(
            "%s %d: %s", prefix, epoch + 1, " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items())
        )
    )


def roc_auc(label_values: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney, ties count half); NaN without positives or negatives."""
    from scipy.stats import rankdata

    positive = label_values > 0.5
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class ValidationAUC(tf_keras.callbacks.Callback):
    """Adds val_auc_<label> to each epoch's logs from one forward pass over the validation set.

    Cheaper than compiled AUC metrics, which update 10 threshold tables on every training batch.
    List it before callbacks that read the logs (loggers, TensorBoard, early stopping).
    """

    def __init__(self, validation: Embedded, label_names: tuple[str, ...], chunk: int = 4096):
        super().__init__()
        self._validation = validation
        self._names = label_names
        self._chunk = chunk

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:  # noqa: D102 (Keras API)
        if logs is None:
            return
        n = len(self._validation)
        # In chunks: a disk-backed embedding store is never loaded whole.
        scores = np.concatenate([
            self.model(self._validation.vectors(np.arange(start, min(start + self._chunk, n))), training=False).numpy()
            for start in range(0, n, self._chunk)
        ])
        for i, name in enumerate(self._names):
            logs[f"val_auc_{name}"] = roc_auc(self._validation.labels[:, i], scores[:, i])


def early_stopping(patience: int) -> list[tf_keras.callbacks.Callback]:
    """Early stopping on validation loss restoring the best weights, or nothing when patience is 0."""
    if patience <= 0:
        return []
    return [tf_keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)]


def train_head(
    head: tf_keras.Model,
    train: Embedded,
    validation: Embedded | None,
    params: TrainerConfig,
    label_names: tuple[str, ...] = labels.LABEL_NAMES,
    callbacks: list[tf_keras.callbacks.Callback] | None = None,
) -> tf_keras.callbacks.History:
    """Trains the head on cached embeddings with (positive-weighted) binary cross-entropy.

    Early stopping on the validation loss (with best weights restored) applies when a
    non-empty validation set is given and params.early_stopping_patience > 0.

    Args:
      head: the model from model.build_head (compiled here).
      train: training embeddings and labels.
      validation: held-out embeddings and labels, or None.
      params: the Trainer's settings: epochs, batch size, learning rate, seed, weighting, patience.
      label_names: names for the per-label AUC metrics.
      callbacks: extra Keras callbacks (e.g. TensorBoard).

    Returns:
      The Keras History (loss; with validation also val_loss and val_auc_<label>; per epoch run).
    """
    tf_keras.utils.set_random_seed(params.seed)
    pos_weights = (
        positive_weights(train.labels) if params.class_weighting else np.ones(train.labels.shape[1], np.float32)
    )
    logger.info("positive weights: %s", dict(zip(label_names, np.round(pos_weights, 3).tolist(), strict=True)))
    compile_for_training(
        head, params.learning_rate, pos_weights, label_names, step_metrics=False,
        steps_per_execution=HEAD_STEPS_PER_EXECUTION,
    )
    if train.spilled:
        train_ds = spilled_batches(train, epoch_orders(len(train), params.epochs, params.seed), params.batch_size)
    else:
        # One in-memory tensor of the whole store, shared by the training and validation views.
        store = tf.constant(train.embeddings)
        train_ds = _gather(train, batch_indices(len(train), params.batch_size, params.epochs, params.seed), store)
    extra = []
    val_ds = None
    if validation is not None and len(validation):
        if validation.spilled:
            val_ds = spilled_batches(validation, np.arange(len(validation))[None], _EVAL_BATCH)
        else:
            shared = store if not train.spilled and validation.embeddings is train.embeddings else None
            shared = tf.constant(validation.embeddings) if shared is None else shared
            val_ds = _gather(validation, tf.data.Dataset.range(len(validation)).batch(_EVAL_BATCH), shared)
        extra = [ValidationAUC(validation, label_names),
                 *early_stopping(params.early_stopping_patience)]
    return head.fit(
        train_ds,
        validation_data=val_ds,
        epochs=params.epochs,
        steps_per_epoch=math.ceil(len(train) / params.batch_size),
        verbose=0,
        callbacks=[*extra, epoch_logger("head epoch"), *(callbacks or [])],  # ValidationAUC fills the logs first
    )


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


def fine_tune(
    full_model: tf_keras.Model,
    train_images: tf.data.Dataset,
    validation_images: tf.data.Dataset | None,
    pos_weights: np.ndarray,
    learning_rate: float,
    initial_epoch: int,
    epochs: int,
    patience: int,
    label_names: tuple[str, ...] = labels.LABEL_NAMES,
    callbacks: list[tf_keras.callbacks.Callback] | None = None,
) -> tf_keras.callbacks.History:
    """Trains the full model (backbone layers already unfrozen by backbones.unfreeze_top) on images.

    Slower than head training by the whole backbone cost per image and epoch: the backbone
    changes, so the embedding cache cannot be used.

    Args:
      full_model: images -> probabilities (model.build_model).
      train_images: (images, labels) batches (image_batches).
      validation_images: held-out batches, or None.
      pos_weights: (L,) positive weights, as in head training.
      learning_rate: Adam learning rate (lower than the head's).
      initial_epoch: epochs already run (so TensorBoard continues the head's curves).
      epochs: fine-tuning epochs.
      patience: early-stopping patience on validation loss (0: off).
      label_names: names for the per-label AUC metrics.
      callbacks: extra Keras callbacks.

    Returns:
      The Keras History of the fine-tuning epochs.
    """
    compile_for_training(full_model, learning_rate, pos_weights, label_names)
    extra = early_stopping(patience) if validation_images is not None else []
    return full_model.fit(
        train_images,
        validation_data=validation_images,
        initial_epoch=initial_epoch,
        epochs=initial_epoch + epochs,
        verbose=0,
        callbacks=[epoch_logger("fine-tune epoch"), *extra, *(callbacks or [])],
    )


def skip_autograph_for_tf_keras() -> None:
    """Stops AutoGraph from converting tf_keras internals (7 s on the first fit under TF 2.16).

    AutoGraph already skips the ``keras`` package but not ``tf_keras``; its code is
    graph-safe, so converting it is wasted work.
    """
    from tensorflow.python.autograph.core import config as autograph_config

    rules = autograph_config.CONVERSION_RULES
    if not any(isinstance(r, autograph_config.DoNotConvert) and r.matches("tf_keras") for r in rules):
        autograph_config.CONVERSION_RULES = (autograph_config.DoNotConvert("tf_keras"), *rules)


def best_epoch_count(history: tf_keras.callbacks.History, patience: int) -> int:
    """Epochs up to the weights early stopping restored (all epochs run when it did not stop or restore)."""
    losses = history.history.get("val_loss")
    if not losses or patience <= 0:
        return len(history.history["loss"])
    return int(np.argmin(losses)) + 1


def out_of_fold_predictions(
    embedded: Embedded,
    build_head: Callable[[str], tf_keras.Model],
    params: TrainerConfig,
    folds: int,
    chunk: int = 4096,
) -> np.ndarray:
    """Predicts every embedded image with a head that did not see it (k-fold head fits).

    The k heads train side by side in one Keras model (one traced graph instead of k: a head fit
    on a few thousand embeddings is mostly tracing), each with the pipeline's recipe (architecture,
    positive weighting, learning rate, seed, ``params.epochs`` epochs, no early stopping, no
    hold-out) on every example outside its own fold: its loss masks its fold out. Folds are a
    seeded permutation of the items, independent of the validation hash.

    Args:
      embedded: every training image's embedding and labels (the hold-out included).
      build_head: name -> a fresh head (embeddings -> probabilities) of that name.
      params: the Trainer's settings; ``epochs`` should be the epochs the final head used.
      folds: k (>= 2).
      chunk: prediction batch (a disk-backed store is never read whole).

    Returns:
      (N, L) float32 out-of-fold probabilities (uncalibrated: the weighted heads' outputs).

    Raises:
      ValueError: fewer than 2 folds or fewer items than folds.
    """
    n, num_labels = embedded.labels.shape
    if folds < 2 or n < folds:
        raise ValueError(f"out-of-fold predictions need >= 2 folds and at least one item per fold ({folds}, {n})")
    tf_keras.utils.set_random_seed(params.seed)
    fold_of = np.random.default_rng([params.seed, 7]).permutation(n) % folds
    heads = [build_head(f"head_fold{fold}") for fold in range(folds)]
    inputs = tf_keras.Input(shape=(embedded.embeddings.shape[1],), name="embeddings")
    stacked = tf_keras.Model(inputs, StackHeads(name="heads")([head(inputs) for head in heads]))
    pos_weights = positive_weights(embedded.labels) if params.class_weighting else np.ones(num_labels, np.float32)
    stacked.compile(optimizer=tf_keras.optimizers.Adam(params.learning_rate),
                    loss=FoldMaskedBinaryCrossentropy(pos_weights, num_labels),
                    steps_per_execution=HEAD_STEPS_PER_EXECUTION)
    # Targets: the labels, then a one-hot of the item's fold (the loss masks that head out).
    targets = Embedded(embedded.embeddings, np.concatenate(
        [embedded.labels, np.eye(folds, dtype=np.float32)[fold_of]], axis=1), embedded.filenames, embedded.rows)
    if embedded.spilled:
        batches = spilled_batches(targets, epoch_orders(n, params.epochs, params.seed + 1), params.batch_size)
    else:
        batches = _gather(targets, batch_indices(n, params.batch_size, params.epochs, params.seed + 1),
                          tf.constant(embedded.embeddings))
    stacked.fit(
        batches,
        epochs=params.epochs, steps_per_epoch=math.ceil(n / params.batch_size), verbose=0,
        callbacks=[epoch_logger("out-of-fold heads epoch")],
    )
    predictions = np.zeros((n, num_labels), dtype=np.float32)
    for start in range(0, n, chunk):
        items = np.arange(start, min(start + chunk, n))
        out = stacked(embedded.vectors(items), training=False).numpy()  # (batch, folds, labels)
        predictions[items] = out[np.arange(len(items)), fold_of[items]]
    logger.info("out-of-fold predictions: %d items, %d folds, %d epochs", n, folds, params.epochs)
    return predictions


@tf_keras.utils.register_keras_serializable(package="facepipe")
class StackHeads(tf_keras.layers.Layer):
    """Stacks k heads' (B, L) outputs into (B, k, L)."""

    def call(self, inputs):  # noqa: D102 (Keras API)
        return tf.stack(inputs, axis=1)


@tf_keras.utils.register_keras_serializable(package="facepipe")
class FoldMaskedBinaryCrossentropy(tf_keras.losses.Loss):
    """WeightedBinaryCrossentropy of k stacked heads, each over the examples outside its own fold.

    y_true: (B, L + k): the labels, then a one-hot of the example's fold. y_pred: (B, k, L).
    """

    def __init__(self, positive_weights: list[float] | np.ndarray, num_labels: int,
                 name: str = "fold_masked_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weights = [float(w) for w in np.asarray(positive_weights).ravel()]
        self.num_labels = int(num_labels)

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:  # noqa: D102 (Keras API)
        eps = tf_keras.backend.epsilon()
        y_true = tf.cast(y_true, y_pred.dtype)
        labels_, in_fold = y_true[:, : self.num_labels], y_true[:, self.num_labels :]
        p = tf.clip_by_value(y_pred, eps, 1.0 - eps)
        y = labels_[:, tf.newaxis, :]
        weights = tf.constant(self.positive_weights, dtype=y_pred.dtype)
        terms = weights * y * tf.math.log(p + eps) + (1.0 - y) * tf.math.log(1.0 - p + eps)
        per_head = -tf.reduce_mean(terms, axis=-1)  # (B, k)
        trains = 1.0 - in_fold  # head j learns from the examples outside fold j
        return tf.reduce_sum(per_head * trains, axis=-1) / tf.maximum(tf.reduce_sum(trains, axis=-1), 1.0)

    def get_config(self) -> dict:  # noqa: D102 (Keras API)
        return {**super().get_config(), "positive_weights": self.positive_weights, "num_labels": self.num_labels}
