"""Renders a report dict (pipeline.report.build) as one self-contained HTML page.

No network and no JavaScript: CSS is inline, plots are inline SVG drawn with matplotlib
(no pyplot, no GUI backend), thumbnails are ``data:`` URIs, and long lists fold into
<details>. The page opens from disk. Every string from the data (file names, paths, labels)
is escaped: it never becomes markup.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Iterable, Sequence
from typing import Any

from components import evaluation
from pipeline.report import on_device

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

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1f2328;background:#fff}
main{max-width:1400px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.5em;margin:.2em 0}
h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
h3{font-size:1.05em;margin-top:1.2em}
.meta{color:#57606a;font-size:.9em}
.verdict{border-radius:8px;padding:14px 18px;margin:14px 0;font-size:1.15em;font-weight:600}
.verdict.pass{background:#dafbe1;border:2px solid #1a7f37;color:#0f5323}
.verdict.fail{background:#ffebe9;border:2px solid #cf222e;color:#82071e}
.verdict.none{background:#f6f8fa;border:2px solid #8c959f;color:#424a53}
table{border-collapse:collapse;font-size:.85em;margin:6px 0 12px}
th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f6f8fa;font-weight:600}
td.l,th.l{text-align:left;white-space:normal}
tr.group th{background:#eaeef2;text-align:left}
td.small{color:#8c959f;font-style:italic}
td.na{color:#8c959f}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-size:.85em;font-weight:600;color:#fff}
.badge.pass{background:#1a7f37}.badge.fail{background:#cf222e}.badge.na{background:#8c959f}
.scroll{overflow-x:auto}
.note{color:#57606a;font-size:.88em;max-width:1000px}
svg{max-width:100%;height:auto}
details{margin:6px 0}summary{cursor:pointer;color:#0969da}
code{background:#f6f8fa;padding:0 3px;border-radius:3px}
.ci{color:#57606a;font-size:.85em}
.noise{background:#fff8c5;border-radius:4px;padding:0 4px}
.thumbs{display:flex;flex-wrap:wrap;gap:8px;margin:4px 0 10px}
.errs{display:grid;grid-template-columns:1fr 1fr;gap:4px 24px}
figure.err{margin:0;width:104px;font-size:.68em;color:#424a53}
figure.err img{width:64px;height:64px;object-fit:cover;display:block;border:1px solid #d0d7de}
figure.err figcaption{word-break:break-all;margin-top:2px}
td.kept,span.kept{color:#9a6700}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(interval: dict[str, Any] | None, signed: bool = False) -> str:
    """An interval as a small "[lower, upper]" (empty when there is none)."""
    if not interval:
        return ""
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f' <span class="ci">[{fmt.format(interval["lower"])}, {fmt.format(interval["upper"])}]</span>'


def _noise_cell(flag: bool | None) -> str:
    if flag is None:
        return '<td class="na">n/a</td>'
    return '<td><span class="noise">yes</span></td>' if flag else "<td>no</td>"


def _intervals(report: dict[str, Any]) -> dict[str, Any]:
    return report["evaluation"].get("intervals") or {}


def _badge(passed: bool | None) -> str:
    if passed is True:
        return '<span class="badge pass">PASS</span>'
    if passed is False:
        return '<span class="badge fail">FAIL</span>'
    return '<span class="badge na">N/A</span>'


def _heat(value: float | None, lo: float = 0.5, hi: float = 1.0) -> str:
    """Background from red (lo) to green (hi) for scores where higher is better."""
    if value is None:
        return ""
    t = min(max((value - lo) / (hi - lo), 0.0), 1.0)
    return f' style="background:hsl({int(120 * t)},70%,88%)"'


def _table(headers: Sequence[str], rows: Iterable[Sequence[str] | str], left: int = 1) -> str:
    """A table whose first ``left`` columns are left-aligned.

    Args:
      headers: header cells (HTML).
      rows: lists of cells (HTML; a cell starting with "<td" is used as is), or a string for a
        group header row spanning the table.
      left: how many leading columns are left-aligned.

    Returns:
      The table, in a horizontally scrolling div.
    """
    head = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(headers))
    body = []
    for row in rows:
        if isinstance(row, str):  # a group header spanning the table
            body.append(f'<tr class="group"><th class="l" colspan="{len(headers)}">{row}</th></tr>')
            continue
        cells = []
        for i, cell in enumerate(row):
            if cell.startswith("<td"):
                cells.append(cell)
            else:
                cells.append(f'<td class="l">{cell}</td>' if i < left else f"<td>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


# --- plots ---------------------------------------------------------------------------------------

def _svg(fig: Any, prefix: str) -> str:
    """Serializes a matplotlib Figure to an inline <svg> whose ids all start with ``prefix``.

    Several SVGs share one HTML document, so their ids (clip paths, markers) must not collide.
    """
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "facepipe"}):
        fig.savefig(buffer, format="svg")  # fixed margins: a "tight" bbox costs seconds per figure
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # drop the XML declaration and DOCTYPE (invalid inside HTML)
    # No URL may appear in the page: drop the RDF metadata block and the namespace declarations,
    # which HTML's parser supplies itself for inline SVG (xlink:href included).
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m.group(1)})", text)
    return re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m.group(1)}"', text)


def _small_multiples(
    label_names: Sequence[str], draw: Any, xlabel: str, ylabel: str, title: str, prefix: str
) -> str:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    cols = min(5, max(1, len(label_names)))
    rows = (len(label_names) + cols - 1) // cols
    height = 2.3 * rows + 0.7  # inches: panels plus room for the title and the x labels
    fig = Figure(figsize=(2.6 * cols, height))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    for i, ax in enumerate(axes.flat):
        if i >= len(label_names):
            ax.set_visible(False)
            continue
        draw(ax, label_names[i])
        ax.set_title(label_names[i], fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel(ylabel, fontsize=8)
        if i // cols == rows - 1:
            ax.set_xlabel(xlabel, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.5 / height, top=1 - 0.6 / height, wspace=0.12, hspace=0.3)
    return _svg(fig, prefix)


def curve_svgs(report: dict[str, Any]) -> dict[str, str]:
    """The ROC, PR and calibration small multiples (one panel per label) as inline SVG.

    Args:
      report: a report dict with evaluation.per_label curves.

    Returns:
      {"roc": svg, "pr": svg, "calibration": svg}; empty when there are no curves.
    """
    per_label = report["evaluation"].get("per_label") or {}
    names = [lb["name"] for lb in report["labels"] if lb["name"] in per_label]
    if not names:
        return {}
    models = ((evaluation.CANDIDATE, "-", "#0969da", "candidate"), (evaluation.BASELINE, "--", "#8c959f", "baseline"))

    def draw_roc(ax: Any, name: str) -> None:
        ax.plot([0, 1], [0, 1], ":", color="#bbbbbb", lw=0.8)
        for model, style, color, text in models:
            points = per_label[name].get(model, {}).get("roc")
            if points:
                ax.plot([0.0] + [p[0] for p in points] + [1.0], [0.0] + [p[1] for p in points] + [1.0],
                        style, color=color, lw=1.3, label=text)
        auc = report["evaluation"]["metrics"].get(evaluation.CANDIDATE, {}).get("overall", {}).get(name, {}).get("auc")
        ax.text(0.97, 0.04, f"AUC {_num(auc)}", ha="right", fontsize=7)

    def draw_pr(ax: Any, name: str) -> None:
        for model, style, color, text in models:
            points = per_label[name].get(model, {}).get("pr")
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], style, color=color, lw=1.3, label=text)

    def draw_calibration(ax: Any, name: str) -> None:
        ax.plot([0, 1], [0, 1], ":", color="#bbbbbb", lw=0.8)
        for model, style, color, text in models:
            buckets = per_label[name].get(model, {}).get("calibration")
            if buckets:
                ax.plot([b[4] for b in buckets], [b[3] for b in buckets], style, marker="o", ms=2.5, color=color,
                        lw=1.1, label=text)

    return {
        "roc": _small_multiples(names, draw_roc, "false positive rate", "true positive rate",
                                "ROC curves, overall eval split (solid: candidate, dashed: baseline)", "roc-"),
        "pr": _small_multiples(names, draw_pr, "recall", "precision",
                               "Precision-recall curves, overall eval split (solid: candidate, dashed: baseline)",
                               "pr-"),
        "calibration": _small_multiples(names, draw_calibration, "mean predicted probability", "fraction positive",
                                        "Calibration, 10 score buckets (dotted: perfect calibration)", "cal-"),
    }


# --- sections ------------------------------------------------------------------------------------


def _verdict_section(report: dict[str, Any]) -> str:
    verdict = report["verdict"]
    kind = {"pushed": "pass", "blessed, not pushed": "fail", "not blessed": "fail"}.get(verdict["status"], "none")
    parts = [f'<div class="verdict {kind}" id="verdict">{_e(verdict["headline"])}</div>']
    rows = []
    for gate in verdict["gates"]:
        threshold = gate["threshold"]
        interval = gate.get("interval")
        rows.append([
            f'<b>{_e(gate["name"])}</b><br><span class="note">{_e(gate["title"])}</span>',
            _badge(gate["passed"]),
            _num(gate["value"]),
            "n/a" if not interval else f'{interval["lower"]:.3f} to {interval["upper"]:.3f}',
            "n/a" if threshold is None else f"{threshold:g}",
            _noise_cell(gate.get("within_noise")),
            f'<td class="l">{_e(gate["summary"])}</td>',
        ])
    if rows:
        parts.append(_table(["gate", "result", "value", "95% interval", "threshold", "within noise", "details"],
                            rows, left=1))
        parts.append('<p class="note">95% intervals by DeLong\'s method from the eval split\'s per-example scores '
                     "(paired for the change against the baseline; a fairness gap combines two independent groups). "
                     "Within noise: the interval of a number the gate judged straddles its threshold, so the verdict "
                     "could flip on another sample of the same size.</p>")
    settings = verdict.get("settings")
    if settings:
        parts.append('<p class="note">Gate settings: ' + ", ".join(
            f"<code>{_e(k)}={_e(v)}</code>" for k, v in sorted(settings.items())) + "</p>")
    facts = [f"Pushed model: <code>{_e(verdict['pushed_model'] or 'none')}</code>",
             f"Baseline (the model serving when this run evaluated): "
             f"<code>{_e(verdict['baseline_model'] or 'none')}</code>"
             + (f" ({_e(verdict['baseline_note'])})" if verdict.get("baseline_note") else "")]
    if verdict.get("incomplete_components"):
        facts.append("Components that did not complete: " + _e(", ".join(verdict["incomplete_components"])))
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


def _overall_section(report: dict[str, Any]) -> str:
    names = [lb["name"] for lb in report["labels"]]
    has_base = report["evaluation"].get("has_baseline")
    rows = []
    intervals = _intervals(report)
    for kind in ("macro", "micro"):
        row = [f"{kind} average"]
        for metric, _ in AVERAGE_METRICS:
            name = evaluation.MACRO_AUC if (kind, metric) == ("macro", "auc") else f"{kind}_{metric}"
            value = _metric(report, name, evaluation.AGGREGATE)
            cell = _num(value)
            if name == evaluation.MACRO_AUC:
                cell += _ci(intervals.get("macro_auc"))
            if has_base:
                base = _metric(report, name, evaluation.AGGREGATE, model=evaluation.BASELINE)
                cell += f' <span class="note">(baseline {_num(base)})</span>'
            row.append(cell)
        rows.append(row)
    out = ["<h3>Averages over labels (overall eval split)</h3>",
           _table(["average", *(t for _, t in AVERAGE_METRICS)], rows)]
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
            f"<b>{_e(name)}</b>", _e(definitions.get(name, "")),
            "n/a" if pn is None else f"{pn[0]} / {pn[1]}",
            f"<td{_heat(auc)}>{_num(auc)}{_ci((intervals.get('label_auc') or {}).get(name))}</td>",
            _num(_metric(report, "auc_precision_recall", name)),
            _num(_metric(report, "precision", name)), _num(_metric(report, "recall", name)),
            _num(_metric(report, "f1_score", name)),
            threshold, _prf((entry.get("eval") or {}).get("at_threshold")) if entry else "n/a",
            _num(_metric(report, "mean_label", name)), _num(_metric(report, "mean_prediction", name)),
        ])
    out += ["<h3>Per label (overall eval split)</h3>",
            _table(["label", "definition", "positives / negatives", "AUC [95% interval]", "PR-AUC", "precision@0.5",
                    "recall@0.5", "F1@0.5", "decision threshold", "P / R / F1 at threshold", "mean label",
                    "mean prediction"], rows, left=2),
            '<p class="note">Decision threshold: the label\'s own, tuned by the trainer (bold; how each was chosen, '
            "and its numbers out of fold, are in <a href=\"#thresholds\">Decision thresholds and calibration</a>); "
            "precision, recall and F1 at 0.5 are TFMA's, at the threshold computed here from the per-example "
            "scores.</p>"]
    if report["evaluation"].get("rows_error"):
        out.append(f'<p class="note">No intervals: {_e(report["evaluation"]["rows_error"])}</p>')
    return "".join(out)


def _slice_tables(report: dict[str, Any]) -> str:
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
                rows.append(_e(group))
            row = [_e(s["name"]), _num(s["example_count"], 0)]
            for name in names:
                value = _metric(report, metric, name, s["name"])
                pn = _positives(report, name, s["name"])
                small = pn is None or min(pn) < min_count
                tip = "" if pn is None else f' title="{pn[0]} positives / {pn[1]} negatives"'
                heat = "" if metric == "calibration_gap" or small else _heat(value, 0.5 if "auc" in metric else 0.0)
                cls = "small" if small else ("na" if value is None else "")
                text = _num(value) if metric != "calibration_gap" or value is None else f"{value:+.3f}"
                row.append(f'<td class="{cls}"{tip}{heat}>{text}</td>')
            rows.append(row)
        headers = ["slice", "examples", *(_e(n) for n in names)]
        out.append(f"<h3>{_e(title)}</h3>{_table(headers, rows, left=1)}")
    return "".join(out)


def _fairness_section(report: dict[str, Any]) -> str:
    gates = [g for g in report["verdict"]["gates"] if g["name"].startswith(evaluation.GATE_FAIRNESS_PREFIX)]
    if not gates:
        return '<p class="note">The fairness gate was off for this run.</p>'
    out = []
    for gate in gates:
        out.append(f"<h3>{_e(gate['title'])} {_badge(gate['passed'])}</h3><p class='note'>{_e(gate['summary'])}</p>")
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
                    cells.append(f'<td title="{pos} positives / {neg} negatives">{_num(auc)} '
                                 f'<span class="note">({pos}/{neg})</span></td>')
                else:
                    cells.append('<td class="na">-</td>')
            status = detail["status"]
            badge = {"passed": _badge(True), "failed": _badge(False)}.get(
                status, f'<span class="note">{_e(status)}</span>'
            )
            rows.append([f"<b>{_e(detail['label'])}</b>", *cells, _num(detail.get("max_gap")), badge])
        out.append(_table(["label", *(f"AUC {_e(g)} (pos/neg)" for g in groups), "largest judged gap", "status"], rows))
        judged_rows, other_rows = [], []
        for detail in gate["details"]:
            for pair in detail.get("pairs", []):
                verdict = _badge(pair["passed"]) if pair["judged"] else '<span class="note">not judged</span>'
                if pair.get("excused"):
                    verdict += ' <span class="note">(not significant)</span>'
                interval = pair.get("interval")
                row = [_e(detail["label"]), _e(" vs ".join(pair["groups"])), _num(pair["gap"]),
                       "n/a" if not interval else f'{interval["lower"]:+.3f} to {interval["upper"]:+.3f}',
                       _noise_cell(pair.get("within_noise")),
                       f"{pair['positives'][0]}/{pair['negatives'][0]} vs {pair['positives'][1]}/"
                       f"{pair['negatives'][1]}", verdict]
                (judged_rows if pair["judged"] else other_rows).append(row)
        headers = ["label", "groups", "AUC gap", "95% interval (first minus second)", "within noise", "pos/neg",
                   "result"]
        if judged_rows:
            out.append("<p class='note'>Judged comparisons, with the interval of each gap:</p>"
                       + _table(headers, judged_rows, left=2))
        if other_rows:
            out.append(f"<details><summary>Comparisons not judged ({len(other_rows)})</summary>"
                       + _table(headers, other_rows, left=2) + "</details>")
    return "".join(out)


def _baseline_section(report: dict[str, Any]) -> str:
    if not report["evaluation"].get("has_baseline"):
        why = report["verdict"].get("baseline_note") or "no model was serving"
        return f'<p class="note">No baseline: {_e(why)}.</p>'
    rows = []
    intervals = _intervals(report)
    entries = [(evaluation.AGGREGATE, "<b>macro average</b>")] + [(lb["name"], f"<b>{_e(lb['name'])}</b>")
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
            row += [_num(_metric(report, metric, label)), _num(baseline),
                    "n/a" if diff is None else f"<b>{diff:+.3f}</b>" if abs(diff) >= 0.02 else f"{diff:+.3f}"]
        rows.append(row)
    headers = ["label", "AUC change, 95% interval (paired)",
               *(f"{m} {w}" for m in ("AUC", "PR-AUC", "F1@0.5") for w in ("candidate", "baseline", "change"))]
    return (f'<p class="note">Baseline model: <code>{_e(report["verdict"]["baseline_model"])}</code>, evaluated on '
            "the same eval split. Changes of 0.02 or more are bold. The interval of an AUC change is paired: both "
            "models scored the same examples, so it is much narrower than two separate intervals.</p>"
            + _table(headers, rows))


def _prf(metrics: dict[str, Any] | None) -> str:
    """precision / recall / F1 in one cell."""
    metrics = metrics or {}
    return " / ".join(_num(metrics.get(k)) for k in ("precision", "recall", "f1"))


def _decision_section(report: dict[str, Any]) -> str:
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
            f"training images ({_e(decision.get('folds'))}-fold head fits on the cached embeddings, "
            f"{_e(decision.get('out_of_fold_examples'))} images); a label with fewer than "
            f"{_e(decision.get('min_positives'))} positives or negatives out of fold keeps 0.5. Probabilities are "
            f"calibrated ({_e(decision.get('calibration_method'))}) inside the exported model; "
            "<code>predict.py</code> applies these thresholds. Eval numbers are computed here from the eval "
            "split's per-example scores (TFMA's configuration is fixed before the thresholds exist).</p>"
        )
        if decision.get("skipped"):
            out.append(f'<p class="note"><b>Not tuned:</b> {_e(decision["skipped"])}</p>')
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
            f"<b>{_e(name)}</b>", _e(choice.get("policy", "n/a")),
            f'<td class="{"" if tuned else "kept"}">{threshold}</td>',
            f'<td class="l" style="max-width:200px">{_e(reason)}</td>',
            f"<b>{_prf(ev.get('at_threshold'))}</b>", _prf(ev.get("at_default")),
            _prf(choice.get("at_threshold")), _prf(choice.get("at_default")),
            _e(cal.get("method", "n/a")),
            f"{_num(ece_oof.get('before'))} &rarr; {_num(ece_oof.get('after'))}",
            f"{_num(ece_eval.get('before'))} &rarr; {_num(ece_eval.get('after'))}",
        ])
    headers = ["label", "policy", "threshold", "how it was chosen", "eval P / R / F1<br>at threshold",
               "eval<br>at 0.5", "out of fold<br>at threshold", "out of fold<br>at 0.5", "calibration",
               "calibration error<br>out of fold", "calibration error<br>eval"]
    out.append(_table(headers, rows, left=1))
    out.append('<p class="note">P / R / F1: precision, recall and F1 when a score at or above the threshold counts '
               "as the label. Calibration error (before &rarr; after): the example-weighted mean gap between "
               "predicted probability and observed frequency over 10 probability bins; before = the weighted "
               "head's raw probabilities (positive-class weighting inflates rare labels), after = the exported "
               "model's. Out of fold, the calibration was fitted on the same predictions; on the eval split it "
               "was not.</p>")
    return "".join(out)


def _figure(example: dict[str, Any]) -> str:
    caption = (f"{_e(example['id'])}<br>score {example['score']:.3f}<br>true: "
               f"{_e(', '.join(example['labels']) or 'none')}")
    image = ""
    if example.get("thumbnail"):
        # The URI is built here from base64 text (no markup possible); the file name is escaped.
        image = f'<img src="{_e(example["thumbnail"])}" alt="{_e(example["id"])}" width="64" height="64">'
    return f'<figure class="err">{image}<figcaption>{caption}</figcaption></figure>'


def _errors_section(report: dict[str, Any]) -> str:
    errors = report["evaluation"].get("errors")
    if not errors:
        return '<p class="note">No per-example scores for this evaluation, so no error examples.</p>'
    out = ['<p class="note">Per label, the eval images the model got most confidently wrong at the label\'s '
           "decision threshold: false positives with the highest scores, false negatives with the lowest.</p>"]
    if not errors.get("images"):
        out.append('<p class="note">Images were left out of this report (<code>--no-report-images</code>); '
                   "file names and scores only.</p>")
    for name, entry in errors["per_label"].items():
        counts = entry["counts"]
        out.append(f"<h3>{_e(name)} <span class='note'>(threshold {entry['threshold']:.3f}: "
                   f"{counts['false_positives']} false positives of {counts['negatives']} negatives, "
                   f"{counts['false_negatives']} false negatives of {counts['positives']} positives)</span></h3>")
        columns = []
        for kind, title in (("false_positives", "Most confident false positives"),
                            ("false_negatives", "Most confident false negatives")):
            examples = entry[kind]
            if examples:
                columns.append(f"<div><p class='note'>{title}:</p><div class='thumbs'>"
                               + "".join(_figure(e) for e in examples) + "</div></div>")
            else:
                columns.append(f"<div><p class='note'>{title}: none.</p></div>")
        out.append(f"<div class='errs'>{''.join(columns)}</div>")
    return "".join(out)


def _co_prediction_section(report: dict[str, Any]) -> str:
    co = report["evaluation"].get("co_prediction") or {}
    rates = co.get("rates")
    if not rates:
        return ""
    names = [lb["name"] for lb in report["labels"]]
    rows = []
    for i, name in enumerate(names):
        row = [f"<b>{_e(name)}</b>"]
        for j in range(len(names)):
            value = rates[i][j] if i < len(rates) and j < len(rates[i]) else None
            shade = "" if value is None else f' style="background:rgba(9,105,218,{0.45 * value:.2f})"'
            row.append(f"<td{shade}>{_num(value, 2)}</td>")
        rows.append(row)
    return ("<h3>Multi-label confusion at 0.5</h3><p class='note'>Row: examples that have the label; column: the "
            "fraction of them predicted positive for that label (the diagonal is recall).</p>"
            + _table(["has label \\ predicted", *(_e(n) for n in names)], rows))


def _data_section(report: dict[str, Any]) -> str:
    data = report["data"]
    names = [lb["name"] for lb in report["labels"]]
    out = []
    facts = [f"Data folder: <code>{_e(data.get('data_dir') or 'unknown')}</code>"]
    if data.get("synthetic"):
        facts.append("<b>This is the bundled synthetic data set</b> (generated cartoon faces), not real photos.")
    if data.get("files_found") is not None:
        facts.append(f"Files found: {data['files_found']}")
    if data.get("spans"):
        facts.append(f"Spans read: {data['spans'][0]}-{data['spans'][1]}")
    out.append('<p class="note">' + "<br>".join(facts) + "</p>")
    splits = data.get("splits") or {}
    if splits:
        rows = []
        for split, info in splits.items():
            n = info["examples"]
            rows.append([f"<b>{_e(split)}</b>", str(n), *(
                f"{info['label_positives'].get(name, 0)} ({100 * info['label_positives'].get(name, 0) / n:.0f}%)"
                if n else "0" for name in names)])
        out += ["<h3>Examples and label frequencies per split</h3>",
                _table(["split", "examples", *(_e(n) for n in names)], rows)]
        group_rows = []
        for kind in ("gender", "race", "age"):
            groups = []
            for info in splits.values():
                for g in info["groups"].get(kind, {}):
                    if g not in groups:
                        groups.append(g)
            for g in groups:
                group_rows.append([_e(kind), _e(g), *(str(info["groups"].get(kind, {}).get(g, 0))
                                                       for info in splits.values())])
        out += ["<h3>Group sizes per split</h3>",
                _table(["attribute", "group", *(_e(s) for s in splits)], group_rows, left=2)]
    quarantined = data.get("quarantined") or {}
    total = quarantined.get("total")
    out.append(f"<h3>Quarantined files: {_e('n/a' if total is None else total)}</h3>")
    if quarantined.get("by_reason"):
        out.append(_table(["reason", "files"], [[_e(r), str(c)] for r, c in sorted(quarantined["by_reason"].items())]))
        files = quarantined.get("files") or []
        if files:
            listed = [[_e(f.get("path", "")), _e(f.get("reason", "")), _e(f.get("message", ""))] for f in files]
            out.append(f"<details><summary>Files ({len(files)} listed)</summary>"
                       + _table(["file", "reason", "message"], listed, left=3) + "</details>")
    anomalies = data.get("anomalies")
    out.append("<h3>Data validation (ExampleValidator)</h3>")
    if anomalies is None:
        out.append('<p class="note">ExampleValidator did not run.</p>')
    elif anomalies:
        out.append("<ul>" + "".join(f"<li>{_e(a)}</li>" for a in anomalies) + "</ul>")
    else:
        out.append("<p>No anomalies: every split matches the curated schema.</p>")
    drift = data.get("drift")
    if drift:
        out.append(f"<p>Label drift check: <b>{_e(drift.get('status', ''))}</b> {_e(drift.get('message', ''))}</p>")
    return "".join(out)


def render_html(report: dict[str, Any]) -> str:
    """Renders the whole page.

    Args:
      report: from pipeline.report.build.build_report (or the same structure).

    Returns:
      The HTML document as a string.
    """
    run_id = report["run"]["run_id"]
    sections = [
        f"<h1>facepipe evaluation report</h1><p class='meta'>Run <code>{_e(run_id)}</code> - generated "
        f"{_e(report['generated_at'])} - model <code>{_e(report['model'].get('uri') or 'none')}</code></p>",
        "<h2 id='gates'>Verdict and gates</h2>",
        _verdict_section(report),
    ]
    if report["evaluation"].get("available"):
        svgs = curve_svgs(report)
        sections += [
            "<h2 id='metrics'>Metrics</h2>", _overall_section(report),
            "<h2 id='slices'>Labels x slices</h2>", _slice_tables(report),
            "<h2 id='thresholds'>Decision thresholds and calibration</h2>", _decision_section(report),
            "<h2 id='fairness'>Fairness: AUC gaps between groups</h2>", _fairness_section(report),
            "<h2 id='curves'>ROC, precision-recall and calibration</h2>",
            *(f"<div>{svgs[k]}</div>" for k in ("roc", "pr", "calibration") if k in svgs),
            _co_prediction_section(report),
            "<h2 id='baseline'>Comparison with the baseline model</h2>", _baseline_section(report),
            "<h2 id='errors'>The faces behind the numbers: most confident errors</h2>", _errors_section(report),
            on_device.section_html(report.get("on_device")),
        ]
    else:
        sections.append("<p class='note'>No evaluation: the Evaluator did not complete in this run.</p>")
    sections += ["<h2 id='data'>Data</h2>", _data_section(report)]
    sections.append(
        "<p class='note'>Regenerate with <code>python -m pipeline.report --pipeline-root &lt;pipeline root&gt; "
        f"--run-id {_e(run_id)}</code>; the same numbers are in report.json beside this file.</p>"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>facepipe report {_e(run_id)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(sections)}</main></body></html>\n"
    )
