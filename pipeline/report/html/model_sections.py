"""The sections about the model: verdict and gates, metrics, labels x slices, fairness, the
baseline, decision thresholds and calibration."""

from __future__ import annotations

from typing import Any

from components import evaluation
from components.formatting import fmt_num
from pipeline.report.html.markup import badge, esc, fmt_ci, heat_style, html_table, intervals_of, noise_cell

TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("auc", "AUC"),
    ("auc_precision_recall", "PR-AUC"),
    ("f1_score", "F1 at 0.5"),
    ("precision", "precision at 0.5"),
    ("recall", "recall at 0.5"),
    ("calibration_gap", "calibration: mean prediction - mean label"),
)
AVERAGE_METRICS: tuple[tuple[str, str], ...] = (
    ("auc", "AUC"),
    ("auc_precision_recall", "PR-AUC"),
    ("precision", "precision@0.5"),
    ("recall", "recall@0.5"),
    ("f1_score", "F1@0.5"),
)


def verdict_section(report: dict[str, Any]) -> str:
    verdict = report["verdict"]
    kind = {"pushed": "pass", "blessed, not pushed": "fail", "not blessed": "fail"}.get(verdict["status"], "none")
    parts = [f'<div class="verdict {kind}" id="verdict">{esc(verdict["headline"])}</div>']
    rows = []
    for gate in verdict["gates"]:
        threshold = gate["threshold"]
        interval = gate.get("interval")
        rows.append([
            f'<b>{esc(gate["name"])}</b><br><span class="note">{esc(gate["title"])}</span>',
            badge(gate["passed"]),
            fmt_num(gate["value"]),
            "n/a" if not interval else f'{interval["lower"]:.3f} to {interval["upper"]:.3f}',
            "n/a" if threshold is None else f"{threshold:g}",
            noise_cell(gate.get("within_noise")),
            f'<td class="l">{esc(gate["summary"])}</td>',
        ])
    if rows:
        parts.append(html_table(["gate", "result", "value", "95% interval", "threshold", "within noise", "details"],
                            rows, left=1))
        parts.append('<p class="note">95% intervals by DeLong\'s method from the eval split\'s per-example scores '
                     "(paired for the change against the baseline; a fairness gap combines two independent groups). "
                     "Within noise: the interval of a number the gate judged straddles its threshold, so the verdict "
                     "could flip on another sample of the same size.</p>")
    settings = verdict.get("settings")
    if settings:
        parts.append('<p class="note">Gate settings: ' + ", ".join(
            f"<code>{esc(k)}={esc(v)}</code>" for k, v in sorted(settings.items())) + "</p>")
    facts = [f"Pushed model: <code>{esc(verdict['pushed_model'] or 'none')}</code>",
             f"Baseline (the model serving when this run evaluated): "
             f"<code>{esc(verdict['baseline_model'] or 'none')}</code>"
             + (f" ({esc(verdict['baseline_note'])})" if verdict.get("baseline_note") else "")]
    if verdict.get("incomplete_components"):
        facts.append("Components that did not complete: " + esc(", ".join(verdict["incomplete_components"])))
    parts.append('<p class="note">' + "<br>".join(facts) + "</p>")
    return "".join(parts)


def _metric(report: dict[str, Any], metric: str, label: str, slice_: str = "overall",
            model: str = evaluation.CANDIDATE) -> float | None:
    by_label = report["evaluation"]["metrics"].get(model, {}).get(slice_, {}).get(label, {})
    if metric in ("auc", "auc_precision_recall") and model != evaluation.DIFF:
        # TFMA reports AUC 0 (not NaN) for a slice without positives or without negatives.
        pn = _positives(report, label, slice_, model)
        if pn is not None and min(pn) == 0:
            return None
    if metric == "calibration_gap":
        p, y = by_label.get("mean_prediction"), by_label.get("mean_label")
        return None if p is None or y is None else p - y
    return by_label.get(metric)


def _positives(report: dict[str, Any], label: str, slice_: str,
               model: str = evaluation.CANDIDATE) -> tuple[int, int] | None:
    count = _metric(report, "example_count", evaluation.AGGREGATE, slice_, model)
    mean = _metric(report, "mean_label", label, slice_, model)
    if count is None or mean is None:
        return None
    pos = round(mean * count)
    return pos, round(count) - pos


