"""Per-label decision thresholds chosen by a policy on out-of-fold predictions.

Policies (``--threshold-policy``, per label ``--label-threshold-policy LABEL=POLICY``):

- ``f1``: the threshold with the highest F1;
- ``precision=P``: the lowest threshold whose precision is at least P (the most recall at that
  precision); kept at 0.5 when no threshold reaches P;
- ``recall=R``: the highest threshold whose recall is at least R (the most precision at that recall);
- ``fixed=T``: T, whatever the data.

A threshold is placed midway between the lowest score it accepts and the next lower score, so a
new example is judged by the gap the choice was made in. Thresholds are chosen on calibrated
out-of-fold predictions of the training images (k head fits on the cached embeddings): the
validation hold-out alone is too small (about 9 ``race_other`` positives on the bundled data).
A label with fewer than ``min_positives`` positives (or negatives) out of fold keeps 0.5, and
its record says so.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_POLICY = "f1"
DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_POSITIVES = 20
_POLICY = re.compile(r"^(f1|(precision|recall|fixed)=([0-9]*\.?[0-9]+))$")


@dataclasses.dataclass(frozen=True)
class Policy:
    """A parsed threshold policy: kind ("f1", "precision", "recall", "fixed") and its target."""

    kind: str
    target: float | None = None

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}={self.target:g}"


def parse_policy(text: str) -> Policy:
    """Parses ``f1``, ``precision=0.8``, ``recall=0.9`` or ``fixed=0.3``.

    Raises:
      ValueError: anything else, or a target outside 0-1.
    """
    match = _POLICY.match(text.strip().lower())
    if not match:
        raise ValueError(f"threshold policy {text!r} is not f1, precision=P, recall=R or fixed=T (e.g. precision=0.8)")
    if match.group(1) == "f1":
        return Policy("f1")
    target = float(match.group(3))
    if not 0.0 < target <= 1.0 and not (match.group(2) == "fixed" and target == 0.0):
        raise ValueError(f"threshold policy {text!r}: the target must be within 0-1")
    return Policy(match.group(2), target)


def policies_for(label_names: Sequence[str], default: str, overrides: Mapping[str, str]) -> dict[str, Policy]:
    """Each label's policy: its override, else the default.

    Raises:
      ValueError: a bad policy or an override for an unknown label.
    """
    unknown = sorted(set(overrides) - set(label_names))
    if unknown:
        raise ValueError(f"threshold policy for unknown label(s) {', '.join(unknown)}; labels are "
                         f"{', '.join(label_names)}")
    return {name: parse_policy(overrides.get(name, default)) for name in label_names}


def confusion_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | None]:
    """Precision, recall and F1 when examples scoring >= threshold are predicted positive (None: undefined)."""
    y = np.asarray(labels) > 0.5
    predicted = np.asarray(scores) >= threshold
    tp = int(np.sum(y & predicted))
    fp = int(np.sum(~y & predicted))
    fn = int(np.sum(y & ~predicted))
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {"precision": precision, "recall": recall, "f1": f1, "predicted_positive": tp + fp}


def _curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """(distinct scores descending, precision, recall, f1, next lower score) for 'predict positive if >= score'."""
    y = np.asarray(labels) > 0.5
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # the last row of each run of equal scores
    distinct, tp, fp = s[last], tp[last].astype(float), fp[last].astype(float)
    positives = float(y.sum())
    precision = tp / (tp + fp)
    recall = tp / positives
    f1 = 2 * tp / (tp + fp + positives)
    below = np.r_[distinct[1:], np.nan]
    return distinct, precision, recall, f1, below


@dataclasses.dataclass(frozen=True)
class ThresholdChoice:
    """One label's decision threshold and how it was chosen.

    Attributes:
      policy: the policy asked for (text).
      threshold: the threshold used.
      tuned: whether the policy chose it (False: kept at the default; see reason).
      reason: how it was chosen, or why it was not.
      positives / negatives: out-of-fold examples of the label.
      at_threshold / at_default: precision, recall, F1 out of fold at the threshold and at 0.5.
    """

    policy: str
    threshold: float
    tuned: bool
    reason: str
    positives: int
    negatives: int
    at_threshold: dict[str, float | None]
    at_default: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return dataclasses.asdict(self)


def choose_threshold(
    labels: np.ndarray, scores: np.ndarray, policy: Policy, min_positives: int = DEFAULT_MIN_POSITIVES
) -> ThresholdChoice:
    """Chooses one label's threshold by a policy (see the module docstring).

    Args:
      labels: (n,) 0/1 labels (out of fold).
      scores: (n,) calibrated out-of-fold probabilities.
      policy: the policy.
      min_positives: fewer positives or negatives than this keep DEFAULT_THRESHOLD.

    Returns:
      The ThresholdChoice.
    """
    y = np.asarray(labels) > 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())

    def result(threshold: float, tuned: bool, reason: str) -> ThresholdChoice:
        return ThresholdChoice(str(policy), float(threshold), tuned, reason, n_pos, n_neg,
                               confusion_at(y, scores, threshold), confusion_at(y, scores, DEFAULT_THRESHOLD))

    if policy.kind == "fixed":
        assert policy.target is not None
        return result(policy.target, True, f"fixed at {policy.target:g} by the policy")
    if min(n_pos, n_neg) < min_positives:
        return result(DEFAULT_THRESHOLD, False, f"kept {DEFAULT_THRESHOLD:g}: only {n_pos} positives / {n_neg} "
                      f"negatives out of fold (fewer than {min_positives})")
    distinct, precision, recall, f1, below = _curve(y, scores)
    if policy.kind == "f1":
        best = np.flatnonzero(f1 == f1.max())[0]  # the highest threshold among equal F1
        why = f"highest F1 out of fold ({f1[best]:.3f})"
    elif policy.kind == "precision":
        reach = np.flatnonzero(precision >= policy.target)
        if not len(reach):
            return result(DEFAULT_THRESHOLD, False, f"kept {DEFAULT_THRESHOLD:g}: no threshold reaches precision "
                          f"{policy.target:g} out of fold (highest {precision.max():.3f})")
        best = reach[-1]  # the lowest threshold with that precision: the most recall
        why = f"lowest threshold with precision >= {policy.target:g} out of fold (recall {recall[best]:.3f})"
    else:  # recall
        best = np.flatnonzero(recall >= policy.target)[0]  # the highest threshold with that recall
        why = f"highest threshold with recall >= {policy.target:g} out of fold (precision {precision[best]:.3f})"
    threshold = distinct[best] if np.isnan(below[best]) else (distinct[best] + below[best]) / 2
    return result(threshold, True, why)


def choose_all(
    label_names: Sequence[str],
    labels: np.ndarray,
    scores: np.ndarray,
    policies: Mapping[str, Policy],
    min_positives: int = DEFAULT_MIN_POSITIVES,
) -> dict[str, ThresholdChoice]:
    """Label name -> ThresholdChoice for (n, L) labels and calibrated out-of-fold scores."""
    return {name: choose_threshold(labels[:, k], scores[:, k], policies[name], min_positives)
            for k, name in enumerate(label_names)}


def untuned(label_names: Sequence[str], policies: Mapping[str, Policy], reason: str) -> dict[str, ThresholdChoice]:
    """Every label at the default threshold, for a reason (e.g. fine-tuning changed the backbone)."""
    empty = {"precision": None, "recall": None, "f1": None, "predicted_positive": None}
    return {name: ThresholdChoice(str(policies[name]), DEFAULT_THRESHOLD, False, reason, 0, 0, empty, empty)
            for name in label_names}
