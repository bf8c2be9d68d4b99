"""Training: each image passes the frozen backbone once, the head trains on embeddings.

The backbone is frozen, so its output for an image never changes during training;
computing it once and training the head on the cached embeddings gives the same
result as running the backbone every epoch, at a fraction of the cost.

The cache stays in memory up to a limit (DEFAULT_EMBEDDING_MEMORY_LIMIT: ~200,000 1280-d
embeddings) and spills to a memory-mapped file on local disk beyond it, so its memory use is
bounded whatever the number of images. The optional fine-tuning phase changes the backbone, so
it cannot use the cache: it decodes and runs every image through the backbone every epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tf_keras

from components.trainer import data
from pipeline import labels

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MEMORY_LIMIT = 1 << 30  # bytes of embeddings kept in memory before spilling to disk
DEFAULT_MAX_POSITIVE_WEIGHT = 20.0  # clip of the per-label positive weight n_neg / n_pos (and of its inverse)
_EVAL_BATCH = 256
# Keras' Python loop between graph calls cost nearly as much as the head's steps themselves:
# 10 epochs on 17,098 random embeddings took 30.6 s at one step per call, 17.6 s at 64 (measured).
HEAD_STEPS_PER_EXECUTION = 64


@dataclasses.dataclass(frozen=True)
class Embedded:
    """Embeddings of a set of images with their labels.

    A subset made by ``take`` shares the embedding store (which may be a disk-backed memmap)
    instead of copying it: item i of the set is ``embeddings[rows[i]]``.

    Attributes:
      embeddings: float32 (M, C) store, in memory or a read-only np.memmap.
      labels: float32 (N, L), one row per item.
      filenames: (N,) file names, as str.
      rows: (N,) row of each item in ``embeddings``; None means item i is row i.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    filenames: np.ndarray
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def spilled(self) -> bool:
        """Whether the embeddings live in a memory-mapped file rather than in memory."""
        return isinstance(self.embeddings, np.memmap)

    def row_indices(self) -> np.ndarray:
        """The row in ``embeddings`` of every item."""
        return np.arange(len(self.labels)) if self.rows is None else self.rows

    def take(self, mask: np.ndarray) -> "Embedded":
        """Returns the items where mask is True (sharing the embedding store)."""
        return Embedded(self.embeddings, self.labels[mask], self.filenames[mask], self.row_indices()[mask])

    def vectors(self, items: np.ndarray | None = None) -> np.ndarray:
        """The embeddings of the given items (all when None), as an in-memory array."""
        rows = self.row_indices() if items is None else self.row_indices()[items]
        return np.asarray(self.embeddings[rows], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """Head-training settings.

    Attributes:
      epochs: maximum epochs (early stopping may end sooner).
      batch_size: head-training batch size.
      learning_rate: Adam learning rate.
      seed: seeds weight init, dropout and the per-epoch shuffling.
      validation_buckets: 1 of this many training files (by name hash) is held out.
      class_weighting: weight positives of each label by n_neg / n_pos (clipped).
      max_positive_weight: the clip of that weight (and 1 / it, for mostly-positive labels).
      early_stopping_patience: stop after this many epochs without a lower validation loss and
        restore the best weights; 0 turns early stopping off.
    """

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 42
    validation_buckets: int = 10
    class_weighting: bool = True
    max_positive_weight: float = DEFAULT_MAX_POSITIVE_WEIGHT
    early_stopping_patience: int = 3


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

    def finish(self) -> np.ndarray:
        if self._file is None:
            return np.concatenate(self._chunks)
        self._file.close()
        store = np.memmap(self._path, dtype=np.float32, mode="r", shape=(self._rows, self._dim))
        # The mapping keeps the data alive; unlinking now means nothing is left behind on disk.
        os.unlink(self._path)
        return store


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
      memory_limit_bytes: embeddings beyond this size go to a memory-mapped file instead of memory.
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
    for images, parsed in decoded:
        writer.append(run(images))
        features = parsed if features_of is None else features_of(parsed)
        label_chunks.append(features[labels.LABELS_KEY].numpy())
        names.append(features[labels.FILENAME_KEY].numpy())
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


def batch_indices(n: int, batch_size: int, epochs: int, seed: int) -> tf.data.Dataset:
    """Index batches for ``epochs`` epochs: a new seeded permutation of range(n) each epoch.

    Computed with numpy from (seed, epoch), so the order is the same in every process and for
    the cached and uncached paths; batches never cross an epoch boundary. Use with
    ``steps_per_epoch = ceil(n / batch_size)``.

    Args:
      n: number of items.
      batch_size: batch size.
      epochs: number of epochs.
      seed: the shuffling seed.

    Returns:
      A dataset of int64 index vectors.
    """
    orders = np.stack([np.random.default_rng([seed, epoch]).permutation(n) for epoch in range(epochs)])
    return tf.data.Dataset.from_tensor_slices(orders).flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
    )


