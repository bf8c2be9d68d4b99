"""Span layout: a data folder of ``span-<N>/`` sub-folders, read as TFX spans.

New data arrives as a new ``span-<N>`` folder; a run reads the latest span by default
(TFX's ``{SPAN}`` input pattern, resolved by the ExampleGen driver), one given span, or a range.
Pure helpers: TensorFlow is imported only to list remote (``gs://``) folders.
"""

from __future__ import annotations

import dataclasses
import os
import re

# fullmatch with ASCII digits: not "span-3\n", not "span-٣" (int() would read both as 3).
SPAN_DIR_RE = re.compile(r"span-([0-9]+)")
# Split patterns of the ExampleGen input config. One span: TFX resolves {SPAN} (latest, or the
# RangeConfig's). A range of spans: every span folder is matched and the executor keeps the range.
SINGLE_SPAN_PATTERN = "span-{SPAN}/*"
ALL_SPANS_PATTERN = "span-*/*"
LATEST = "latest"


@dataclasses.dataclass(frozen=True)
class SpanSelection:
    """Which spans a run reads.

    Attributes:
      first: first span number, None for the latest span.
      last: last span number (== first for one span), None for the latest span.
    """

    first: int | None = None
    last: int | None = None

    @property
    def is_latest(self) -> bool:
        """Whether the run reads whatever span is the newest when it runs."""
        return self.first is None

    @property
    def is_range(self) -> bool:
        """Whether the run reads more than one span."""
        return self.first is not None and self.last != self.first

    def __str__(self) -> str:
        if self.first is None:
            return LATEST
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


def parse_span_selection(text: str) -> SpanSelection:
    """Parses ``latest``, ``N`` or ``A-B``.

    Args:
      text: the selection as given on the command line.

    Returns:
      The SpanSelection.

    Raises:
      ValueError: with a message saying what is accepted.
    """
    value = text.strip()
    if value == LATEST:
        return SpanSelection()
    match = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", value)
    if match is None:
        raise ValueError(f"span {text!r} is not 'latest', a span number N or a range A-B (e.g. 3 or 2-5)")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if last < first:
        raise ValueError(f"span range {text!r} ends before it starts")
    return SpanSelection(first, last)


def span_number(folder_name: str) -> int | None:
    """Returns N for a folder named ``span-N``, else None."""
    match = SPAN_DIR_RE.fullmatch(folder_name.rstrip("/"))
    return int(match.group(1)) if match else None


def find_spans(data_dir: str) -> dict[int, str]:
    """Lists the span folders of a data folder.

    Args:
      data_dir: local folder or remote (gs://) prefix.

    Returns:
      span number -> folder name (e.g. ``{1: "span-1", 2: "span-2"}``); empty when none.

    Raises:
      ValueError: two folders name the same span (``span-1`` and ``span-01``).
    """
    if "://" in data_dir:
        import tensorflow as tf  # only remote folders need it

        entries = [(name.rstrip("/"), tf.io.gfile.isdir(f"{data_dir.rstrip('/')}/{name}"))
                   for name in tf.io.gfile.listdir(data_dir)]
    elif os.path.isdir(data_dir):
        entries = [(name, os.path.isdir(os.path.join(data_dir, name))) for name in os.listdir(data_dir)]
    else:
        return {}
    spans: dict[int, str] = {}
    for name, is_dir in sorted(entries):
        number = span_number(name)
        if number is None or not is_dir:
            continue
        if number in spans:
            raise ValueError(f"folders {spans[number]!r} and {name!r} in {data_dir} both name span {number}")
        spans[number] = name
    return spans


def has_span_layout(data_dir: str) -> bool:
    """Whether a local data folder holds ``span-<N>`` folders (remote folders: always False, pass --span)."""
    return "://" not in data_dir and bool(find_spans(data_dir))


def previous_span(spans: dict[int, str], first: int) -> int | None:
    """The newest span older than ``first``, or None when ``first`` is the oldest."""
    older = [n for n in spans if n < first]
    return max(older) if older else None


def resolve_single_span(data_dir: str, pattern: str, requested: int | None) -> tuple[str, int]:
    """Resolves ``{SPAN}`` in a split pattern to one span folder, as TFX's ExampleGen driver would.

    The executor does this itself (not a driver) so that every orchestrator reads the same span:
    Kubeflow's open-source backend runs no ExampleGen driver at all.

    Args:
      data_dir: the data folder holding ``span-<N>`` folders.
      pattern: a split pattern containing ``{SPAN}`` (e.g. ``span-{SPAN}/*``).
      requested: the span to read (a RangeConfig's static span), None for the newest.

    Returns:
      (the pattern with the span folder's number in place of ``{SPAN}``, the span number).

    Raises:
      ValueError: no span folder, or not the requested one.
    """
    found = find_spans(data_dir)
    if not found:
        raise ValueError(f"no span-<N> folder in {data_dir} (the pipeline reads spans: --span)")
    number = max(found) if requested is None else requested
    if number not in found:
        raise ValueError(
            f"span {number} was requested but {data_dir} has no span-{number} folder "
            f"(span folders found: {', '.join(found[n] for n in sorted(found))})"
        )
    folder_number = found[number].removeprefix("span-")
    return pattern.replace("{SPAN}", folder_number), number