def overall_section(report: dict[str, Any]) -> str:
    names = [lb["name"] for lb in report["labels"]]
    has_base = report["evaluation"].get("has_baseline")
    rows = []
    intervals = intervals_of(report)
    for kind in ("macro", "micro"):
        row = [f"{kind} average"]
        for metric, _ in AVERAGE_METRICS:
            name = evaluation.MACRO_AUC if (kind, metric) == ("macro", "auc") else f"{kind}_{metric}"
            value = _metric(report, name, evaluation.AGGREGATE)
            cell = fmt_num(value)
            if name == evaluation.MACRO_AUC:
                cell += fmt_ci(intervals.get("macro_auc"))
            if has_base:
                base = _metric(report, name, evaluation.AGGREGATE, model=evaluation.BASELINE)
                cell += f' <span class="note">(baseline {fmt_num(base)})</span>'
            row.append(cell)
        rows.append(row)
    out = ["<h3>Averages over labels (overall eval split)</h3>",
           html_table(["average", *(t for _, t in AVERAGE_METRICS)], rows)]
    definitions = {lb["name"]: lb["definition"] for lb in report["labels"]}
    rows = []
    decision = (report["evaluation"].get("decision") or {}).get("per_label") or {}
    for name in names:
        pn = _positives(report, name, "overall")
        auc = _metric(report, "auc", name)
        entry = decision.get(name) or {}
        tuned = (entry.get("choice") or {}).get("tuned", False)
        threshold = "n/a" if not entry else (f"<b>{entry['threshold']:.3f}</b>" if tuned
                                              else f'<span class="kept">{entry["threshold"]:.3f}</span>')
        rows.append([
            f"<b>{esc(name)}</b>", esc(definitions.get(name, "")),
            "n/a" if pn is None else f"{pn[0]} / {pn[1]}",
            f"<td{heat_style(auc)}>{fmt_num(auc)}{fmt_ci((intervals.get('label_auc') or {}).get(name))}</td>",
            fmt_num(_metric(report, "auc_precision_recall", name)),
            fmt_num(_metric(report, "precision", name)), fmt_num(_metric(report, "recall", name)),
            fmt_num(_metric(report, "f1_score", name)),
            threshold, _prf((entry.get("eval") or {}).get("at_threshold")) if entry else "n/a",
            fmt_num(_metric(report, "mean_label", name)), fmt_num(_metric(report, "mean_prediction", name)),
        ])
    out += ["<h3>Per label (overall eval split)</h3>",
            html_table(["label", "definition", "positives / negatives", "AUC [95% interval]", "PR-AUC", "precision@0.5",
                    "recall@0.5", "F1@0.5", "decision threshold", "P / R / F1 at threshold", "mean label",
                    "mean prediction"], rows, left=2),
            '<p class="note">Decision threshold: the label\'s own, tuned by the trainer (bold; how each was chosen, '
            "and its numbers out of fold, are in <a href=\"#thresholds\">Decision thresholds and calibration</a>); "
            "precision, recall and F1 at 0.5 are TFMA's, at the threshold computed here from the per-example "
            "scores.</p>"]
    if report["evaluation"].get("rows_error"):
        out.append(f'<p class="note">No intervals: {esc(report["evaluation"]["rows_error"])}</p>')
    return "".join(out)


def slice_tables(report: dict[str, Any]) -> str:
    names = [lb["name"] for lb in report["labels"]]
    slices = report["evaluation"]["slices"]
    settings = report["verdict"].get("settings") or {}
    min_count = settings.get("fairness_min_count", evaluation.GateSettings().fairness_min_count)
    out = [f'<p class="note">Rows are slices of the eval split, columns are labels. Grey italic cells: the slice has '
           f"fewer than {min_count} positives or negatives of that label, too few to trust (hover a cell for the "
           "counts). n/a: not computable (no positives or no negatives).</p>"]
    for metric, title in TABLE_METRICS:
        rows = []
        group = None
        for s in slices:
            if s["group"] != group:
                group = s["group"]
                rows.append(esc(group))
            row = [esc(s["name"]), fmt_num(s["example_count"], 0)]
            for name in names:
                value = _metric(report, metric, name, s["name"])
                pn = _positives(report, name, s["name"])
                small = pn is None or min(pn) < min_count
                tip = "" if pn is None else f' title="{pn[0]} positives / {pn[1]} negatives"'
                heat = ("" if metric == "calibration_gap" or small
                        else heat_style(value, 0.5 if "auc" in metric else 0.0))
                cls = "small" if small else ("na" if value is None else "")
                text = fmt_num(value) if metric != "calibration_gap" or value is None else f"{value:+.3f}"
                row.append(f'<td class="{cls}"{tip}{heat}>{text}</td>')
            rows.append(row)
        headers = ["slice", "examples", *(esc(n) for n in names)]
        out.append(f"<h3>{esc(title)}</h3>{html_table(headers, rows, left=1)}")
    return "".join(out)


