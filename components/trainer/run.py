"""TFX Trainer entry point: a thin adapter from FnArgs to the typed training functions."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from typing import Any

import numpy as np
import tensorflow_transform as tft
import tf_keras
from tfx.components.trainer.fn_args_utils import FnArgs

from components.base import labels
from components.trainer import backbones, calibration, decision, export, model, tflite_engine, tflite_export, train
from components.trainer.batches import image_batches
from components.trainer.config import TrainerConfig
from components.trainer.data import count_examples, read_examples, with_labels
from components.trainer.embeddings import Embedded, embed, tf_embedder

logger = logging.getLogger(__name__)

_SHUFFLE_BUFFER = 2048  # fine-tuning reads images in file order; this mixes them (~30 MB of JPEG bytes)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a training run did, for logs and benchmarks.

    Attributes:
      train_examples: examples the head trained on.
      validation_examples: held-out examples.
      embedding_dim: size of the cached embeddings.
      head_epochs: head epochs run (fewer than configured when early stopping ended it).
      fine_tuned_layers: names of the backbone layers fine-tuned (empty: none).
      fine_tune_epochs: fine-tuning epochs run.
      embeddings_spilled: whether the cache went to a memory-mapped file.
      seconds: wall time per phase (embed, head, out_of_fold, fine_tune, export, export_tflite).
      decision: what went into assets.extra/labels.json beside the label names (thresholds,
        calibration, and how each was chosen).
      embedding_engine: what ran the embedding pass (tflite_engine.EngineReport as a dict).
      tflite: model.tflite's metadata and export check, or None when not exported.
    """

    train_examples: int
    validation_examples: int
    embedding_dim: int
    head_epochs: int
    fine_tuned_layers: tuple[str, ...]
    fine_tune_epochs: int
    embeddings_spilled: bool
    seconds: dict[str, float]
    decision: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)  # long: in labels.json
    embedding_engine: dict = dataclasses.field(default_factory=dict)
    tflite: dict | None = None


