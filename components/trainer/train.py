"""Training: each image passes the frozen backbone once, the head trains on embeddings.

The backbone is frozen, so its output for an image never changes during training;
computing it once and training the head on the cached embeddings gives the same
result as running the backbone every epoch, at a fraction of the cost.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow as tf
import tf_keras

from components.trainer import data
from pipeline import labels

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Embedded:
    """Embeddings of a set of images with their labels.

    Attributes:
      embeddings: float32 (N, C).
      labels: float32 (N, L).
      filenames: (N,) file names, as str.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    filenames: np.ndarray

    def take(self, mask: np.ndarray) -> "Embedded":
        """Returns the rows where mask is True."""
        return Embedded(self.embeddings[mask], self.labels[mask], self.filenames[mask])


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """Head-training settings."""

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 42
    validation_buckets: int = 10  # 1 of this many training files (by name hash) is held out


def embed(feature_extractor: tf_keras.Model, dataset: tf.data.Dataset, image_size: int) -> Embedded:
    """Runs every image of a dataset through the feature extractor once.

    Args:
      feature_extractor: images -> embeddings.
      dataset: batches of dicts with image_raw, labels, filename (data.read_transformed).
      image_size: the size images are resized to.

    Returns:
      The embeddings, labels and file names, in dataset order.
    """

    @tf.function(reduce_retracing=True)
    def _embed(image_bytes: tf.Tensor) -> tf.Tensor:
        return feature_extractor(data.decode_images(image_bytes, image_size), training=False)

    chunks, label_chunks, names = [], [], []
    for batch in dataset:
        chunks.append(_embed(batch[labels.IMAGE_KEY]).numpy())
        label_chunks.append(batch[labels.LABELS_KEY].numpy())
        names.append(batch[labels.FILENAME_KEY].numpy())
    if not chunks:
        raise ValueError("no examples to embed")
    return Embedded(
        np.concatenate(chunks).astype(np.float32),
        np.concatenate(label_chunks).astype(np.float32),
        np.array([n.decode() for n in np.concatenate(names)]),
    )


def validation_mask(filenames: np.ndarray, buckets: int) -> np.ndarray:
    """Stable hold-out by file-name hash: True for 1 of ``buckets`` files."""
    hashed = tf.strings.to_hash_bucket_fast(tf.constant(filenames.astype(str)), buckets).numpy()
    return hashed == 0


def per_label_auc_metrics(label_names: tuple[str, ...]) -> list[tf_keras.metrics.Metric]:
    """One AUC metric per label, named auc_<label>."""
    n = len(label_names)
    return [
        tf_keras.metrics.AUC(name=f"auc_{name}", multi_label=True, num_labels=n, label_weights=np.eye(n)[i])
        for i, name in enumerate(label_names)
    ]


def train_head(
    head: tf_keras.Model,
    train: Embedded,
    validation: Embedded | None,
    params: TrainParams,
    label_names: tuple[str, ...] = labels.LABEL_NAMES,
    callbacks: list[tf_keras.callbacks.Callback] | None = None,
) -> tf_keras.callbacks.History:
    """Trains the head on cached embeddings with binary cross-entropy.

    Args:
      head: the model from model.build_head (compiled here).
      train: training embeddings and labels.
      validation: held-out embeddings and labels, or None.
      params: epochs, batch size, learning rate, seed.
      label_names: names for the per-label AUC metrics.
      callbacks: extra Keras callbacks (e.g. TensorBoard).

    Returns:
      The Keras History (loss and auc_<label> per epoch).
    """
    tf_keras.utils.set_random_seed(params.seed)
    head.compile(
        optimizer=tf_keras.optimizers.Adam(params.learning_rate),
        loss=tf_keras.losses.BinaryCrossentropy(),
        metrics=per_label_auc_metrics(label_names),
    )
    train_ds = (
        tf.data.Dataset.from_tensor_slices((train.embeddings, train.labels))
        .shuffle(len(train.labels), seed=params.seed, reshuffle_each_iteration=True)
        .batch(params.batch_size)
    )
    val_ds = None
    if validation is not None and len(validation.labels):
        val_ds = tf.data.Dataset.from_tensor_slices((validation.embeddings, validation.labels)).batch(256)
    log_epoch = tf_keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: logger.info(
            "epoch %d: %s", epoch + 1, " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items())
        )
    )
    return head.fit(
        train_ds, validation_data=val_ds, epochs=params.epochs, verbose=0, callbacks=[log_epoch, *(callbacks or [])]
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