def fairness_section(report: dict[str, Any]) -> str:
    gates = [g for g in report["verdict"]["gates"] if g["name"].startswith(evaluation.GATE_FAIRNESS_PREFIX)]
    if not gates:
        return '<p class="note">The fairness gate was off for this run.</p>'
    out = []
    for gate in gates:
        out.append(f"<h3>{esc(gate['title'])} {badge(gate['passed'])}</h3><p class='note'>{esc(gate['summary'])}</p>")
        groups: list[str] = []
        for detail in gate["details"]:
            for pair in detail.get("pairs", []):
                for g in pair["groups"]:
                    if g not in groups:
                        groups.append(g)
        rows = []
        for detail in gate["details"]:
            aucs: dict[str, tuple[float | None, int, int]] = {}
            for pair in detail.get("pairs", []):
                for i, g in enumerate(pair["groups"]):
                    aucs[g] = (pair["auc"][i], pair["positives"][i], pair["negatives"][i])
            cells = []
            for g in groups:
                if g in aucs:
                    auc, pos, neg = aucs[g]
                    cells.append(f'<td title="{pos} positives / {neg} negatives">{fmt_num(auc)} '
                                 f'<span class="note">({pos}/{neg})</span></td>')
                else:
                    cells.append('<td class="na">-</td>')
            status = detail["status"]
            gate_badge = {"passed": badge(True), "failed": badge(False)}.get(
                status, f'<span class="note">{esc(status)}</span>'
            )
            rows.append([f"<b>{esc(detail['label'])}</b>", *cells, fmt_num(detail.get("max_gap")), gate_badge])
        headers = ["label", *(f"AUC {esc(g)} (pos/neg)" for g in groups), "largest judged gap", "status"]
        out.append(html_table(headers, rows))
        judged_rows, other_rows = [], []
        for detail in gate["details"]:
            for pair in detail.get("pairs", []):
                verdict = badge(pair["passed"]) if pair["judged"] else '<span class="note">not judged</span>'
                if pair.get("excused"):
                    verdict += ' <span class="note">(not significant)</span>'
                interval = pair.get("interval")
                row = [esc(detail["label"]), esc(" vs ".join(pair["groups"])), fmt_num(pair["gap"]),
                       "n/a" if not interval else f'{interval["lower"]:+.3f} to {interval["upper"]:+.3f}',
                       noise_cell(pair.get("within_noise")),
                       f"{pair['positives'][0]}/{pair['negatives'][0]} vs {pair['positives'][1]}/"
                       f"{pair['negatives'][1]}", verdict]
                (judged_rows if pair["judged"] else other_rows).append(row)
        headers = ["label", "groups", "AUC gap", "95% interval (first minus second)", "within noise", "pos/neg",
                   "result"]
        if judged_rows:
            out.append("<p class='note'>Judged comparisons, with the interval of each gap:</p>"
                       + html_table(headers, judged_rows, left=2))
        if other_rows:
            out.append(f"<details><summary>Comparisons not judged ({len(other_rows)})</summary>"
                       + html_table(headers, other_rows, left=2) + "</details>")
    return "".join(out)


def baseline_section(report: dict[str, Any]) -> str:
    if not report["evaluation"].get("has_baseline"):
        why = report["verdict"].get("baseline_note") or "no model was serving"
        return f'<p class="note">No baseline: {esc(why)}.</p>'
    rows = []
    intervals = intervals_of(report)
    entries = [(evaluation.AGGREGATE, "<b>macro average</b>")] + [(lb["name"], f"<b>{esc(lb['name'])}</b>")
                                                                   for lb in report["labels"]]
    for label, title in entries:
        change = (intervals.get("macro_change") if label == evaluation.AGGREGATE
                  else (intervals.get("label_change") or {}).get(label))
        row = [title, "n/a" if not change else f'{change["lower"]:+.3f} to {change["upper"]:+.3f}']
        for base_metric in ("auc", "auc_precision_recall", "f1_score"):
            metric = base_metric
            if label == evaluation.AGGREGATE:
                metric = evaluation.MACRO_AUC if base_metric == "auc" else f"macro_{base_metric}"
            diff = _metric(report, metric, label, model=evaluation.DIFF)
            baseline = _metric(report, metric, label, model=evaluation.BASELINE)
            row += [fmt_num(_metric(report, metric, label)), fmt_num(baseline),
                    "n/a" if diff is None else f"<b>{diff:+.3f}</b>" if abs(diff) >= 0.02 else f"{diff:+.3f}"]
        rows.append(row)
    headers = ["label", "AUC change, 95% interval (paired)",
               *(f"{m} {w}" for m in ("AUC", "PR-AUC", "F1@0.5") for w in ("candidate", "baseline", "change"))]
    return (f'<p class="note">Baseline model: <code>{esc(report["verdict"]["baseline_model"])}</code>, evaluated on '
            "the same eval split. Changes of 0.02 or more are bold. The interval of an AUC change is paired: both "
            "models scored the same examples, so it is much narrower than two separate intervals.</p>"
            + html_table(headers, rows))