def _gather(
    embedded: Embedded, index_batches: tf.data.Dataset, store: tf.Tensor | None = None
) -> tf.data.Dataset:
    """(embeddings, labels) batches for index batches.

    In memory, ``store`` (the embeddings as one tensor) is gathered from inside tf.data; a
    disk-backed store is read through numpy instead (slower per step: the Python call holds the GIL).
    """
    if store is not None:
        rows = tf.constant(embedded.row_indices())
        label_values = tf.constant(embedded.labels)
        return data.without_autotune(
            index_batches.map(
                lambda items: (tf.gather(store, tf.gather(rows, items)), tf.gather(label_values, items))
            ).prefetch(tf.data.AUTOTUNE)
        )
    dim, num_labels = embedded.embeddings.shape[1], embedded.labels.shape[1]

    def _numpy_gather(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return embedded.vectors(items), embedded.labels[items]

    def _map(items: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = tf.numpy_function(_numpy_gather, [items], (tf.float32, tf.float32), stateful=False)
        x.set_shape([None, dim])
        y.set_shape([None, num_labels])
        return x, y

    return data.without_autotune(index_batches.map(_map).prefetch(tf.data.AUTOTUNE))


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
    params: TrainParams,
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
      params: epochs, batch size, learning rate, seed, weighting, patience.
      label_names: names for the per-label AUC metrics.
      callbacks: extra Keras callbacks (e.g. TensorBoard).

    Returns:
      The Keras History (loss; with validation also val_loss and val_auc_<label>; per epoch run).
    """
    tf_keras.utils.set_random_seed(params.seed)
    pos_weights = (
        positive_weights(train.labels, params.max_positive_weight)
        if params.class_weighting
        else np.ones(train.labels.shape[1], np.float32)
    )
    logger.info("positive weights: %s", dict(zip(label_names, np.round(pos_weights, 3).tolist(), strict=True)))
    compile_for_training(
        head, params.learning_rate, pos_weights, label_names, step_metrics=False,
        steps_per_execution=HEAD_STEPS_PER_EXECUTION,
    )
    # One in-memory tensor of the whole store, shared by the training and validation views.
    store = None if train.spilled else tf.constant(train.embeddings)
    train_ds = _gather(train, batch_indices(len(train), params.batch_size, params.epochs, params.seed), store)
    extra = []
    val_ds = None
    if validation is not None and len(validation):
        shared = store if validation.embeddings is train.embeddings else None
        if shared is None and not validation.spilled:
            shared = tf.constant(validation.embeddings)
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
    from tensorflow.python.autograph.core import config as autograph_config  # noqa: PLC0415

    rules = autograph_config.CONVERSION_RULES
    if not any(isinstance(r, autograph_config.DoNotConvert) and r.matches("tf_keras") for r in rules):
        autograph_config.CONVERSION_RULES = (autograph_config.DoNotConvert("tf_keras"), *rules)
