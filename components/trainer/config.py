"""TrainerConfig: the one declaration of the Trainer's settings.

pipeline.config.PipelineConfig holds one; the Trainer component receives it as its
custom_config (``to_custom_config``; on Kubeflow the ``trainer_config`` runtime parameter);
run_fn reads it back with ``from_custom_config``; head training reads it directly. Adding a
hyperparameter means one field here (with its check in ``__post_init__``) plus its flag in
pipeline.cli.

Light on purpose (no TensorFlow): the CLI imports it to build its flags.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from components.base import labels
from components.trainer import calibration, decision
from components.trainer.backbone_specs import BACKBONE_NAMES, DEFAULT_BACKBONE

# What runs the frozen embedding pass (components.trainer.tflite_engine); the first is the default.
EMBEDDING_ENGINES: tuple[str, ...] = ("auto", "tf", "tflite")
# model.tflite export modes (components.trainer.tflite_export); the first is the default (no export).
TFLITE_EXPORTS: tuple[str, ...] = ("none", "float", "int8")
# Embeddings kept in memory before spilling to disk (components.trainer.embeddings). In memory the
# store exists about three times over for a moment (batches, their concatenation, the tensor head
# training gathers from): at 1 GiB that was 3 GB at 192,000 training images; spilled, head
# training holds a few chunks.
DEFAULT_EMBEDDING_MEMORY_MB = 256
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """The Trainer's settings.

    Attributes:
      backbone: name of the frozen pretrained backbone (backbone_specs.BACKBONE_NAMES).
      image_size: square input size in pixels the backbone sees.
      epochs: training epochs of the head (early stopping may end sooner).
      batch_size: batch size for the backbone pass and head training.
      learning_rate: Adam learning rate of the head.
      hidden_units: units of the head's hidden Dense layer.
      dropout: dropout rate of the head.
      seed: seeds weight init, dropout and the per-epoch shuffling.
      weights_file: local Keras .h5 ImageNet weights for a keras.applications backbone (offline use), or None.
      class_weighting: weight each label's positives by n_neg / n_pos (clipped) in the loss.
      early_stopping_patience: epochs without a lower validation loss before training stops and the
        best weights are restored (0: off).
      fine_tune_layers: after head training, fine-tune this many top backbone layers (0: off; slower).
      fine_tune_epochs: epochs of that phase (every image through the backbone each epoch: slow).
      fine_tune_learning_rate: Adam learning rate of that phase.
      embedding_memory_mb: embeddings beyond this many MiB are kept in a memory-mapped local file.
      threshold_policy: the decision-threshold policy of every label (components.trainer.decision):
        f1, precision=P, recall=R or fixed=T.
      label_threshold_policies: (label name, policy) pairs overriding threshold_policy (a JSON
        object in the custom_config).
      threshold_min_positives: a label with fewer out-of-fold positives (or negatives) keeps 0.5
        and is not Platt-scaled.
      calibration: how the exported probabilities are calibrated (components.trainer.calibration):
        prior (undo the positive weighting), platt (fitted out of fold) or none.
      oof_folds: k of the k-fold head fits that give out-of-fold predictions.
      embedding_engine: what runs the frozen embedding pass: auto (TFLite when it pays off), tf or
        tflite (components.trainer.tflite_engine); the exported SavedModel is the same either way.
      tflite_cache_dir: where converted backbones are cached between runs ("": ~/.cache/facepipe/tflite).
      export_tflite: none, float or int8: the Trainer also exports model.tflite (backbone + head),
        which TFLiteEvaluator scores and EvaluationGate gates.
      code_version: fingerprint of the trainer code (for the cache key only; set by create_pipeline).

    Raises:
      ValueError: on construction, with a one-line message naming the bad setting.
    """

    backbone: str = DEFAULT_BACKBONE
    image_size: int = 128
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    hidden_units: int = 256
    dropout: float = 0.3
    seed: int = 42
    weights_file: str | None = None
    class_weighting: bool = True
    early_stopping_patience: int = 3
    fine_tune_layers: int = 0
    fine_tune_epochs: int = 3
    fine_tune_learning_rate: float = 1e-4
    embedding_memory_mb: int = DEFAULT_EMBEDDING_MEMORY_MB
    threshold_policy: str = decision.DEFAULT_POLICY
    label_threshold_policies: tuple[tuple[str, str], ...] = ()
    threshold_min_positives: int = decision.DEFAULT_MIN_POSITIVES
    calibration: str = "prior"
    oof_folds: int = 5
    embedding_engine: str = EMBEDDING_ENGINES[0]
    tflite_cache_dir: str = ""
    export_tflite: str = TFLITE_EXPORTS[0]
    code_version: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.label_threshold_policies, dict):  # as a custom_config carries it
            object.__setattr__(self, "label_threshold_policies", tuple(self.label_threshold_policies.items()))
        if self.backbone not in BACKBONE_NAMES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONE_NAMES)}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(
                f"image size must be within {MIN_IMAGE_SIZE}-{MAX_IMAGE_SIZE} pixels, got {self.image_size}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        decision.policies_for(labels.LABEL_NAMES, self.threshold_policy, dict(self.label_threshold_policies))
        if self.threshold_min_positives < 1:
            raise ValueError(f"threshold min positives must be >= 1, got {self.threshold_min_positives}")
        if self.calibration not in calibration.METHODS:
            raise ValueError(
                f"unknown calibration {self.calibration!r}; choose one of {', '.join(calibration.METHODS)}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be within [0, 1), got {self.dropout}")
        if self.weights_file and self.backbone == DEFAULT_BACKBONE:
            raise ValueError(
                f"{DEFAULT_BACKBONE} has bundled weights; a weights file is for {', '.join(BACKBONE_NAMES[1:])}"
            )
        if self.early_stopping_patience < 0:
            raise ValueError(f"early stopping patience must be >= 0, got {self.early_stopping_patience}")
        if self.fine_tune_layers < 0 or self.fine_tune_epochs < 0:
            raise ValueError("fine-tune layers and epochs must be >= 0")
        if self.embedding_engine not in EMBEDDING_ENGINES:
            raise ValueError(
                f"embedding engine must be one of {', '.join(EMBEDDING_ENGINES)}, got {self.embedding_engine!r}"
            )
        if self.export_tflite not in TFLITE_EXPORTS:
            raise ValueError(f"TFLite export must be one of {', '.join(TFLITE_EXPORTS)}, got {self.export_tflite!r}")

    def to_custom_config(self) -> dict[str, Any]:
        """The Trainer's custom_config: every field by name (the label policies as a JSON object)."""
        return {**dataclasses.asdict(self), "label_threshold_policies": dict(self.label_threshold_policies)}

    @classmethod
    def from_custom_config(cls, custom_config: dict[str, Any] | None) -> TrainerConfig:
        """Builds the config from the Trainer's custom_config, ignoring unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (custom_config or {}).items() if k in known})
