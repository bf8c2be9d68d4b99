"""The ``tflite_auc`` gate: the on-device model may not be much worse than the SavedModel.

model.tflite is scored by TFLiteEvaluator (components.tflite_scoring) on the same eval split the
Evaluator scores the SavedModel on. The gate fails when its macro AUC is more than
``max_drop`` below the SavedModel's (default 0.01, PipelineConfig.max_tflite_auc_drop), and
when a model carries a model.tflite that nothing scored: an on-device model is never pushed
ungated.

Why 0.01: both numbers come from the same images, so sampling noise mostly cancels; what is
left is the conversion (float: probabilities within ~1e-6, AUC equal to 1e-4), int8
quantization (the loss this gate exists to catch), and the two AUC methods (TFMA's 1,000
thresholds against exact ranks: below 1e-3). Half the 0.02 the regression gate allows
against the model serving now: a device model should not cost more than a retrain may.
"""

from __future__ import annotations

from typing import Any

from components.evaluation.gates import GATE_MACRO, GateResult
from components.formatting import fmt_num

GATE_TFLITE = "tflite_auc"
TITLE = "on-device model (model.tflite) macro AUC vs the SavedModel"
DEFAULT_MAX_DROP = 0.01


def tflite_gate(
    record: dict[str, Any] | None, savedmodel_macro_auc: float | None, max_drop: float, model_has_tflite: bool
) -> GateResult | None:
    """Judges model.tflite against the SavedModel.

    Args:
      record: TFLiteEvaluator's record (tflite_scoring.score), or None when none ran.
      savedmodel_macro_auc: the Evaluator's macro AUC of the SavedModel (overall slice).
      max_drop: the largest allowed SavedModel - TFLite macro AUC difference.
      model_has_tflite: whether the candidate's folder holds model.tflite.

    Returns:
      The gate's result; None when there is no on-device model at all (nothing to judge).
    """
    if record is None:
        if not model_has_tflite:
            return None
        return GateResult(
            GATE_TFLITE, TITLE, False, max_drop, None,
            "the model holds model.tflite, but no TFLiteEvaluator scored it: not pushed ungated",
        )
    tflite_auc = record.get("macro_auc")
    details = [{
        "quantization": record.get("quantization"),
        "examples": record.get("examples"),
        "tflite_macro_auc": tflite_auc,
        "savedmodel_macro_auc": savedmodel_macro_auc,
        "per_label_auc": record.get("per_label_auc"),
    }]
    if tflite_auc is None or savedmodel_macro_auc is None:
        return GateResult(
            GATE_TFLITE, TITLE, False, max_drop, None,
            f"cannot compare: TFLite macro AUC {fmt_num(tflite_auc, 4)}, "
            f"SavedModel macro AUC {fmt_num(savedmodel_macro_auc, 4)}",
            details,
        )
    drop = savedmodel_macro_auc - tflite_auc
    passed = drop <= max_drop
    return GateResult(
        GATE_TFLITE, TITLE, passed, max_drop, drop,
        f"model.tflite ({record.get('quantization')}) macro AUC {fmt_num(tflite_auc, 4)} vs SavedModel "
        f"{fmt_num(savedmodel_macro_auc, 4)}: {'drop' if drop >= 0 else 'gain'} {abs(drop):.4f} "
        f"{'<=' if passed else '>'} {max_drop:g}",
        details,
    )


def apply(record: dict[str, Any], gate: GateResult | None) -> dict[str, Any]:
    """Adds the gate to an EvaluationGate record (evaluation_gate.judge's) and re-decides the blessing."""
    if gate is None:
        return record
    record["gates"] = [*record["gates"], gate.to_dict()]
    record["blessed"] = bool(record["blessed"]) and gate.passed is not False
    return record


def savedmodel_macro_auc(record: dict[str, Any]) -> float | None:
    """The SavedModel's macro AUC as the macro-AUC gate judged it (the Evaluator's, overall slice)."""
    return next((g["value"] for g in record["gates"] if g["name"] == GATE_MACRO), None)
