"""The gates judged from an Evaluator's output, and the record EvaluationGate writes.

TFMA counts a comparison it cannot compute (a group without positives or negatives of a label)
as a failure, and a gap between groups of a handful of positives is mostly noise. So
``evaluate_gates`` reads TFMA's validation result and excuses exactly one kind of failure: a
fairness comparison where either group has fewer than ``fairness_min_count`` positives or
negatives of that label ("not judged"; listed in the gate's record). Every other TFMA failure
stands. With DeLong intervals (components.uncertainty) each gate records its headline value's
interval and whether its verdict is within noise; with ``require_significance`` the regression
and fairness gates fail only on significant differences.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from components import uncertainty
from components.base import labels
from components.evaluation.eval_config import (
    AGGREGATE,
    FAIRNESS_GROUPS,
    MACRO_AUC,
    OVERALL,
    SLICE_FEATURE_NAMES,
    default_fairness_exempt,
    fairness_pairs,
    slice_name,
)
from components.evaluation.results import BASELINE, DIFF, EvalResults
from components.evaluation.settings import GateSettings
from components.formatting import fmt_num as _fmt

GATE_MACRO = "macro_auc_floor"
GATE_LABELS = "label_auc_floors"
GATE_REGRESSION = "no_regression"
GATE_FAIRNESS_PREFIX = "fairness_"
GATE_OTHER = "other_tfma_validation"
GATES_FILE = "gates.json"  # EvaluationGate's record, inside its ModelBlessing artifact


@dataclasses.dataclass
class GateResult:
    """One gate's verdict, with the values it judged.

    Attributes:
      name: stable id, e.g. ``macro_auc_floor`` or ``fairness_race``.
      title: what the gate checks, in words.
      passed: True, False, or None when it did not apply (no baseline; nothing it could judge).
      threshold: the limit (a floor, a tolerance, a gap), None when there is none.
      value: the headline value judged (macro AUC, worst label AUC, AUC change, largest gap).
      summary: one sentence with the values.
      details: per-label (or per-failure) records.
      interval: the 95% interval of the headline value (Interval.to_dict), None when unknown.
      within_noise: whether the verdict could flip within the intervals of the numbers it
        judged (an interval straddles its threshold); None when there are no intervals.
    """

    name: str
    title: str
    passed: bool | None
    threshold: float | None
    value: float | None
    summary: str
    details: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    interval: dict[str, Any] | None = None
    within_noise: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return dataclasses.asdict(self)


def is_blessed(gate_results: Sequence[GateResult]) -> bool:
    """A model is blessed when the macro-AUC gate passed and no gate failed."""
    by_name = {g.name: g for g in gate_results}
    macro = by_name.get(GATE_MACRO)
    return macro is not None and macro.passed is True and all(g.passed is not False for g in gate_results)


def _feature_of(slice_: str, results: EvalResults) -> str | None:
    features = list(results.slices.get(slice_, {}))
    if len(features) == 1:
        return features[0]
    for feature, short in SLICE_FEATURE_NAMES.items():  # a slice absent from the data: parse its name
        if slice_.startswith(f"{short}=") and "," not in slice_:
            return feature
    return None


def _gate_of_failure(failure: Mapping[str, Any], results: EvalResults) -> str:
    if "cross" in failure:
        feature = _feature_of(failure["cross"][0], results)
        if failure["metric"] == "auc" and failure["label"] != AGGREGATE and feature is not None:
            return GATE_FAIRNESS_PREFIX + SLICE_FEATURE_NAMES.get(feature, feature)
        return GATE_OTHER
    if failure.get("slice") != OVERALL:
        return GATE_OTHER
    if failure["metric"] == MACRO_AUC:
        return GATE_REGRESSION if failure["is_diff"] else GATE_MACRO
    if failure["metric"] == "auc" and failure["label"] != AGGREGATE and not failure["is_diff"]:
        return GATE_LABELS
    return GATE_OTHER


def _ci(iv: uncertainty.Interval | None) -> str:
    return "" if iv is None else f" [95% CI {iv.lower:.3f} to {iv.upper:.3f}]"


def _noise(ivs_and_thresholds: Sequence[tuple[uncertainty.Interval | None, float]], passed: bool | None) -> bool | None:
    """Whether a verdict could flip within the intervals of what it judged.

    A pass is within noise when any judged number's interval straddles its threshold; a failure
    when every failing number's does (it needs all of them to flip). None without intervals.
    """
    if passed is None or not ivs_and_thresholds or any(iv is None for iv, _ in ivs_and_thresholds):
        return None
    flags = [iv.straddles(t) for iv, t in ivs_and_thresholds if iv is not None]
    return any(flags) if passed else all(flags)


def _macro_gate(results: EvalResults, gates: GateSettings, tfma_failed: bool,
                intervals: uncertainty.GateIntervals | None) -> GateResult:
    macro = results.value(MACRO_AUC)
    passed = macro is not None and macro >= gates.min_macro_auc and not tfma_failed
    relation = ">=" if passed else "<" if macro is not None and macro < gates.min_macro_auc else "fails"
    iv = intervals.macro_auc if intervals else None
    noise = _noise([(iv, gates.min_macro_auc)], passed) if intervals else None
    return GateResult(
        GATE_MACRO,
        "macro-average AUC floor (overall)",
        passed,
        gates.min_macro_auc,
        macro,
        f"macro AUC {_fmt(macro)}{_ci(iv)} {relation} floor {gates.min_macro_auc:g}"
        + ("; within noise: the interval straddles the floor" if noise else ""),
        interval=None if iv is None else iv.to_dict(),
        within_noise=noise,
    )


def _label_gate(results: EvalResults, gates: GateSettings, failed_labels: set[str],
                intervals: uncertainty.GateIntervals | None) -> GateResult:
    details = []
    for name in results.label_names:
        floor = gates.label_floor(name)
        auc = results.value("auc", name)
        ok = None if floor is None else (auc is not None and auc >= floor and name not in failed_labels)
        iv = intervals.label_auc.get(name) if intervals else None
        details.append({
            "label": name, "auc": auc, "floor": floor, "passed": ok,
            "interval": None if iv is None else iv.to_dict(),
            "within_noise": None if floor is None or iv is None else iv.straddles(floor),
        })
    gated = [d for d in details if d["passed"] is not None]
    if not gated:
        return GateResult(GATE_LABELS, "per-label AUC floors (overall)", None, None, None, "no per-label floor set",
                          details)
    failing = [d for d in gated if not d["passed"]]
    worst = min(gated, key=lambda d: -1.0 if d["auc"] is None else d["auc"] - d["floor"])
    judged = failing if failing else gated
    noise = _noise(
        [(intervals.label_auc.get(d["label"]), d["floor"]) for d in judged], not failing
    ) if intervals else None
    if failing:
        summary = "; ".join(f"{d['label']} AUC {_fmt(d['auc'])} < floor {d['floor']:g}" for d in failing)
    else:
        summary = f"all {len(gated)} labels at or above their floor (closest: {worst['label']} {_fmt(worst['auc'])} " \
                  f"vs {worst['floor']:g})"
    if noise:
        summary += "; within noise: a label's interval straddles its floor"
    worst_iv = intervals.label_auc.get(worst["label"]) if intervals else None
    return GateResult(
        GATE_LABELS, "per-label AUC floors (overall)", not failing, gates.min_label_auc, worst["auc"], summary, details,
        interval=None if worst_iv is None else worst_iv.to_dict(), within_noise=noise,
    )


def _regression_gate(
    results: EvalResults, gates: GateSettings, tfma_failed: bool,
    intervals: uncertainty.GateIntervals | None, baseline_note: str | None = None,
) -> GateResult:
    title = "no macro-AUC regression against the model serving now"
    # Without a baseline TFMA drops change thresholds from the config it writes (rubber stamp).
    if not results.has_baseline:
        why = baseline_note or "no model serving to compare with"
        return GateResult(GATE_REGRESSION, title, None, None, None, f"no baseline: {why}")
    if gates.max_auc_regression is None:
        return GateResult(GATE_REGRESSION, title, None, None, None, "no regression check configured")
    change = results.value(MACRO_AUC, model=DIFF)
    base = results.value(MACRO_AUC, model=BASELINE)
    cand = results.value(MACRO_AUC)
    tolerance = -gates.max_auc_regression
    beyond = change is None or change < tolerance or tfma_failed
    iv = intervals.macro_change if intervals else None
    excused = False
    if beyond and gates.require_significance and change is not None:
        if iv is None:
            raise ValueError("the regression gate requires significance but the change has no interval")
        excused = not iv.upper < 0.0  # a drop that is not significant (the interval reaches 0) passes
    passed = not beyond or excused
    noise = _noise([(iv, tolerance)], passed) if intervals else None
    summary = (
        f"change in macro_auc vs the serving model {_fmt(change, 4)}{_ci(iv)} ({_fmt(cand)} vs {_fmt(base)}) "
        f"is {'beyond' if beyond else 'within'} the allowed drop of {gates.max_auc_regression:g}"
    )
    if excused:
        summary += "; passed: the drop is not significant (its 95% interval includes 0)"
    elif noise:
        summary += "; within noise: the interval straddles the allowed drop"
    details = [
        {
            "label": name,
            "candidate": results.value("auc", name),
            "baseline": results.value("auc", name, model=BASELINE),
            "change": results.value("auc", name, model=DIFF),
            "interval": None if not intervals or intervals.label_change.get(name) is None
            else intervals.label_change[name].to_dict(),
        }
        for name in results.label_names
    ]
    return GateResult(GATE_REGRESSION, title, passed, tolerance, change, summary, details,
                      interval=None if iv is None else iv.to_dict(), within_noise=noise)


def _fairness_gate(
    results: EvalResults,
    gates: GateSettings,
    feature: str,
    groups: Sequence[str],
    exempt: Collection[str],
    tfma_failed_pairs: set[tuple[str, str, str]],
    intervals: uncertainty.GateIntervals | None,
) -> GateResult:
    short = SLICE_FEATURE_NAMES.get(feature, feature)
    limit = gates.max_fairness_gap
    assert limit is not None
    details: list[dict[str, Any]] = []
    judged_total = unjudged_total = 0
    worst: tuple[float, str, str, str] | None = None
    worst_iv: uncertainty.Interval | None = None
    failing: list[str] = []
    excused: list[str] = []
    noise_inputs: list[tuple[uncertainty.Interval | None, float]] = []
    failing_noise: list[tuple[uncertainty.Interval | None, float]] = []
    for name in results.label_names:
        if name in exempt:
            details.append({"label": name, "status": "exempt", "max_gap": None, "pairs": [],
                            "reason": f"defined by {short}: constant within each {short} group"})
            continue
        pairs = []
        for a, b in fairness_pairs(groups):
            sa, sb = slice_name([(feature, a)]), slice_name([(feature, b)])
            pos_a, neg_a = results.positives_negatives(name, sa)
            pos_b, neg_b = results.positives_negatives(name, sb)
            # TFMA reports AUC 0, not NaN, for a group without positives or negatives: undefined here.
            auc_a = results.value("auc", name, sa) if min(pos_a, neg_a) > 0 else None
            auc_b = results.value("auc", name, sb) if min(pos_b, neg_b) > 0 else None
            judged = min(pos_a, neg_a, pos_b, neg_b) >= gates.fairness_min_count
            gap = results.cross_auc.get((sa, sb), {}).get(name) if auc_a is not None and auc_b is not None else None
            tfma_failed = (sa, sb, name) in tfma_failed_pairs
            iv = intervals.gap(feature, a, b, name) if intervals else None
            pair = {
                "groups": [a, b], "auc": [auc_a, auc_b], "positives": [pos_a, pos_b], "negatives": [neg_a, neg_b],
                "gap": None if gap is None else abs(gap), "judged": judged, "tfma_failed": tfma_failed,
                # Signed: AUC(first group) - AUC(second group); "within noise" if it straddles +-limit.
                "interval": None if iv is None else iv.to_dict(),
                "within_noise": None if iv is None else (iv.straddles(limit) or iv.straddles(-limit)),
            }
            if judged:
                judged_total += 1
                # Both must agree: TFMA's cross-slice threshold and the value it computed.
                beyond = gap is None or abs(gap) > limit or tfma_failed
                pair["excused"] = False
                if beyond and gates.require_significance and gap is not None:
                    if iv is None:
                        raise ValueError(f"the fairness gate requires significance but {name} ({a} vs {b}) has no "
                                         "interval")
                    pair["excused"] = not iv.excludes(0.0)
                pair["passed"] = not beyond or pair["excused"]
                if gap is not None and (worst is None or abs(gap) > worst[0]):
                    worst = (abs(gap), name, a, b)
                    worst_iv = iv
                text = f"{name}: {short} {a} {_fmt(auc_a)} vs {b} {_fmt(auc_b)} (gap {_fmt(pair['gap'])}{_ci(iv)})"
                noise_inputs += [(iv, limit), (iv, -limit)]
                if not pair["passed"]:
                    failing.append(text)
                    failing_noise.append((iv, limit if (gap or 0) >= 0 else -limit))
                elif pair["excused"]:
                    excused.append(text)
            else:
                unjudged_total += 1
                pair["passed"] = None
            pairs.append(pair)
        judged_pairs = [p for p in pairs if p["judged"]]
        gaps = [p["gap"] for p in judged_pairs if p["gap"] is not None]
        status = "not judged" if not judged_pairs else "passed" if all(p["passed"] for p in judged_pairs) else "failed"
        details.append({"label": name, "status": status, "max_gap": max(gaps) if gaps else None, "pairs": pairs})
    title = f"AUC gap between {short} groups, per label"
    note = (f"{unjudged_total} of {judged_total + unjudged_total} comparisons not judged (a group with fewer than "
            f"{gates.fairness_min_count} positives or negatives)") if unjudged_total else "every comparison judged"
    if judged_total == 0:
        return GateResult(GATE_FAIRNESS_PREFIX + short, title, None, limit, None,
                          f"nothing to judge: {note}", details)
    passed = not failing
    noise = None if intervals is None else _noise(noise_inputs if passed else failing_noise, passed)
    if failing:
        summary = f"gap above {limit:g}: " + "; ".join(failing) + f"; {note}"
    else:
        assert worst is not None
        summary = (f"largest gap {_fmt(worst[0])} ({worst[1]}: {worst[2]} vs {worst[3]}{_ci(worst_iv)}) <= {limit:g}; "
                   f"{note}")
    if excused:
        summary += f"; {len(excused)} gap(s) above {limit:g} passed as not significant: " + "; ".join(excused)
    if noise:
        summary += "; within noise: a judged gap's interval straddles the limit"
    return GateResult(GATE_FAIRNESS_PREFIX + short, title, passed, limit, worst[0] if worst else None,
                      summary, details, interval=None if worst_iv is None else worst_iv.to_dict(), within_noise=noise)


def evaluate_gates(
    results: EvalResults,
    gates: GateSettings,
    fairness_groups: Mapping[str, Sequence[str]] = FAIRNESS_GROUPS,
    fairness_exempt: Mapping[str, Collection[str]] | None = None,
    intervals: uncertainty.GateIntervals | None = None,
    baseline_note: str | None = None,
) -> list[GateResult]:
    """Judges every gate from an Evaluator's output.

    A gate fails when TFMA's validation failed it or when its own value is missing or out of
    bounds. The one TFMA failure that is excused: a fairness comparison in which a group has
    fewer than ``gates.fairness_min_count`` positives or negatives of the label (recorded as not
    judged). TFMA 0.47 also lists every CrossSlicingSpec that carries a threshold under
    ``missing_cross_slices`` even when it was checked (it looks cross-slice checks up by their
    single-slice spec), so that list is ignored; each judged comparison must instead have a value.
    Any TFMA failure that belongs to no gate fails the extra gate ``other_tfma_validation``.

    With intervals, every gate records the interval of its headline value and whether its
    verdict is within noise; with ``gates.require_significance`` a regression or fairness
    failure whose interval includes 0 passes (recorded as excused).

    Args:
      results: the Evaluator's output (load_eval_results).
      gates: the thresholds the EvalConfig was built with.
      fairness_groups: attribute -> groups, as given to build_eval_config.
      fairness_exempt: attribute -> labels not compared, as given to build_eval_config.
      intervals: DeLong intervals from the Evaluator's per-example rows (None: not recorded).
      baseline_note: why the baseline is what it is (components.baseline), for the regression gate.

    Returns:
      One GateResult per gate, in report order.

    Raises:
      ValueError: significance is required but a judged difference has no interval.
    """
    if fairness_exempt is None:
        fairness_exempt = default_fairness_exempt(
            (d for d in labels.LABELS if d.name in results.label_names), fairness_groups
        )
    by_gate: dict[str, list[Mapping[str, Any]]] = {}
    for failure in results.failures:
        by_gate.setdefault(_gate_of_failure(failure, results), []).append(failure)
    out = [
        _macro_gate(results, gates, bool(by_gate.get(GATE_MACRO)), intervals),
        _label_gate(results, gates, {f["label"] for f in by_gate.get(GATE_LABELS, [])}, intervals),
        _regression_gate(results, gates, bool(by_gate.get(GATE_REGRESSION)), intervals, baseline_note),
    ]
    if gates.max_fairness_gap is not None:
        for feature, groups in fairness_groups.items():
            short = SLICE_FEATURE_NAMES.get(feature, feature)
            failed_pairs = {(f["cross"][0], f["cross"][1], f["label"])
                            for f in by_gate.get(GATE_FAIRNESS_PREFIX + short, [])}
            out.append(_fairness_gate(results, gates, feature, groups, fairness_exempt.get(feature, ()), failed_pairs,
                                      intervals))
    other = [
        f"{f['metric']} ({f['label']}) on {' vs '.join(f['cross']) if 'cross' in f else f['slice']}: "
        f"{_fmt(f['value'])} {f['message']}".strip()
        for f in by_gate.get(GATE_OTHER, [])
    ]
    other += [f"slice with thresholds missing from the eval data: {s}" for s in results.missing_slices]
    if results.missing_thresholds:
        other.append("TFMA found no thresholds to check")
    if other:
        out.append(GateResult(GATE_OTHER, "other TFMA validation failures", False, None, None, "; ".join(other),
                              [{"failure": text} for text in other]))
    return out


def read_gates(blessing_uri: str) -> dict[str, Any] | None:
    """Reads the record an EvaluationGate wrote into its blessing (None when there is none).

    Args:
      blessing_uri: the EvaluationGate's ModelBlessing URI.

    Returns:
      The record (see components.evaluation_gate.judge), or None.
    """
    import tensorflow as tf  # already loaded with TFMA; gfile reads gs:// too

    path = f"{blessing_uri.rstrip('/')}/{GATES_FILE}"
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)
