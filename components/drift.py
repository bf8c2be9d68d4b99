"""Label drift between the span a run ingests and the span before it.

LabelDriftCheck compares the label distributions (gender, race, age group) of the current
span(s) with those of the newest older span, using the L-infinity distance TFDV's drift
comparator uses for categorical features: the largest absolute difference between the two
spans' fractions of any one value. It writes ``label_drift.json`` and never fails; AnomalyGate
stops the run when the report says "drift".

Both spans are summarized the same way, from the data folder itself: labels live in the file
names, so every file whose name passes ingestion's name checks (not hidden, matches the
pattern, labels in range) counts. That needs no output of an earlier run (the first run on a
folder of five spans still has a previous span) and no resolver, so it runs on any orchestrator.
"""


import json
import posixpath
import re
from collections.abc import Iterable
from typing import Any

from tfx import v1 as tfx
from tfx.types.artifact import Artifact

from components.base import labels
from components.image_example_gen import executor, ingest, spans

DRIFT_FILE = "label_drift.json"
STATUS_OK, STATUS_DRIFT, STATUS_SKIPPED = "ok", "drift", "skipped"
# The label distributions compared, by slice-feature name (components.base.labels).
DRIFT_FEATURES = (labels.GENDER_KEY, labels.RACE_KEY, labels.AGE_GROUP_KEY)


class LabelDriftReport(Artifact):
    """The label-drift check's result: ``label_drift.json`` (see check_label_drift)."""

    # KubeflowV2 accepts a custom type name only as "<lowercase name>.<Class>", and its containers
    # import the class by that name: components/__init__.py provides it lazily.
    TYPE_NAME = "components.LabelDriftReport"


def label_counts(parsed: Iterable[labels.ParsedName]) -> dict[str, dict[str, int]]:
    """Counts each label value.

    Args:
      parsed: labels of each file.

    Returns:
      feature (gender, race, age_group) -> value name -> count; every value present, 0 if unseen.
    """
    counts = {
        labels.GENDER_KEY: dict.fromkeys(labels.GENDER_NAMES, 0),
        labels.RACE_KEY: dict.fromkeys(labels.RACE_NAMES, 0),
        labels.AGE_GROUP_KEY: {name: 0 for _, name in labels.AGE_GROUPS},
    }
    for p in parsed:
        counts[labels.GENDER_KEY][labels.GENDER_NAMES[p.gender]] += 1
        counts[labels.RACE_KEY][labels.RACE_NAMES[p.race]] += 1
        counts[labels.AGE_GROUP_KEY][labels.age_group(p.age)] += 1
    return counts


def fractions(counts: dict[str, int]) -> dict[str, float]:
    """Normalizes one feature's counts to fractions (all 0 when there are no counts)."""
    total = sum(counts.values())
    return {k: (v / total if total else 0.0) for k, v in counts.items()}


def linf_distance(a: dict[str, int], b: dict[str, int]) -> float:
    """L-infinity distance between two count vectors over the same values, after normalizing.

    Args:
      a: value -> count.
      b: value -> count.

    Returns:
      max over values of |a fraction - b fraction|, within 0-1.
    """
    fa, fb = fractions(a), fractions(b)
    return max(abs(fa.get(k, 0.0) - fb.get(k, 0.0)) for k in set(fa) | set(fb))


def compare(
    current: dict[str, dict[str, int]], previous: dict[str, dict[str, int]], threshold: float
) -> tuple[dict[str, float], list[str]]:
    """Compares two spans' label counts.

    Args:
      current: label_counts of the current span(s).
      previous: label_counts of the previous span.
      threshold: largest allowed L-infinity distance per feature.

    Returns:
      (feature -> distance, features whose distance exceeds the threshold).
    """
    distances = {f: round(linf_distance(current[f], previous[f]), 6) for f in DRIFT_FEATURES}
    return distances, [f for f in DRIFT_FEATURES if distances[f] > threshold]


def folder_label_counts(folder: str, data_dir: str, pattern: re.Pattern[str]) -> tuple[dict[str, dict[str, int]], int]:
    """Label counts of the files under one span folder whose names pass ingestion's name checks.

    Args:
      folder: the span folder.
      data_dir: the data folder (links must stay inside it, as in ingestion).
      pattern: compiled file-name pattern.

    Returns:
      (label_counts, number of files counted).
    """
    parsed = []
    for found in ingest.find_files(folder, "*", data_dir=data_dir):
        if found.issue is None:
            result = ingest.check_name(found.path, found.relative, pattern)
            if not isinstance(result, ingest.QuarantineEntry):
                parsed.append(result)
    return label_counts(parsed), len(parsed)


def _skipped(message: str, threshold: float, **extra: Any) -> dict[str, Any]:
    return {"status": STATUS_SKIPPED, "message": message, "threshold": threshold, "max_distance": None,
            "distances": {}, "drifted": [], **extra}


