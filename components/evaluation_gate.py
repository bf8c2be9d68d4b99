"""EvaluationGate: blesses a model only when every gate passes, and records each gate's result.

It sits between the Evaluator and Pusher. The Evaluator computes the metrics and checks TFMA's
thresholds; this component judges the gates (components.evaluation.gates.evaluate_gates), which adds
the one rule TFMA cannot express (fairness comparisons between groups too small to judge are
listed, not failed) and works around TFMA 0.47 reporting every thresholded cross-slice spec as
missing. It writes a ModelBlessing like the Evaluator's (``blessed``, ``current_model``,
``current_model_id`` custom properties, a BLESSED or NOT_BLESSED file) plus ``gates.json``.
Pusher and the baseline resolver read this blessing, not the Evaluator's.

From the Evaluator's per-example rows it computes 95% DeLong intervals of every gated number; each
gate records its interval and whether its verdict is within noise, and the record keeps all the
intervals under ``uncertainty`` (for the report, the model card and the index of runs).
"""

# No "from __future__ import annotations": the TFX component decorator reads real annotations.

import json
import os
from typing import Any

import tensorflow as tf
from tfx import v1 as tfx

from components import baseline as serving_baseline
from components import eval_table, tflite_gate, tflite_scoring, uncertainty
from components.evaluation.eval_config import gates_from_eval_config
from components.evaluation.gates import GATES_FILE, evaluate_gates, is_blessed
from components.evaluation.results import load_eval_results
from components.evaluation.settings import GateSettings
from components.trainer.tflite_export import TFLITE_FILE

BLESSED_FILE, NOT_BLESSED_FILE = "BLESSED", "NOT_BLESSED"


def intervals_of(table: eval_table.EvalTable, fairness_groups: dict[str, tuple[str, ...]]) -> uncertainty.GateIntervals:
    """DeLong intervals of every gated number from an evaluation's per-example rows."""
    return uncertainty.gate_intervals(
        table.label_names,
        table.labels,
        table.predictions[eval_table.CANDIDATE],
        table.predictions.get(eval_table.BASELINE),
        {f: table.groups[f] for f in fairness_groups if f in table.groups},
    )


def judge(
    evaluation_uri: str,
    label_names: list[str],
    fairness_min_count: int,
    require_significance: bool = False,
    baseline_note: str | None = None,
) -> dict[str, Any]:
    """Judges every gate on one Evaluator output, against the thresholds that Evaluator used.

    Args:
      evaluation_uri: the ModelEvaluation artifact's URI (holds eval_config.json).
      label_names: the model's labels in output order.
      fairness_min_count: see GateSettings.
      require_significance: see GateSettings.
      baseline_note: why the baseline is what it is (components.baseline).

    Returns:
      A JSON-able record: blessed, gates (one dict per gate, with its interval and whether it
      is within noise), settings, fairness_groups, label_names, has_baseline,
      tfma_validation_ok, uncertainty (GateIntervals.to_dict), eval_examples.

    Raises:
      ValueError: the Evaluator wrote no per-example rows (its config lacks EvalRows).
    """
    from tensorflow_model_analysis.writers import eval_config_writer

    eval_config = eval_config_writer.load_eval_run(evaluation_uri)[0]
    settings, groups, exempt = gates_from_eval_config(
        eval_config, label_names, fairness_min_count, require_significance
    )
    results = load_eval_results(evaluation_uri, label_names)
    table = eval_table.load_eval_table(evaluation_uri, label_names)
    intervals = intervals_of(table, groups)
    gate_results = evaluate_gates(results, settings, groups, exempt, intervals, baseline_note=baseline_note)
    return {
        "blessed": is_blessed(gate_results),
        "gates": [g.to_dict() for g in gate_results],
        "settings": json.loads(settings.to_json()),
        "fairness_groups": {k: list(v) for k, v in groups.items()},
        "label_names": list(label_names),
        "has_baseline": results.has_baseline,
        "tfma_validation_ok": results.validation_ok,
        "uncertainty": intervals.to_dict(),
        "eval_examples": len(table),
    }


