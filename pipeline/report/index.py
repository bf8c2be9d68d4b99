"""The history of runs: <pipeline root>/reports/index.html, one row per run and a trend plot.

Every local run updates it, failed and refused runs included; ``python -m pipeline.report
--index`` rebuilds it from ML Metadata. Each row: date, data folder and span, example count,
macro AUC with its 95% interval, the verdict and the gate (or component) that failed, the
pushed version and a link to the run's report. Above the table an inline SVG plots macro AUC
(with its interval) and every label's AUC over the runs.

Each run's row is also kept as ``reports/<run id>/index_entry.json``, so a local run computes
only its own row; a rebuild recomputes every row from ML Metadata and the artifacts.
"""

from __future__ import annotations

import datetime
import html
import json
import os
import urllib.parse
from typing import Any

from ml_metadata.metadata_store import metadata_store

from components.formatting import fmt_num
from pipeline import mlmd, run_summary
from pipeline import pipeline as pipeline_def
from pipeline.report import build
from pipeline.report.html import CSS
from pipeline.report.html.markup import fmt_ci

INDEX_HTML = "index.html"
ENTRY_JSON = "index_entry.json"
_COLORS = ("#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#e16f24", "#1b7c83", "#bf3989", "#6e7781",
           "#4d2d00")


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def run_entry(store: metadata_store.MetadataStore, run_id: str, pipeline_root: str,
              error: str | None = None) -> dict[str, Any]:
    """One run's row of the index, read from ML Metadata and the artifacts it recorded.

    Args:
      store: the ML Metadata store.
      run_id: the run.
      pipeline_root: where reports/<run id>/report.html would be.
      error: the run's error, when the caller knows it (a local run); ML Metadata keeps no message.

    Returns:
      A JSON-able dict: run_id, started (UTC ISO time), data_dir, spans, examples, eval_examples,
      macro_auc, macro_auc_interval, label_auc, status, headline, failed_gates, failed_components,
      error, pushed_version, pushed_model, report (path relative to reports/, or None).
    """
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    entry: dict[str, Any] = {
        "run_id": run_id, "started": None, "data_dir": None, "spans": None, "examples": None, "eval_examples": None,
        "macro_auc": None, "macro_auc_interval": None, "label_auc": {}, "status": "not started",
        "headline": "no component of this run was recorded in ML Metadata", "failed_gates": [],
        "failed_components": [], "error": error, "pushed_version": None, "pushed_model": None, "report": None,
    }
    report_html = os.path.join(build.report_dir(pipeline_root, run_id), build.REPORT_HTML)
    if os.path.exists(report_html):
        entry["report"] = f"{urllib.parse.quote(run_id)}/{build.REPORT_HTML}"
    if context is None:
        entry["started"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        return entry
    entry["started"] = datetime.datetime.fromtimestamp(
        context.create_time_since_epoch / 1000, datetime.timezone.utc
    ).isoformat(timespec="seconds")
    run = run_summary.load_run(store, run_id)
    summary, states, gates_record = run.summary, run.states, run.gates_record
    verdict = build.summarize_verdict(summary, gates_record, states)
    intervals = (gates_record or {}).get("uncertainty") or {}
    pushed = summary.get("pushed_model")
    entry.update(
        data_dir=mlmd.execution_property(store, run_id, pipeline_def.EXAMPLE_GEN, "input_base"),
        spans=summary.get("spans"),
        examples=summary.get("ingested"),
        eval_examples=(summary.get("ingested_by_split") or {}).get("eval"),
        macro_auc=summary.get("macro_auc"),
        macro_auc_interval=intervals.get("macro_auc"),
        label_auc=summary.get("per_label_auc") or {},
        status=verdict["status"],
        headline=verdict["headline"],
        failed_gates=[g["name"] for g in verdict["gates"] if g["passed"] is False],
        failed_components=[n for n, s in states.items() if s not in ("complete", "cached")],
        pushed_model=pushed,
        pushed_version=os.path.basename(pushed.rstrip("/")) if pushed else None,
    )
    return entry


def _entry_path(pipeline_root: str, run_id: str) -> str:
    return os.path.join(build.report_dir(pipeline_root, run_id), ENTRY_JSON)


def save_entry(pipeline_root: str, entry: dict[str, Any]) -> None:
    """Keeps a run's row beside its report (reports/<run id>/index_entry.json)."""
    path = _entry_path(pipeline_root, entry["run_id"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(entry, f, indent=1, allow_nan=False)


def collect_entries(store: metadata_store.MetadataStore, pipeline_root: str, pipeline_name: str | None = None,
                    rebuild: bool = False, fresh: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every run's row, oldest first.

    Args:
      store: the ML Metadata store.
      pipeline_root: the pipeline root (reports/ lives there).
      pipeline_name: only runs of this pipeline (None: all).
      rebuild: recompute every row from ML Metadata (else reuse the rows kept beside the reports).
      fresh: rows just computed by the caller (run id -> row), used as they are.

    Returns:
      The rows, sorted by start time; rows kept for runs that ML Metadata does not know (a run
      that failed before any component ran) are included.
    """
    fresh = dict(fresh or {})
    ids = mlmd.run_ids(store, pipeline_name)
    entries = {}
    for run_id in ids:
        if run_id in fresh:
            entries[run_id] = fresh[run_id]
            continue
        path = _entry_path(pipeline_root, run_id)
        if not rebuild and os.path.exists(path):
            with open(path) as f:
                entries[run_id] = json.load(f)
            continue
        kept_error = None
        if os.path.exists(path):  # a rebuild keeps what ML Metadata cannot know: the run's error message
            with open(path) as f:
                kept_error = json.load(f).get("error")
        entries[run_id] = run_entry(store, run_id, pipeline_root, kept_error)
        save_entry(pipeline_root, entries[run_id])
    for run_id, entry in fresh.items():
        entries.setdefault(run_id, entry)
    return sorted(entries.values(), key=lambda e: (e["started"] or "", e["run_id"]))


def trend_svg(entries: list[dict[str, Any]], label_names: list[str], width: int = 1000, height: int = 340) -> str:
    """Inline SVG: macro AUC (thick, with its 95% interval) and each label's AUC (thin) over the runs.

    Runs without an AUC (failed before evaluation) keep their place on the x axis, without a point.
    """
    left, right, top, bottom = 48, 220, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [e["macro_auc"] for e in entries if e["macro_auc"] is not None]
    values += [v for e in entries for v in (e.get("label_auc") or {}).values() if v is not None]
    values += [e["macro_auc_interval"]["lower"] for e in entries if e.get("macro_auc_interval")]
    low = min([0.5, *values])
    low = max(0.0, (int(low * 10) / 10))
    n = len(entries)

    def x(i: int) -> float:
        return left + (plot_w * (i + 0.5) / n if n else 0)

    def y(v: float) -> float:
        return top + plot_h * (1 - (v - low) / (1 - low))

    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             'aria-label="AUC over the runs">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#d0d7de"/>']
    tick = low
    while tick <= 1.0001:
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     'stroke="#eaeef2"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end">{tick:.1f}</text>')
        tick = round(tick + 0.1, 10)
    for i in range(n):
        parts.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 16}" font-size="11" text-anchor="middle">'
                     f'{i + 1}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" font-size="11" text-anchor="middle">'
                 "run (oldest first; numbers as in the table)</text>")

    def polyline(points: list[tuple[float, float] | None], color: str, stroke: float) -> list[str]:
        # Runs without an AUC keep their tick but no point; the line joins the evaluated runs around them.
        kept = [p for p in points if p is not None]
        if len(kept) < 2:
            return []
        coords = " ".join(f"{a:.1f},{b:.1f}" for a, b in kept)
        return [f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="{stroke}"/>']

    for k, name in enumerate(label_names):
        color = _COLORS[k % len(_COLORS)]
        points = [None if (v := (e.get("label_auc") or {}).get(name)) is None else (x(i), y(v))
                  for i, e in enumerate(entries)]
        parts += polyline(points, color, 1.2)
        for i, p in enumerate(points):
            if p is not None:
                parts.append(f'<circle cx="{p[0]:.1f}" cy="{p[1]:.1f}" r="2.2" fill="{color}"><title>'
                             f'{_e(name)}, run {i + 1}: {entries[i]["label_auc"][name]:.3f}</title></circle>')
        ly = top + 14 + 16 * (k + 1)
        parts.append(f'<line x1="{left + plot_w + 12}" x2="{left + plot_w + 30}" y1="{ly - 4}" y2="{ly - 4}" '
                     f'stroke="{color}" stroke-width="1.5"/>')
        parts.append(f'<text x="{left + plot_w + 34}" y="{ly}" font-size="11">{_e(name)}</text>')
    macro_points = [None if e["macro_auc"] is None else (x(i), y(e["macro_auc"])) for i, e in enumerate(entries)]
    parts += polyline(macro_points, "#1f2328", 3)
    for i, (entry, p) in enumerate(zip(entries, macro_points, strict=True)):
        if p is None:
            continue
        iv = entry.get("macro_auc_interval")
        if iv:
            parts.append(f'<line x1="{p[0]:.1f}" x2="{p[0]:.1f}" y1="{y(iv["lower"]):.1f}" y2="{y(iv["upper"]):.1f}" '
                         'stroke="#1f2328" stroke-width="1.5"/>')
            for bound in (iv["lower"], iv["upper"]):  # caps, so a narrow interval still shows
                parts.append(f'<line x1="{p[0] - 7:.1f}" x2="{p[0] + 7:.1f}" y1="{y(bound):.1f}" y2="{y(bound):.1f}" '
                             'stroke="#1f2328" stroke-width="1.5"/>')
        parts.append(f'<circle cx="{p[0]:.1f}" cy="{p[1]:.1f}" r="4" fill="#1f2328"><title>macro AUC, run {i + 1}: '
                     f'{entry["macro_auc"]:.3f}</title></circle>')
    parts.append(f'<line x1="{left + plot_w + 12}" x2="{left + plot_w + 30}" y1="{top + 10}" y2="{top + 10}" '
                 'stroke="#1f2328" stroke-width="3"/>')
    parts.append(f'<text x="{left + plot_w + 34}" y="{top + 14}" font-size="11" font-weight="600">macro AUC '
                 "(bar: 95% interval)</text>")
    parts.append("</svg>")
    return "".join(parts)


def _verdict_cell(entry: dict[str, Any]) -> str:
    status = entry["status"]
    cls = {"pushed": "pass", "not blessed": "fail", "blessed, not pushed": "fail"}.get(status, "none")
    text = f'<span class="badge {cls}">{_e(status)}</span>'
    if entry.get("failed_gates"):
        text += "<br>failed gate: " + _e(", ".join(entry["failed_gates"]))
    if entry.get("failed_components"):
        text += "<br>stopped at: " + _e(", ".join(entry["failed_components"]))
    if entry.get("error"):
        text += f'<br><span class="note">{_e(entry["error"])}</span>'
    return text


def render_index(entries: list[dict[str, Any]], pipeline_root: str) -> str:
    """The index page (newest run first; the plot oldest first), self-contained like the reports."""
    label_names: list[str] = []
    for entry in entries:
        for name in entry.get("label_auc") or {}:
            if name not in label_names:
                label_names.append(name)
    rows = []
    for number, entry in reversed(list(enumerate(entries, start=1))):
        macro = fmt_num(entry["macro_auc"]) + fmt_ci(entry.get("macro_auc_interval"))
        spans = entry.get("spans")
        data = _e(entry.get("data_dir") or "unknown")
        if spans:
            data += f"<br>span {spans[0]}" if spans[0] == spans[1] else f"<br>spans {spans[0]}-{spans[1]}"
        examples = "n/a" if entry.get("examples") is None else f"{entry['examples']:,}"
        if entry.get("eval_examples") is not None:
            examples += f' <span class="note">(eval {entry["eval_examples"]:,})</span>'
        run = _e(entry["run_id"])
        link = f'<a href="{_e(entry["report"])}">{run}</a>' if entry.get("report") else run
        rows.append(f'<tr data-run="{run}"><td>{number}</td><td class="l">{_e(entry.get("started") or "")}</td>'
                    f'<td class="l">{link}</td><td class="l">{data}</td><td>{examples}</td><td>{macro}</td>'
                    f'<td class="l">{_verdict_cell(entry)}</td><td>{_e(entry.get("pushed_version") or "-")}</td></tr>')
    table = ('<div class="scroll"><table id="runs"><thead><tr><th>#</th><th class="l">started (UTC)</th>'
             '<th class="l">run (report)</th><th class="l">data</th><th>examples</th><th>macro AUC [95% interval]</th>'
             '<th class="l">verdict</th><th>pushed version</th></tr></thead><tbody>' + "".join(rows)
             + "</tbody></table></div>")
    generated = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>facepipe runs</title><style>{CSS}</style></head><body><main>"
        f"<h1>facepipe runs</h1><p class='meta'>Pipeline root <code>{_e(pipeline_root)}</code> - {len(entries)} "
        f"run(s) - generated {_e(generated)}</p>"
        "<h2>AUC over the runs (eval split)</h2>"
        + (trend_svg(entries, label_names) if entries else "<p class='note'>No runs yet.</p>")
        + "<h2>Runs, newest first</h2>" + table
        + "<p class='note'>Rebuild from ML Metadata with <code>python -m pipeline.report --pipeline-root "
        "&lt;pipeline root&gt; --index</code>.</p></main></body></html>\n"
    )


def write_index(store: metadata_store.MetadataStore, pipeline_root: str, pipeline_name: str | None = None,
                rebuild: bool = False, fresh: dict[str, dict[str, Any]] | None = None) -> str:
    """Writes <pipeline root>/reports/index.html (see collect_entries for the arguments); returns its path."""
    entries = collect_entries(store, pipeline_root, pipeline_name, rebuild, fresh)
    path = os.path.join(pipeline_root, build.REPORTS_DIR, INDEX_HTML)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(render_index(entries, pipeline_root))
    os.replace(tmp, path)  # a reader never sees half a page
    return path


def update_after_run(store: metadata_store.MetadataStore, pipeline_root: str, run_id: str,
                     pipeline_name: str | None, error: str | None) -> str:
    """What a local run calls at its end: computes and keeps its own row, then rewrites the index."""
    entry = run_entry(store, run_id, pipeline_root, error)
    save_entry(pipeline_root, entry)
    return write_index(store, pipeline_root, pipeline_name, fresh={run_id: entry})