def check_label_drift(
    data_dir: str, filename_pattern: str, first_span: int | None, last_span: int | None, threshold: float
) -> dict[str, Any]:
    """Compares the label distributions of spans first..last with the newest span before first.

    Args:
      data_dir: the data folder holding span-<N> folders.
      filename_pattern: the file-name regex (named groups age, gender, race).
      first_span: first span the run ingested; None when the folder has no span layout.
      last_span: last span the run ingested.
      threshold: largest allowed L-infinity distance per feature (0-1).

    Returns:
      The report: status ("ok", "drift", "skipped"), message, threshold, current_spans,
      previous_span, distances, drifted, max_distance, current and previous (num_files, fractions).
    """
    if first_span is None or last_span is None:
        return _skipped("not a span layout (no span-<N> folders): nothing to compare with", threshold)
    found = spans.find_spans(data_dir)
    previous = spans.previous_span(found, first_span)
    current_spans = [n for n in sorted(found) if first_span <= n <= last_span]
    if previous is None:
        return _skipped(f"span {first_span} is the first span: no previous span to compare with", threshold,
                        current_spans=current_spans, previous_span=None)
    pattern = labels.compile_pattern(filename_pattern)
    base = data_dir.rstrip("/")
    current_counts = label_counts([])
    current_n = 0
    for n in current_spans:
        counts, num = folder_label_counts(f"{base}/{found[n]}", data_dir, pattern)
        current_n += num
        for feature in DRIFT_FEATURES:
            for value, c in counts[feature].items():
                current_counts[feature][value] += c
    previous_counts, previous_n = folder_label_counts(f"{base}/{found[previous]}", data_dir, pattern)
    summary = {
        "current_spans": current_spans,
        "previous_span": previous,
        "current": {"num_files": current_n, "fractions": {f: fractions(current_counts[f]) for f in DRIFT_FEATURES}},
        "previous": {"num_files": previous_n, "fractions": {f: fractions(previous_counts[f]) for f in DRIFT_FEATURES}},
    }
    if current_n == 0 or previous_n == 0:
        empty = "the current span" if current_n == 0 else f"span {previous}"
        return _skipped(f"{empty} has no files with valid labels: nothing to compare", threshold, **summary)
    distances, drifted = compare(current_counts, previous_counts, threshold)
    first, last = current_spans[0], current_spans[-1]
    span_text = f"span {first}" if first == last else f"spans {first}-{last}"
    if drifted:
        details = ", ".join(f"{f} {distances[f]:.3f}" for f in drifted)
        message = (f"label distribution of {span_text} differs from span {previous} by more than {threshold:g} "
                   f"(L-infinity): {details}; check the new data, or raise --max-label-drift if the change "
                   "is expected")
    else:
        message = f"label distributions of {span_text} and span {previous} are within {threshold:g} (L-infinity)"
    return {
        "status": STATUS_DRIFT if drifted else STATUS_OK,
        "message": message,
        "threshold": threshold,
        "max_distance": max(distances.values()),
        "distances": distances,
        "drifted": drifted,
        **summary,
    }


def write_report(uri: str, report: dict[str, Any]) -> None:
    """Writes the report as ``label_drift.json`` into an artifact folder."""
    import tensorflow as tf

    tf.io.gfile.makedirs(uri)
    with tf.io.gfile.GFile(posixpath.join(uri, DRIFT_FILE), "w") as f:
        f.write(json.dumps(report, indent=2, sort_keys=True))


def read_report(uri: str) -> dict[str, Any] | None:
    """Reads ``label_drift.json`` from a LabelDriftReport artifact folder; None when absent."""
    import tensorflow as tf

    path = posixpath.join(uri, DRIFT_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


@tfx.dsl.components.component
def LabelDriftCheck(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    report: tfx.dsl.components.OutputArtifact[LabelDriftReport],
    max_label_drift: tfx.dsl.components.Parameter[float],
    code_version: tfx.dsl.components.Parameter[str] = "",
) -> None:
    """Writes the label-drift report of the spans ``examples`` was read from; never fails.

    The data folder, file-name pattern and spans come from the Examples artifact's custom
    properties (set by ImageExampleGen), so the check reads what ingestion read, also when a
    run overrides the data folder through a runtime parameter. ``code_version`` only keys the cache.
    """
    del code_version
    first = last = None
    if examples.has_custom_property(executor.FIRST_SPAN_PROPERTY):
        first = examples.get_int_custom_property(executor.FIRST_SPAN_PROPERTY)
        last = examples.get_int_custom_property(executor.LAST_SPAN_PROPERTY)
    result = check_label_drift(
        examples.get_string_custom_property(executor.INPUT_BASE_PROPERTY),
        examples.get_string_custom_property(executor.FILENAME_PATTERN_PROPERTY) or labels.UTKFACE_PATTERN,
        first,
        last,
        max_label_drift,
    )
    write_report(report.uri, result)
    report.set_string_custom_property("status", result["status"])
    if result["max_distance"] is not None:
        report.set_float_custom_property("max_distance", result["max_distance"])