def train_and_export(
    config: TrainerConfig,
    train_files: str | list[str],
    feature_spec: dict,
    serving_model_dir: str,
    model_run_dir: str,
    transform_output: str | None = None,
) -> TrainResult:
    """Builds the model, embeds each training image once, trains the head, optionally fine-tunes, exports.

    Args:
      config: the Trainer settings.
      train_files: glob(s) of the training examples.
      feature_spec: their parsing spec: the raw feature spec with ``transform_output``, else a
        spec with image_raw, labels and filename (examples that already hold the labels).
      serving_model_dir: where the SavedModel goes.
      model_run_dir: TensorBoard logs.
      transform_output: Transform's graph folder: the embedding pass turns each parsed batch into
        labels with it, and the exported model gets its ``transform_features`` signature (for
        the Evaluator).

    Returns:
      A TrainResult.
    """
    train.skip_autograph_for_tf_keras()
    tf_keras.utils.set_random_seed(config.seed)  # the head's initial weights
    seconds: dict[str, float] = {}
    backbone = model.freeze(
        backbones.build_backbone(config.backbone, config.image_size, weights_file=config.weights_file)
    )
    extractor = model.build_feature_extractor(backbone)
    tensorboard = tf_keras.callbacks.TensorBoard(log_dir=model_run_dir)
    transform = tft.TFTransformOutput(transform_output).transform_raw_features if transform_output else None
    with tempfile.TemporaryDirectory(prefix="facepipe-embeddings-") as spill_dir:
        start = time.monotonic()
        embedder, engine = tflite_engine.select_embedder(
            config.embedding_engine,
            extractor,
            tf_embedder(extractor),
            config.backbone,
            config.image_size,
            count_examples(train_files) if config.embedding_engine == tflite_engine.AUTO else None,
            cache_dir=config.tflite_cache_dir or None,
        )
        embedded = embed(
            embedder,
            read_examples(train_files, feature_spec, config.batch_size),
            config.image_size,
            memory_limit_bytes=config.embedding_memory_mb << 20,
            spill_dir=spill_dir,
            transform=transform,
        )
        seconds["embed"] = time.monotonic() - start
        # In file-name order, not the order the examples were written in (which depends on how
        # Beam sharded and shuffled them): the same examples give the same training on any runner.
        embedded = embedded.take(np.argsort(embedded.filenames, kind="stable"))
        held_out = train.validation_mask(embedded.filenames, train.VALIDATION_BUCKETS)
        logger.info(
            "embedded %d training images in %.1f s with %s (%d held out for validation; %s)",
            len(held_out),
            seconds["embed"],
            engine.used,
            held_out.sum(),
            "spilled to disk" if embedded.spilled else "in memory",
        )
        head = model.build_head(
            embedded.embeddings.shape[1], len(labels.LABEL_NAMES), config.hidden_units, config.dropout
        )
        training, validation = embedded.take(~held_out), embedded.take(held_out)
        start = time.monotonic()
        history = train.train_head(head, training, validation, config, callbacks=[tensorboard])
        seconds["head"] = time.monotonic() - start
        head_epochs = len(history.history["loss"])
        pos_weights = head.loss.positive_weights
        fine_tuning = config.fine_tune_layers > 0 and config.fine_tune_epochs > 0
        start = time.monotonic()
        decided = _thresholds_and_calibration(
            config, embedded, train.best_epoch_count(history, config.early_stopping_patience),
            np.asarray(pos_weights), embedded.embeddings.shape[1], fine_tuning,
        )
        if not fine_tuning:
            seconds["out_of_fold"] = time.monotonic() - start
    full_model = model.build_model(extractor, head)

    fine_tuned: list[str] = []
    fine_tune_epochs = 0
    if config.fine_tune_layers > 0 and config.fine_tune_epochs > 0:
        fine_tuned = backbones.unfreeze_top(backbone, config.fine_tune_layers)
        logger.info("fine-tuning %d backbone layers: %s", len(fine_tuned), ", ".join(fine_tuned))
        dataset = read_examples(train_files, feature_spec, config.batch_size)
        if transform is not None:  # the labels the embedding pass computed, by file name
            dataset = with_labels(dataset, embedded.filenames, embedded.labels)
        start = time.monotonic()
        ft_history = train.fine_tune(
            full_model,
            image_batches(
                dataset,
                config.image_size,
                config.batch_size,
                held_out=False,
                validation_buckets=train.VALIDATION_BUCKETS,
                shuffle_buffer=_SHUFFLE_BUFFER,
                seed=config.seed,
            ),
            image_batches(
                dataset, config.image_size, config.batch_size, True, train.VALIDATION_BUCKETS
            )
            if held_out.any()
            else None,
            pos_weights,
            config.fine_tune_learning_rate,
            initial_epoch=head_epochs,
            epochs=config.fine_tune_epochs,
            patience=config.early_stopping_patience,
            callbacks=[tensorboard],
        )
        seconds["fine_tune"] = time.monotonic() - start
        fine_tune_epochs = len(ft_history.history["loss"])
        model.freeze(backbone)

    start = time.monotonic()
    calibrations = [decided["calibration"][name] for name in labels.LABEL_NAMES]
    serving = model.build_calibrated_model(
        extractor, head, [c["slope"] for c in calibrations], [c["intercept"] for c in calibrations]
    )
    export.export_model(serving, serving_model_dir, config.image_size, transform_output=transform_output,
                        metadata=decided)
    seconds["export"] = time.monotonic() - start
    tflite = None
    if config.export_tflite != tflite_export.NONE:
        start = time.monotonic()
        # The calibrated model, as exported: model.tflite outputs what the SavedModel outputs.
        tflite = tflite_export.export_from_training_data(
            serving, serving_model_dir, config.image_size, config.export_tflite,
            read_examples(train_files, feature_spec, config.batch_size),
        )
        seconds["export_tflite"] = time.monotonic() - start
    result = TrainResult(
        train_examples=len(training),
        validation_examples=len(validation),
        embedding_dim=int(embedded.embeddings.shape[1]),
        head_epochs=head_epochs,
        fine_tuned_layers=tuple(fine_tuned),
        fine_tune_epochs=fine_tune_epochs,
        embeddings_spilled=embedded.spilled,
        seconds={k: round(v, 2) for k, v in seconds.items()},
        decision=decided,
        embedding_engine=engine.to_dict(),
        tflite=tflite,
    )
    logger.info("trainer result: %s", result)
    return result