def model_label_names(model_uri: str) -> list[str] | None:
    """The label names a Trainer model stored in assets.extra/labels.json (None if absent)."""
    path = os.path.join(model_uri, "Format-Serving", "assets.extra", "labels.json")
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return list(json.load(f)["label_names"])


@tfx.dsl.components.component
def EvaluationGate(
    evaluation_result: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelEvaluation],
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model],
    blessing: tfx.dsl.components.OutputArtifact[tfx.types.standard_artifacts.ModelBlessing],
    label_names: tfx.dsl.components.Parameter[str],
    baseline: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model] = None,
    fairness_min_count: tfx.dsl.components.Parameter[int] = GateSettings.fairness_min_count,
    require_significance: tfx.dsl.components.Parameter[int] = 0,
    code_version: tfx.dsl.components.Parameter[str] = "",
    tflite_evaluation: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.ModelEvaluation] = None,
    max_tflite_auc_drop: tfx.dsl.components.Parameter[float] = tflite_gate.DEFAULT_MAX_DROP,
) -> None:
    """Writes a ModelBlessing that is positive only when every gate passed.

    Args:
      evaluation_result: the Evaluator's output.
      model: the candidate model (its id and URI go into the blessing).
      blessing: the output blessing.
      label_names: JSON list of the model's labels, in output order.
      baseline: ServingBaseline's output (the model serving now, or empty), for the gate record.
      fairness_min_count: positives and negatives a group needs for its fairness comparisons to be judged.
      require_significance: 1: the regression and fairness gates fail only on significant differences
        (GateSettings.require_significance); an int, as TFX parameters have no bool.
      code_version: fingerprint of the gate's code, so that caching sees code changes.
      tflite_evaluation: TFLiteEvaluator's output when the model has a model.tflite (tflite_auc gate).
      max_tflite_auc_drop: see components.tflite_gate.

    Raises:
      ValueError: the model's own label list differs from label_names.
    """
    del code_version  # only part of the cache key
    names = json.loads(label_names)
    stored = model_label_names(model.uri)
    if stored is not None and stored != names:
        raise ValueError(f"the model's labels {stored} differ from the pipeline's {names}")
    note = baseline.get_string_custom_property(serving_baseline.NOTE_PROPERTY) if baseline is not None else None
    record = judge(evaluation_result.uri, names, fairness_min_count, bool(require_significance), baseline_note=note)
    tflite_record = tflite_scoring.read_record(tflite_evaluation.uri) if tflite_evaluation is not None else None
    has_tflite = tf.io.gfile.exists(os.path.join(model.uri, "Format-Serving", TFLITE_FILE))
    record = tflite_gate.apply(record, tflite_gate.tflite_gate(
        tflite_record, tflite_gate.savedmodel_macro_auc(record), max_tflite_auc_drop, has_tflite
    ))
    if baseline is not None:
        record["baseline"] = {
            "version": baseline.get_int_custom_property(serving_baseline.VERSION_PROPERTY) or None,
            "path": baseline.get_string_custom_property(serving_baseline.PATH_PROPERTY) or None,
            "note": note,
        }
    record["model_uri"] = model.uri
    record["evaluation_uri"] = evaluation_result.uri
    tf.io.gfile.makedirs(blessing.uri)
    with tf.io.gfile.GFile(os.path.join(blessing.uri, GATES_FILE), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    with tf.io.gfile.GFile(os.path.join(blessing.uri, BLESSED_FILE if record["blessed"] else NOT_BLESSED_FILE), "w"):
        pass
    blessing.set_string_custom_property("current_model", model.uri)
    blessing.set_int_custom_property("current_model_id", model.id)
    blessing.set_int_custom_property("blessed", 1 if record["blessed"] else 0)
    failed = [g["name"] for g in record["gates"] if g["passed"] is False]
    blessing.set_string_custom_property("failed_gates", ",".join(failed))
