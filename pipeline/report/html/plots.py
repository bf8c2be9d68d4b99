"""The plots: ROC, precision-recall and calibration curves as inline SVG (matplotlib, no pyplot)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

from components import evaluation
from components.formatting import fmt_num


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
        ax.text(0.97, 0.04, f"AUC {fmt_num(auc)}", ha="right", fontsize=7)

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