def _thresholds_and_calibration(
    config: TrainerConfig,
    embedded: Embedded,
    epochs: int,
    pos_weights: np.ndarray,
    embedding_dim: int,
    fine_tuning: bool,
) -> dict[str, Any]:
    """Calibrates each label and chooses its threshold on out-of-fold predictions of the training images.

    Returns:
      The metadata stored in assets.extra/labels.json: ``thresholds`` (label -> threshold, which
      predict.py applies), ``calibration`` (label -> LabelCalibration dict, applied inside the
      exported model) and ``decision`` (policies, counts, per-label choice with its out-of-fold
      precision/recall/F1 at the threshold and at 0.5, calibration error before/after).
    """
    names = labels.LABEL_NAMES
    policies = decision.policies_for(names, config.threshold_policy, dict(config.label_threshold_policies))
    info: dict[str, Any] = {
        "policies": {n: str(p) for n, p in policies.items()},
        "min_positives": config.threshold_min_positives,
        "calibration_method": config.calibration,
        "folds": config.oof_folds,
    }
    if fine_tuning:
        reason = "not tuned: fine-tuning changes the backbone after the out-of-fold head fits"
        choices = decision.untuned(names, policies, reason)
        calibrations = {n: calibration.LabelCalibration("none", reason=reason) for n in names}
        per_label = {n: {**choices[n].to_dict(), "calibration_error": None} for n in names}
        info.update(out_of_fold_examples=0, epochs=0, skipped=reason)
    else:
        oof = train.out_of_fold_predictions(
            embedded,
            lambda name: model.build_head(embedding_dim, len(names), config.hidden_units, config.dropout, name),
            dataclasses.replace(config, epochs=epochs),
            config.oof_folds,
        )
        calibrations = calibration.fit(config.calibration, oof, embedded.labels, pos_weights, names,
                                       config.threshold_min_positives)
        calibrated = calibration.apply_all(calibrations, oof, names)
        choices = decision.choose_all(names, embedded.labels, calibrated, policies, config.threshold_min_positives)
        per_label = {
            n: {
                **choices[n].to_dict(),
                "calibration_error": {
                    "before": calibration.expected_calibration_error(embedded.labels[:, k], oof[:, k]),
                    "after": calibration.expected_calibration_error(embedded.labels[:, k], calibrated[:, k]),
                },
            }
            for k, n in enumerate(names)
        }
        info.update(out_of_fold_examples=len(embedded), epochs=epochs)
        logger.info("decision thresholds: %s", {n: round(c.threshold, 4) for n, c in choices.items()})
    info["per_label"] = per_label
    return {
        "thresholds": {n: choices[n].threshold for n in names},
        "calibration": {n: calibrations[n].to_dict() for n in names},
        "decision": info,
    }


def run_fn(fn_args: FnArgs) -> None:
    """Trains the frozen-backbone multi-label model and exports it.

    Args:
      fn_args: TFX trainer arguments: train_files (ExampleGen's raw examples), transform_output,
        serving_model_dir, model_run_dir and custom_config (see TrainerConfig).
    """
    config = TrainerConfig.from_custom_config(fn_args.custom_config)
    # Transform does not materialize its output: the Trainer reads ExampleGen's raw examples and
    # applies the transform graph in its embedding pass (no copy of every JPEG through Transform).
    raw_spec = tft.TFTransformOutput(fn_args.transform_output).raw_feature_spec()
    train_and_export(
        config,
        fn_args.train_files,
        raw_spec,
        fn_args.serving_model_dir,
        fn_args.model_run_dir,
        transform_output=fn_args.transform_output,
    )
