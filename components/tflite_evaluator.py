"""TFLiteEvaluator: scores the Trainer's model.tflite on the eval split (components.tflite_scoring).

Runs beside the Evaluator when the pipeline exports an on-device model (--export-tflite); its
record is judged by EvaluationGate's ``tflite_auc`` gate (components.tflite_gate) against the
SavedModel's macro AUC from the Evaluator.
"""

# No "from __future__ import annotations": the TFX component decorator reads real annotations.

import os

import tensorflow as tf
from tfx import v1 as tfx
from tfx.utils import path_utils

from components import tflite_scoring
from components.trainer import tflite_export

EVAL_SPLIT = "eval"
MACRO_AUC_PROPERTY = "tflite_macro_auc"


@tfx.dsl.components.component
def TFLiteEvaluator(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    transform_graph: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.TransformGraph],
    evaluation: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    batch_size: tfx.dsl.components.Parameter[int] = 32,
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Writes tflite_evaluation.json: model.tflite's per-label and macro AUC on the eval split.

    Args:
      examples: ExampleGen's examples (the eval split is read).
      model: the Trainer's model; model.tflite lies in its serving folder.
      transform_graph: Transform's graph (the labels, as the Evaluator gets them).
      evaluation: the output record.
      batch_size: images per interpreter call.
      code_version: fingerprint of this code, so that caching sees code changes.

    Raises:
      FileNotFoundError: the model has no model.tflite (the Trainer ran without --export-tflite).
    """
    del code_version  # only part of the cache key
    tflite_path = os.path.join(path_utils.serving_model_path(model.uri), tflite_export.TFLITE_FILE)
    if not tf.io.gfile.exists(tflite_path):
        raise FileNotFoundError(f"{tflite_path} does not exist: the Trainer exported no on-device model")
    record = tflite_scoring.score(
        tflite_path,
        os.path.join(examples.uri, f"Split-{EVAL_SPLIT}", "*"),
        transform_graph.uri,
        batch_size=batch_size,
    )
    tflite_scoring.write_record(record, evaluation.uri)
    if record["macro_auc"] is not None:
        evaluation.set_float_custom_property(MACRO_AUC_PROPERTY, record["macro_auc"])
