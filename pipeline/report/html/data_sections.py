"""The sections about examples and data: the most confident errors, labels predicted together,
and the data (files, quarantine, splits, validation, drift)."""

from __future__ import annotations

from typing import Any

from components.formatting import fmt_num
from pipeline.report.html.markup import esc, html_table


def _figure(example: dict[str, Any]) -> str:
    caption = (f"{esc(example['id'])}<br>score {example['score']:.3f}<br>true: "
               f"{esc(', '.join(example['labels']) or 'none')}")
    image = ""
    if example.get("thumbnail"):
        # The URI is built here from base64 text (no markup possible); the file name is escaped.
        image = f'<img src="{esc(example["thumbnail"])}" alt="{esc(example["id"])}" width="64" height="64">'
    return f'<figure class="err">{image}<figcaption>{caption}</figcaption></figure>'


def errors_section(report: dict[str, Any]) -> str:
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
        out.append(f"<h3>{esc(name)} <span class='note'>(threshold {entry['threshold']:.3f}: "
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


def co_prediction_section(report: dict[str, Any]) -> str:
    co = report["evaluation"].get("co_prediction") or {}
    rates = co.get("rates")
    if not rates:
        return ""
    names = [lb["name"] for lb in report["labels"]]
    rows = []
    for i, name in enumerate(names):
        row = [f"<b>{esc(name)}</b>"]
        for j in range(len(names)):
            value = rates[i][j] if i < len(rates) and j < len(rates[i]) else None
            shade = "" if value is None else f' style="background:rgba(9,105,218,{0.45 * value:.2f})"'
            row.append(f"<td{shade}>{fmt_num(value, 2)}</td>")
        rows.append(row)
    return ("<h3>Multi-label confusion at 0.5</h3><p class='note'>Row: examples that have the label; column: the "
            "fraction of them predicted positive for that label (the diagonal is recall).</p>"
            + html_table(["has label \\ predicted", *(esc(n) for n in names)], rows))


def data_section(report: dict[str, Any]) -> str:
    data = report["data"]
    names = [lb["name"] for lb in report["labels"]]
    out = []
    facts = [f"Data folder: <code>{esc(data.get('data_dir') or 'unknown')}</code>"]
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
            rows.append([f"<b>{esc(split)}</b>", str(n), *(
                f"{info['label_positives'].get(name, 0)} ({100 * info['label_positives'].get(name, 0) / n:.0f}%)"
                if n else "0" for name in names)])
        out += ["<h3>Examples and label frequencies per split</h3>",
                html_table(["split", "examples", *(esc(n) for n in names)], rows)]
        group_rows = []
        for kind in ("gender", "race", "age"):
            groups = []
            for info in splits.values():
                for g in info["groups"].get(kind, {}):
                    if g not in groups:
                        groups.append(g)
            for g in groups:
                group_rows.append([esc(kind), esc(g), *(str(info["groups"].get(kind, {}).get(g, 0))
                                                       for info in splits.values())])
        out += ["<h3>Group sizes per split</h3>",
                html_table(["attribute", "group", *(esc(s) for s in splits)], group_rows, left=2)]
    quarantined = data.get("quarantined") or {}
    total = quarantined.get("total")
    out.append(f"<h3>Quarantined files: {esc('n/a' if total is None else total)}</h3>")
    if quarantined.get("by_reason"):
        by_reason = sorted(quarantined["by_reason"].items())
        out.append(html_table(["reason", "files"], [[esc(r), str(c)] for r, c in by_reason]))
        files = quarantined.get("files") or []
        if files:
            listed = [[esc(f.get("path", "")), esc(f.get("reason", "")), esc(f.get("message", ""))] for f in files]
            out.append(f"<details><summary>Files ({len(files)} listed)</summary>"
                       + html_table(["file", "reason", "message"], listed, left=3) + "</details>")
    anomalies = data.get("anomalies")
    out.append("<h3>Data validation (ExampleValidator)</h3>")
    if anomalies is None:
        out.append('<p class="note">ExampleValidator did not run.</p>')
    elif anomalies:
        out.append("<ul>" + "".join(f"<li>{esc(a)}</li>" for a in anomalies) + "</ul>")
    else:
        out.append("<p>No anomalies: every split matches the curated schema.</p>")
    drift = data.get("drift")
    if drift:
        out.append(f"<p>Label drift check: <b>{esc(drift.get('status', ''))}</b> {esc(drift.get('message', ''))}</p>")
    return "".join(out)