def _prf(metrics: dict[str, Any] | None) -> str:
    """precision / recall / F1 in one cell."""
    metrics = metrics or {}
    return " / ".join(fmt_num(metrics.get(k)) for k in ("precision", "recall", "f1"))


def decision_section(report: dict[str, Any]) -> str:
    decision = report["evaluation"].get("decision")
    if not decision:
        return ""
    out = []
    if not decision.get("available"):
        out.append('<p class="note">This model stores no decision thresholds (trained before they existed): every '
                   "label is judged at 0.5.</p>")
    else:
        out.append(
            '<p class="note">Each label\'s threshold was chosen by its policy on out-of-fold predictions of the '
            f"training images ({esc(decision.get('folds'))}-fold head fits on the cached embeddings, "
            f"{esc(decision.get('out_of_fold_examples'))} images); a label with fewer than "
            f"{esc(decision.get('min_positives'))} positives or negatives out of fold keeps 0.5. Probabilities are "
            f"calibrated ({esc(decision.get('calibration_method'))}) inside the exported model; "
            "<code>predict.py</code> applies these thresholds. Eval numbers are computed here from the eval "
            "split's per-example scores (TFMA's configuration is fixed before the thresholds exist).</p>"
        )
        if decision.get("skipped"):
            out.append(f'<p class="note"><b>Not tuned:</b> {esc(decision["skipped"])}</p>')
    rows = []
    for name, entry in decision["per_label"].items():
        choice = entry.get("choice") or {}
        tuned = choice.get("tuned", False)
        threshold = f"<b>{entry['threshold']:.3f}</b>" if tuned else f"{entry['threshold']:.3f}"
        reason = choice.get("reason") or ("stored in the model" if entry["stored"] else "no threshold stored: 0.5")
        ev = entry.get("eval") or {}
        cal = entry.get("calibration") or {}
        ece_eval = ev.get("calibration_error") or {}
        ece_oof = choice.get("calibration_error") or {}
        rows.append([
            f"<b>{esc(name)}</b>", esc(choice.get("policy", "n/a")),
            f'<td class="{"" if tuned else "kept"}">{threshold}</td>',
            f'<td class="l" style="max-width:200px">{esc(reason)}</td>',
            f"<b>{_prf(ev.get('at_threshold'))}</b>", _prf(ev.get("at_default")),
            _prf(choice.get("at_threshold")), _prf(choice.get("at_default")),
            esc(cal.get("method", "n/a")),
            f"{fmt_num(ece_oof.get('before'))} &rarr; {fmt_num(ece_oof.get('after'))}",
            f"{fmt_num(ece_eval.get('before'))} &rarr; {fmt_num(ece_eval.get('after'))}",
        ])
    headers = ["label", "policy", "threshold", "how it was chosen", "eval P / R / F1<br>at threshold",
               "eval<br>at 0.5", "out of fold<br>at threshold", "out of fold<br>at 0.5", "calibration",
               "calibration error<br>out of fold", "calibration error<br>eval"]
    out.append(html_table(headers, rows, left=1))
    out.append('<p class="note">P / R / F1: precision, recall and F1 when a score at or above the threshold counts '
               "as the label. Calibration error (before &rarr; after): the example-weighted mean gap between "
               "predicted probability and observed frequency over 10 probability bins; before = the weighted "
               "head's raw probabilities (positive-class weighting inflates rare labels), after = the exported "
               "model's. Out of fold, the calibration was fitted on the same predictions; on the eval split it "
               "was not.</p>")
    return "".join(out)

