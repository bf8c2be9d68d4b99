"""Training: the head on cached embeddings, optional fine-tuning on images, out-of-fold predictions.

Every function reads its settings from the Trainer's TrainerConfig (components.trainer.config).
The embedding cache is components.trainer.embeddings, the batches components.trainer.batches,
the losses and metrics components.trainer.losses and .metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tf_keras

from components.base import labels
from components.trainer.batches import batch_indices, epoch_orders, gather_batches, spilled_batches
from components.trainer.config import TrainerConfig
from components.trainer.embeddings import Embedded
from components.trainer.losses import (
    FoldMaskedBinaryCrossentropy,
    StackHeads,
    WeightedBinaryCrossentropy,
    positive_weights,
)
from components.trainer.metrics import ValidationAUC, per_label_auc_metrics

logger = logging.getLogger(__name__)

VALIDATION_BUCKETS = 10  # 1 of this many training files (by name hash) is held out for validation
_EVAL_BATCH = 256
# Keras' Python loop between graph calls cost nearly as much as the head's steps themselves:
# 10 epochs on 17,098 random embeddings took 30.6 s at one step per call, 17.6 s at 64 (measured).
HEAD_STEPS_PER_EXECUTION = 64


def validation_mask(filenames: np.ndarray, buckets: int) -> np.ndarray:
    """Stable hold-out by file-name hash: True for 1 of ``buckets`` files."""
    hashed = tf.strings.to_hash_bucket_fast(tf.constant(filenames.astype(str)), buckets).numpy()
    return hashed == 0

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

def epoch_logger(prefix: str = "epoch") -> tf_keras.callbacks.Callback:
    """Logs every epoch's metrics to the Python logger (the run's log file)."""
    return tf_keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: logger.info(
            "%s %d: %s", prefix, epoch + 1, " ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items())
        )
    )

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
        indices = batch_indices(len(train), params.batch_size, params.epochs, params.seed)
        train_ds = gather_batches(train, indices, store)
    extra = []
    val_ds = None
    if validation is not None and len(validation):
        if validation.spilled:
            val_ds = spilled_batches(validation, np.arange(len(validation))[None], _EVAL_BATCH)
        else:
            shared = store if not train.spilled and validation.embeddings is train.embeddings else None
            shared = tf.constant(validation.embeddings) if shared is None else shared
            val_ds = gather_batches(validation, tf.data.Dataset.range(len(validation)).batch(_EVAL_BATCH), shared)
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
        batches = gather_batches(targets, batch_indices(n, params.batch_size, params.epochs, params.seed + 1),
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
