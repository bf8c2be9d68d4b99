"""The report's on-device model section: model.tflite beside the SavedModel.

Both models are scored on the same eval split: the SavedModel by the Evaluator (TFMA), model.tflite
by TFLiteEvaluator (components.tflite_scoring). The section shows their macro and per-label AUC side
by side and the ``tflite_auc`` gate; it is absent when the run exported no on-device model.
"""

from __future__ import annotations

import html
from typing import Any

from components import evaluation, tflite_gate
from components.formatting import fmt_num


def collect(
    tflite_evaluation_uri: str | None, gates_record: dict[str, Any] | None, results: evaluation.EvalResults | None
) -> dict[str, Any] | None:
    """The section's numbers, or None when the run has no TFLiteEvaluator output.

    Args:
      tflite_evaluation_uri: TFLiteEvaluator's output artifact URI, or None.
      gates_record: EvaluationGate's record (holds the tflite_auc gate), or None.
      results: the Evaluator's results (the SavedModel's AUCs), or None.
    """
    from components import tflite_scoring  # TensorFlow: the HTML renders without it

    record = tflite_scoring.read_record(tflite_evaluation_uri) if tflite_evaluation_uri else None
    if record is None:
        return None
    gate = next((g for g in (gates_record or {}).get("gates", []) if g["name"] == tflite_gate.GATE_TFLITE), None)
    per_label = [
        {
            "label": name,
            "tflite_auc": auc,
            "savedmodel_auc": results.value("auc", name) if results is not None else None,
        }
        for name, auc in record.get("per_label_auc", {}).items()
    ]
    return {
        "quantization": record.get("quantization"),
        "examples": record.get("examples"),
        "tflite_macro_auc": record.get("macro_auc"),
        "savedmodel_macro_auc": results.value(evaluation.MACRO_AUC) if results is not None else None,
        "per_label": per_label,
        "auc_method": record.get("auc_method"),
        "seconds": record.get("seconds"),
        "gate": gate,
    }


def _difference(tflite: float | None, savedmodel: float | None) -> float | None:
    return None if tflite is None or savedmodel is None else tflite - savedmodel


def section_html(on_device: dict[str, Any] | None) -> str:
    """The HTML section (empty string when there is no on-device model)."""
    if not on_device:
        return ""
    gate = on_device.get("gate") or {}
    verdict = {True: "pass", False: "FAIL", None: "n/a"}.get(gate.get("passed"), "n/a")
    rows = "".join(
        f"<tr><td>{html.escape(r['label'])}</td><td>{fmt_num(r['savedmodel_auc'], 4)}</td>"
        f"<td>{fmt_num(r['tflite_auc'], 4)}</td>"
        f"<td>{fmt_num(_difference(r['tflite_auc'], r['savedmodel_auc']), 4)}</td></tr>"
        for r in on_device["per_label"]
    )
    macro = (on_device.get("savedmodel_macro_auc"), on_device.get("tflite_macro_auc"))
    return (
        "<h2 id='on-device'>On-device model (model.tflite)</h2>"
        f"<p>model.tflite, <b>{html.escape(str(on_device.get('quantization')))}</b>, scored on the same "
        f"{on_device.get('examples')} eval examples as the SavedModel. Gate <code>{tflite_gate.GATE_TFLITE}</code>: "
        f"<b>{verdict}</b>: {html.escape(str(gate.get('summary', 'not judged')))}</p>"
        "<table><thead><tr><th>label</th><th>SavedModel AUC (TFMA)</th><th>model.tflite AUC</th>"
        "<th>difference</th></tr></thead><tbody>"
        f"<tr><td><b>macro average</b></td><td>{fmt_num(macro[0], 4)}</td><td>{fmt_num(macro[1], 4)}</td>"
        f"<td>{fmt_num(_difference(macro[1], macro[0]), 4)}</td></tr>{rows}</tbody></table>"
        f"<p class='note'>model.tflite AUC: {html.escape(str(on_device.get('auc_method')))}; the SavedModel's is "
        "TFMA's (1,000 thresholds).</p>"
    )
