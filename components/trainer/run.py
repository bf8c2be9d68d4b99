"""TFX Trainer entry point: a thin adapter from FnArgs to the typed training functions."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import tensorflow_transform as tft
import tf_keras
from tfx.components.trainer.fn_args_utils import FnArgs

from components.trainer import backbones, export, model, train
from components.trainer.data import read_transformed
from pipeline import labels

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """The Trainer's settings, passed as the component's custom_config."""

    backbone: str = "efficientnet_lite0"
    image_size: int = 128
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    hidden_units: int = 256
    dropout: float = 0.3
    seed: int = 42
    code_version: str = ""

    @classmethod
    def from_custom_config(cls, custom_config: dict[str, Any] | None) -> "TrainerConfig":
        """Builds the config from the Trainer's custom_config, ignoring unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (custom_config or {}).items() if k in known})


def run_fn(fn_args: FnArgs) -> None:
    """Trains the frozen-backbone multi-label model and exports it.

    Args:
      fn_args: TFX trainer arguments: train_files, transform_output, serving_model_dir,
        model_run_dir and custom_config (see TrainerConfig).
    """
    config = TrainerConfig.from_custom_config(fn_args.custom_config)
    train.skip_autograph_for_tf_keras()
    feature_spec = tft.TFTransformOutput(fn_args.transform_output).transformed_feature_spec()

    backbone = model.freeze(backbones.build_backbone(config.backbone, config.image_size))
    extractor = model.build_feature_extractor(backbone)
    embedded = train.embed(
        extractor, read_transformed(fn_args.train_files, feature_spec, config.batch_size), config.image_size
    )
    held_out = train.validation_mask(embedded.filenames, train.TrainParams.validation_buckets)
    logger.info("embedded %d training images (%d held out for validation)", len(held_out), held_out.sum())

    head = model.build_head(embedded.embeddings.shape[1], len(labels.LABEL_NAMES), config.hidden_units, config.dropout)
    params = train.TrainParams(
        epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate, seed=config.seed
    )
    train.train_head(
        head,
        embedded.take(~held_out),
        embedded.take(held_out),
        params,
        callbacks=[tf_keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)],
    )
    export.export_model(model.build_model(extractor, head), fn_args.serving_model_dir, config.image_size)
