"""One typed configuration shared by every runner.

Runners turn flags into a PipelineConfig; create_pipeline turns a PipelineConfig into
a TFX pipeline. Nothing here touches the file system or the environment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import pathlib
import re

from components.evaluation import GateSettings
from components.image_example_gen import spans
from pipeline import labels

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_SCHEMA_PATH = REPO_ROOT / "schema" / "schema.pbtxt"

# No Beam args means Beam's default: the DirectRunner in in-memory mode, one worker. On 2 cores
# that is ~4x faster than multi-processing, where every Beam worker re-imports TensorFlow.
# Passing any args makes TFX build and attach a TFX sdist in every Beam component (~2 s each),
# which only remote runners need.
DEFAULT_BEAM_ARGS: tuple[str, ...] = ()

# Must match components.trainer.tflite_engine.ENGINES and tflite_export.EXPORT_MODES (a test checks it).
EMBEDDING_ENGINES: tuple[str, ...] = ("auto", "tf", "tflite")
TFLITE_EXPORTS: tuple[str, ...] = ("none", "float", "int8")

# Must match components.trainer.backbones.BACKBONE_NAMES (a test checks it); the first is the default.
BACKBONES: tuple[str, ...] = ("efficientnet_lite0", "mobilenet_v2", "efficientnet_b0", "resnet50", "vgg16")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything that decides what a pipeline run does.

    Attributes:
      data_dir: folder (local or gs://) holding the image files.
      pipeline_root: where TFX writes artifacts.
      serving_dir: blessed models go to <serving_dir>/<pipeline_name>/<version>/.
      metadata_path: SQLite ML Metadata file; None when the orchestrator provides MLMD (Kubeflow).
      pipeline_name: the pipeline's name in ML Metadata and in the serving folder.
      schema_path: the curated schema imported by ImportSchemaGen.
      filename_pattern: regex with named groups age, gender and race.
      spans: None for a flat data folder; "latest", "N" or "A-B" to read span-<N> folders as TFX spans.
      max_label_drift: largest allowed L-infinity distance between the label distributions
        (gender, race, age group) of the current and the previous span; above it the run stops.
      train_buckets / eval_buckets: hash-split ratio by file name (4:1 is 80/20).
      backbone: name of the frozen pretrained backbone.
      image_size: square input size in pixels the backbone sees.
      epochs: training epochs of the head.
      batch_size: batch size for the backbone pass and head training.
      learning_rate: Adam learning rate of the head.
      hidden_units: units of the head's hidden Dense layer.
      dropout: dropout rate of the head.
      weights_file: local Keras .h5 ImageNet weights for a keras.applications backbone (offline use).
      class_weighting: weight each label's positives by n_neg / n_pos in the loss.
      early_stopping_patience: epochs without a lower validation loss before training stops (0: off).
      fine_tune_layers: after head training, fine-tune this many top backbone layers (0: off; slower).
      fine_tune_epochs: epochs of that fine-tuning phase.
      embedding_engine: what runs the Trainer's frozen embedding pass: auto (TFLite when it pays
        off), tf or tflite; the exported SavedModel is the same either way.
      tflite_cache_dir: where converted backbones are cached between runs (None: ~/.cache/facepipe/tflite).
      export_tflite: none, float or int8: the Trainer also exports model.tflite (backbone + head),
        which TFLiteEvaluator scores and EvaluationGate gates.
      max_tflite_auc_drop: model.tflite's macro AUC on the eval split may be at most this much
        below the SavedModel's (the Evaluator's).
      min_macro_auc: the Evaluator blesses only above this macro-average AUC.
      max_auc_regression: allowed macro-AUC drop against the model serving now (the highest version
        in the serving folder).
      min_label_auc: AUC floor of every label on the eval split (None: off), see components.evaluation.
      label_auc_floors: (label name, floor) pairs overriding min_label_auc for single labels.
      max_fairness_gap: largest allowed AUC gap of a label between two race groups or two genders
        (None: no fairness gate).
      fairness_min_count: positives and negatives a group needs for its fairness comparisons to count.
      enable_cache: reuse outputs of components whose inputs did not change.
      beam_pipeline_args: arguments for every Beam-based component.
    """

    data_dir: str
    pipeline_root: str
    serving_dir: str
    metadata_path: str | None = None
    pipeline_name: str = "facepipe"
    schema_path: str = str(DEFAULT_SCHEMA_PATH)
    filename_pattern: str = labels.UTKFACE_PATTERN
    spans: str | None = None
    max_label_drift: float = 0.1
    train_buckets: int = 4
    eval_buckets: int = 1
    backbone: str = "efficientnet_lite0"
    image_size: int = 128
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    hidden_units: int = 256
    dropout: float = 0.3
    weights_file: str | None = None
    class_weighting: bool = True
    early_stopping_patience: int = 3
    fine_tune_layers: int = 0
    fine_tune_epochs: int = 3
    embedding_engine: str = "auto"
    tflite_cache_dir: str | None = None
    export_tflite: str = "none"
    max_tflite_auc_drop: float = 0.01
    min_macro_auc: float = 0.7
    max_auc_regression: float = 0.02
    min_label_auc: float | None = None
    label_auc_floors: tuple[tuple[str, float], ...] = ()
    max_fairness_gap: float | None = 0.15
    fairness_min_count: int = 20
    enable_cache: bool = True
    beam_pipeline_args: tuple[str, ...] = DEFAULT_BEAM_ARGS

    def gate_settings(self) -> GateSettings:
        """The Evaluator's gate thresholds (components.evaluation.GateSettings) of this config."""
        return GateSettings(
            min_macro_auc=self.min_macro_auc,
            max_auc_regression=self.max_auc_regression,
            min_label_auc=self.min_label_auc,
            label_auc_floors=self.label_auc_floors,
            max_fairness_gap=self.max_fairness_gap,
            fairness_min_count=self.fairness_min_count,
        )

    def validate(self) -> None:
        """Checks values that do not need the file system.

        Raises:
          ValueError: with a one-line message naming the bad setting.
        """
        labels.compile_pattern(self.filename_pattern)
        # The name becomes a folder under the serving dir and a key in ML Metadata: keep it a plain name.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", self.pipeline_name) or ".." in self.pipeline_name:
            raise ValueError(
                f"pipeline name {self.pipeline_name!r} must be 1-63 letters, digits, '_', '.' or '-' "
                "(starting with a letter or digit, no '..')"
            )
        if self.spans is not None:
            spans.parse_span_selection(self.spans)
        if not 0.0 <= self.max_label_drift <= 1.0:
            raise ValueError(f"max label drift must be within 0-1, got {self.max_label_drift}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not 32 <= self.image_size <= 1024:
            raise ValueError(f"image size must be within 32-1024 pixels, got {self.image_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.train_buckets < 1 or self.eval_buckets < 1:
            raise ValueError("train and eval hash buckets must both be >= 1")
        self.gate_settings().validate(labels.LABEL_NAMES)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be within [0, 1), got {self.dropout}")
        if self.weights_file and self.backbone == BACKBONES[0]:
            raise ValueError(f"{BACKBONES[0]} has bundled weights; a weights file is for {', '.join(BACKBONES[1:])}")
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
        if not 0.0 <= self.max_tflite_auc_drop <= 1.0:
            raise ValueError(f"max TFLite AUC drop must be within 0-1, got {self.max_tflite_auc_drop}")


def code_fingerprint(*module_names: str) -> str:
    """Hashes the source of modules and packages so caching sees code changes.

    Transform and Trainer reference their functions by dotted path, which TFX's cache key
    does not cover; putting this fingerprint into the components' parameters does.

    Args:
      module_names: importable module or package names; a package covers all its .py files.

    Returns:
      A short hex digest.
    """
    digest = hashlib.sha256()
    for name in module_names:
        spec = importlib.util.find_spec(name)  # locates the files without importing them
        if spec is None or spec.origin is None:
            raise ValueError(f"cannot find module {name!r} to fingerprint")
        path = pathlib.Path(spec.origin)
        files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
        for file in files:
            rel = file.relative_to(path.parent.parent) if path.name == "__init__.py" else file.name
            digest.update(str(rel).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
