"""Renders a Markdown model card from the same report dict as the HTML page."""

from __future__ import annotations

import re
from typing import Any

from components import evaluation
from components.formatting import fmt_num as _num
from components.formatting import interval_bounds


def _code(text: Any) -> str:
    """A Markdown code span that no backtick inside ``text`` can end (paths are shown, never rendered)."""
    text = str(text).replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"`{text}`"


def _text(text: Any) -> str:
    """Plain text for Markdown: characters that start markup, links or HTML are backslash-escaped."""
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~-])", r"\\\1", str(text).replace("\n", " "))


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _value(report: dict[str, Any], metric: str, label: str, slice_: str = "overall") -> float | None:
    metrics = report["evaluation"]["metrics"].get(evaluation.CANDIDATE, {}).get(slice_, {})
    if metric in ("auc", "auc_precision_recall") and label != evaluation.AGGREGATE:
        # TFMA reports AUC 0 (not NaN) for a slice without positives or without negatives: undefined.
        count = metrics.get(evaluation.AGGREGATE, {}).get("example_count")
        mean = metrics.get(label, {}).get("mean_label")
        if count is not None and mean is not None and round(mean * count) in (0, round(count)):
            return None
    return metrics.get(label, {}).get(metric)


def _ci(interval: dict[str, Any] | None, signed: bool = False) -> str:
    bounds = interval_bounds(interval, signed)
    return f"{bounds[0]} to {bounds[1]}" if bounds else "n/a"


def _noise(flag: bool | None) -> str:
    return "n/a" if flag is None else "yes" if flag else "no"


