"""Markup helpers shared by the sections: escaping, number and interval cells, badges, tables."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from components.formatting import interval_bounds


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt_ci(interval: dict[str, Any] | None, signed: bool = False) -> str:
    """An interval as a small "[lower, upper]" (empty when there is none)."""
    if not (bounds := interval_bounds(interval, signed)):
        return ""
    return f' <span class="ci">[{bounds[0]}, {bounds[1]}]</span>'


def noise_cell(flag: bool | None) -> str:
    if flag is None:
        return '<td class="na">n/a</td>'
    return '<td><span class="noise">yes</span></td>' if flag else "<td>no</td>"


def intervals_of(report: dict[str, Any]) -> dict[str, Any]:
    return report["evaluation"].get("intervals") or {}


def badge(passed: bool | None) -> str:
    if passed is True:
        return '<span class="badge pass">PASS</span>'
    if passed is False:
        return '<span class="badge fail">FAIL</span>'
    return '<span class="badge na">N/A</span>'


def heat_style(value: float | None, lo: float = 0.5, hi: float = 1.0) -> str:
    """Background from red (lo) to green (hi) for scores where higher is better."""
    if value is None:
        return ""
    t = min(max((value - lo) / (hi - lo), 0.0), 1.0)
    return f' style="background:hsl({int(120 * t)},70%,88%)"'


def html_table(headers: Sequence[str], rows: Iterable[Sequence[str] | str], left: int = 1) -> str:
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

