"""Numbers as gate summaries, the HTML report and the model card print them: one rule for missing values
and intervals. Imports nothing of ours."""

from __future__ import annotations

from typing import Any


def fmt_num(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or "n/a" when there is none."""
    return "n/a" if x is None else f"{x:.{digits}f}"


def interval_bounds(interval: dict[str, Any] | None, signed: bool = False) -> tuple[str, str] | None:
    """An interval's lower and upper bounds with 3 decimals (with a sign for differences); None when absent."""
    if not interval:
        return None
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return fmt.format(interval["lower"]), fmt.format(interval["upper"])
