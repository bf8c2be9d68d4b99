"""Renders a report dict (pipeline.report.build) as one self-contained HTML page.

No network and no JavaScript: CSS is inline, plots are inline SVG drawn with matplotlib
(no pyplot, no GUI backend), thumbnails are ``data:`` URIs, and long lists fold into
<details>. The page opens from disk. Every string from the data (file names, paths, labels)
is escaped: it never becomes markup.
"""

from __future__ import annotations

from typing import Any

from pipeline.report import on_device
from pipeline.report.html.data_sections import co_prediction_section, data_section, errors_section
from pipeline.report.html.markup import esc
from pipeline.report.html.model_sections import (
    baseline_section,
    decision_section,
    fairness_section,
    overall_section,
    slice_tables,
    verdict_section,
)
from pipeline.report.html.plots import curve_svgs

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


def render_html(report: dict[str, Any]) -> str:
    """Renders the whole page.

    Args:
      report: from pipeline.report.build.build_report (or the same structure).

    Returns:
      The HTML document as a string.
    """
    run_id = report["run"]["run_id"]
    sections = [
        f"<h1>facepipe evaluation report</h1><p class='meta'>Run <code>{esc(run_id)}</code> - generated "
        f"{esc(report['generated_at'])} - model <code>{esc(report['model'].get('uri') or 'none')}</code></p>",
        "<h2 id='gates'>Verdict and gates</h2>",
        verdict_section(report),
    ]
    if report["evaluation"].get("available"):
        svgs = curve_svgs(report)
        sections += [
            "<h2 id='metrics'>Metrics</h2>", overall_section(report),
            "<h2 id='slices'>Labels x slices</h2>", slice_tables(report),
            "<h2 id='thresholds'>Decision thresholds and calibration</h2>", decision_section(report),
            "<h2 id='fairness'>Fairness: AUC gaps between groups</h2>", fairness_section(report),
            "<h2 id='curves'>ROC, precision-recall and calibration</h2>",
            *(f"<div>{svgs[k]}</div>" for k in ("roc", "pr", "calibration") if k in svgs),
            co_prediction_section(report),
            "<h2 id='baseline'>Comparison with the baseline model</h2>", baseline_section(report),
            "<h2 id='errors'>The faces behind the numbers: most confident errors</h2>", errors_section(report),
            on_device.section_html(report.get("on_device")),
        ]
    else:
        sections.append("<p class='note'>No evaluation: the Evaluator did not complete in this run.</p>")
    sections += ["<h2 id='data'>Data</h2>", data_section(report)]
    sections.append(
        "<p class='note'>Regenerate with <code>python -m pipeline.report --pipeline-root &lt;pipeline root&gt; "
        f"--run-id {esc(run_id)}</code>; the same numbers are in report.json beside this file.</p>"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>facepipe report {esc(run_id)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(sections)}</main></body></html>\n"
    )