def render_model_card(report: dict[str, Any]) -> str:
    """Renders the model card.

    Args:
      report: from pipeline.report.build.build_report.

    Returns:
      Markdown text: model details, intended use, data, labels, metrics (overall and per slice),
      fairness gaps, gates, limitations.
    """
    run_id = report["run"]["run_id"]
    verdict = report["verdict"]
    model = report["model"]
    data = report["data"]
    names = [lb["name"] for lb in report["labels"]]
    lines = [f"# Model card: facepipe face attributes (run {run_id})", ""]

    lines += ["## Model details", ""]
    lines.append(f"- Model: {_code(model.get('uri') or 'none')}"
                 + (f", input {model['image_size']}x{model['image_size']} RGB" if model.get("image_size") else ""))
    lines.append("- Architecture: an ImageNet-pretrained backbone (frozen unless fine-tuning was on) with a small "
                 "trained head; one sigmoid probability per label (multi-label).")
    lines.append(f"- Decision: **{verdict['status']}**. {verdict['headline']}")
    lines.append(f"- Pushed to: {_code(verdict['pushed_model'] or 'not pushed')}")
    lines.append(f"- Compared with: {_code(verdict['baseline_model'] or 'no baseline')}"
                 + (f" ({_text(verdict['baseline_note'])})" if verdict.get("baseline_note") else ""))
    lines.append(f"- Report generated {report['generated_at']}; regenerate with "
                 f"`python -m pipeline.report --pipeline-root <pipeline root> --run-id {run_id}`.")
    lines.append("")

    lines += ["## Intended use", ""]
    lines += [
        "- Estimating coarse, self-reported-style attributes (gender, race group, age thresholds) of a single "
        "aligned face crop, in aggregate: dataset analytics, demographic balance checks, research on fairness "
        "of face models.",
        "- Out of scope: decisions about individual people (access, hiring, policing, credit, identity), "
        "inferring how a person identifies, surveillance, anything on images unlike the training crops.",
        "",
    ]

    lines += ["## Data", ""]
    lines.append(f"- Data folder: {_code(data.get('data_dir') or 'unknown')}"
                 + (" (the bundled synthetic set)" if data.get("synthetic") else ""))
    splits = data.get("splits") or {}
    if splits:
        lines.append("- Examples: " + ", ".join(f"{s} {info['examples']}" for s, info in splits.items())
                     + " (80/20 split by a hash of the file name).")
    quarantined = data.get("quarantined") or {}
    if quarantined.get("total") is not None:
        reasons = ", ".join(f"{r} {c}" for r, c in sorted((quarantined.get("by_reason") or {}).items()))
        lines.append(f"- Quarantined files (not used): {quarantined['total']}" + (f" ({reasons})" if reasons else ""))
    anomalies = data.get("anomalies")
    if anomalies is not None:
        described = "; ".join(_text(a) for a in anomalies)
        lines.append(f"- Schema anomalies: {len(anomalies)}" + (f": {described}" if anomalies else ""))
    lines.append("")

    lines += ["## Labels", ""]
    rows = []
    for lb in report["labels"]:
        row = [f"`{lb['name']}`", lb["definition"]]
        for info in splits.values():
            n, pos = info["examples"], info["label_positives"].get(lb["name"], 0)
            row.append(f"{pos} ({100 * pos / n:.0f}%)" if n else "0")
        rows.append(row)
    lines += _table(["label", "definition", *(f"positives in {s}" for s in splits)], rows)

    lines += ["## Metrics", ""]
    if not report["evaluation"].get("available"):
        lines += ["The model was not evaluated in this run.", ""]
    else:
        intervals = report["evaluation"].get("intervals") or {}
        lines.append("Eval split, decision threshold 0.5 for precision, recall and F1 (the tuned thresholds are "
                     "below). AUC intervals: 95%, DeLong's method.")
        lines.append("")
        rows = [[f"`{n}`", _num(_value(report, "auc", n)), _ci((intervals.get("label_auc") or {}).get(n)),
                 _num(_value(report, "auc_precision_recall", n)),
                 _num(_value(report, "precision", n)), _num(_value(report, "recall", n)),
                 _num(_value(report, "f1_score", n)), _num(_value(report, "mean_label", n)),
                 _num(_value(report, "mean_prediction", n))] for n in names]
        for kind in ("macro", "micro"):
            auc_name = evaluation.MACRO_AUC if kind == "macro" else "micro_auc"
            agg = evaluation.AGGREGATE
            rows.append([f"**{kind} average**", _num(_value(report, auc_name, agg)),
                         _ci(intervals.get("macro_auc")) if kind == "macro" else "",
                         _num(_value(report, f"{kind}_auc_precision_recall", agg)),
                         _num(_value(report, f"{kind}_precision", agg)), _num(_value(report, f"{kind}_recall", agg)),
                         _num(_value(report, f"{kind}_f1_score", agg)), "", ""])
        lines += _table(["label", "AUC", "AUC 95% interval", "PR-AUC", "precision", "recall", "F1", "mean label",
                         "mean prediction"], rows)
        if intervals.get("macro_change"):
            lines.append(f"Change in macro AUC against the baseline model (paired 95% interval): "
                         f"{_ci(intervals['macro_change'], signed=True)}.")
            lines.append("")
        decision = report["evaluation"].get("decision") or {}
        if decision.get("per_label"):
            lines += ["### Decision thresholds", ""]
            if not decision.get("available"):
                lines += ["The model stores no thresholds: every label is judged at 0.5.", ""]
            else:
                lines += [f"Chosen per label on out-of-fold predictions of the training images "
                          f"({decision.get('folds')}-fold); probabilities are calibrated "
                          f"({decision.get('calibration_method')}). Eval split:", ""]
            rows = []
            for name, entry in decision["per_label"].items():
                choice = entry.get("choice") or {}
                ev = entry.get("eval") or {}
                at_t, at_half = ev.get("at_threshold") or {}, ev.get("at_default") or {}
                ece = ev.get("calibration_error") or {}
                rows.append([f"`{name}`", choice.get("policy", "n/a"), f"{entry['threshold']:.3f}",
                             "yes" if choice.get("tuned") else f"no: {choice.get('reason', 'not stored')}",
                             _num(at_t.get("precision")), _num(at_t.get("recall")), _num(at_t.get("f1")),
                             _num(at_half.get("precision")), _num(at_half.get("recall")), _num(at_half.get("f1")),
                             f"{_num(ece.get('before'))} -> {_num(ece.get('after'))}"])
            lines += _table(["label", "policy", "threshold", "tuned", "precision", "recall", "F1", "precision@0.5",
                             "recall@0.5", "F1@0.5", "calibration error before -> after"], rows)
        lines += ["### AUC per slice", ""]
        rows = [[s["name"], _num(s["example_count"], 0), *(_num(_value(report, "auc", n, s["name"])) for n in names)]
                for s in report["evaluation"]["slices"]]
        lines += _table(["slice", "examples", *names], rows)
        lines.append("n/a: the slice has no positives or no negatives of the label.")
        lines.append("")

    lines += ["## Fairness", ""]
    fairness = [g for g in verdict["gates"] if g["name"].startswith(evaluation.GATE_FAIRNESS_PREFIX)]
    if not fairness:
        lines += ["The fairness gate was off or did not run.", ""]
    for gate in fairness:
        result = "passed" if gate["passed"] else "FAILED" if gate["passed"] is False else "n/a"
        lines.append(f"**{gate['title']}**: {result} - {gate['summary']}")
        lines.append("")
        rows = []
        for detail in gate["details"]:
            judged = [p for p in detail.get("pairs", []) if p["judged"]]
            all_gaps = [p["gap"] for p in detail.get("pairs", []) if p["gap"] is not None]
            widest = max((p for p in judged if p["gap"] is not None), key=lambda p: p["gap"], default=None)
            rows.append([f"`{detail['label']}`", detail["status"], _num(detail.get("max_gap")),
                         "n/a" if widest is None else f"{' vs '.join(widest['groups'])}: "
                         f"{_ci(widest.get('interval'), signed=True)}",
                         _num(max(all_gaps) if all_gaps else None), f"{len(judged)}/{len(detail.get('pairs', []))}"])
        lines += _table(["label", "status", "largest judged gap", "its 95% interval (signed)",
                         "largest gap incl. small groups", "comparisons judged"], rows)

    lines += ["## Gates", ""]
    lines += _table(["gate", "result", "value", "95% interval", "threshold", "within noise", "details"], [
        [g["name"], "PASS" if g["passed"] else "FAIL" if g["passed"] is False else "n/a", _num(g["value"]),
         _ci(g.get("interval")), "n/a" if g["threshold"] is None else f"{g['threshold']:g}",
         _noise(g.get("within_noise")), g["summary"]] for g in verdict["gates"]])

    lines += ["## Limitations", ""]
    if data.get("synthetic"):
        lines.append("- **Trained and evaluated on the bundled synthetic data** (generated cartoon faces whose looks "
                     "are drawn from the labels). These numbers say nothing about real photographs.")
    else:
        lines.append("- The bundled default data set is synthetic; numbers from it say nothing about real photos. "
                     "This run read the data folder above.")
    lines += [
        "- Gender and race are the coarse categories of the UTKFace file-name convention (two genders, five race "
        "groups including \"other\"), annotated by others, not self-identified; they do not describe people well.",
        "- Age labels come from the same annotations and are cumulative thresholds; errors near a threshold are "
        "expected.",
        "- Small groups give noisy per-slice metrics; fairness comparisons with fewer than "
        f"{(verdict.get('settings') or {}).get('fairness_min_count', 'the configured number of')} positives or "
        "negatives in a group are reported but not judged.",
        "- Probabilities are calibrated out of fold on the training images (see the calibration error above); "
        "decision thresholds are tuned per label the same way, so they carry the sampling noise of the training "
        "split's positives (few for rare labels).",
        "",
    ]
    return "\n".join(lines)
