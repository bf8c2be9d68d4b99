"""DeLong intervals (components.uncertainty) against their definition, sklearn, a published example and a bootstrap."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from components import uncertainty


def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def _delong_by_definition(labels, scores_a, scores_b):
    """DeLong, DeLong & Clarke-Pearson (1988), eqs. for V10, V01, S10, S01, written out pair by pair."""
    pos, neg = labels == 1, labels == 0
    out = []
    for s in (scores_a, scores_b):
        x, y = s[pos], s[neg]
        v10 = np.array([np.mean([_psi(xi, yj) for yj in y]) for xi in x])
        v01 = np.array([np.mean([_psi(xi, yj) for xi in x]) for yj in y])
        out.append((v10.mean(), v10, v01))
    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = out
    m, n = pos.sum(), neg.sum()

    def cov(p, q, mean_p, mean_q):
        return np.sum((p - mean_p) * (q - mean_q)) / (len(p) - 1)

    var_a = cov(v10a, v10a, auc_a, auc_a) / m + cov(v01a, v01a, auc_a, auc_a) / n
    cov_ab = cov(v10a, v10b, auc_a, auc_b) / m + cov(v01a, v01b, auc_a, auc_b) / n
    return auc_a, auc_b, var_a, cov_ab


def test_fast_delong_equals_the_definition_with_ties_and_paired_models():
    rng = np.random.default_rng(0)
    labels = (rng.random(70) < 0.4).astype(int)
    a = np.round(rng.normal(labels, 1.0), 1)  # rounding makes ties
    b = np.round(0.7 * a + rng.normal(0, 0.5, 70), 1)
    auc_a, auc_b, var_a, cov_ab = _delong_by_definition(labels, a, b)
    fast_a, infl_a = uncertainty.auc_influence(labels, a)
    fast_b, infl_b = uncertainty.auc_influence(labels, b)
    assert fast_a == pytest.approx(auc_a, abs=1e-12) and fast_b == pytest.approx(auc_b, abs=1e-12)
    assert fast_a == pytest.approx(roc_auc_score(labels, a), abs=1e-12)
    assert np.sum(infl_a**2) == pytest.approx(var_a, rel=1e-10)
    assert np.sum(infl_a * infl_b) == pytest.approx(cov_ab, rel=1e-10)  # DeLong's paired covariance


def test_published_example_hanley_mcneil_1982():
    """Hanley & McNeil (1982), table II: CT ratings of 58 normal and 51 abnormal subjects; AUC 0.893, SE 0.032."""
    normal, abnormal = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    scores = np.r_[np.repeat(np.arange(1, 6), normal), np.repeat(np.arange(1, 6), abnormal)].astype(float)
    labels = np.r_[np.zeros(58), np.ones(51)]
    auc, influence = uncertainty.auc_influence(labels, scores)
    assert round(auc, 3) == 0.893
    se = math.sqrt(np.sum(influence**2))
    # Their SE comes from an exponential approximation; DeLong's nonparametric one is close to it.
    assert se == pytest.approx(0.032, rel=0.1)
    interval = uncertainty.interval(auc, influence, bounded=True)
    assert interval.lower < auc < interval.upper < 1.0
    assert interval.upper - auc < auc - interval.lower  # the logit scale is asymmetric near 1


def _correlated(n, seed):
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 1))
    labels = (latent + rng.normal(size=(n, 3)) > 0.3).astype(int)  # three labels sharing a cause
    candidate = labels * 1.2 + 0.8 * latent + rng.normal(size=(n, 3))
    baseline = 0.8 * candidate + rng.normal(0, 0.7, size=(n, 3))  # scores the same examples
    return labels, candidate, baseline


def _macro(labels, scores):
    # Exact AUCs by ranks (the same numbers as sklearn's, checked above), fast enough for 500 resamples.
    return float(np.nanmean(uncertainty.exact_aucs(labels, scores)))


def test_macro_and_paired_difference_intervals_agree_with_a_seeded_bootstrap():
    labels, candidate, baseline = _correlated(500, seed=1)
    intervals = uncertainty.gate_intervals(("a", "b", "c"), labels, candidate, baseline)
    boot_macro = uncertainty.bootstrap_interval(labels, candidate, _macro, samples=500, seed=3)
    assert intervals.macro_auc.estimate == pytest.approx(_macro(labels, candidate), abs=1e-12)
    assert intervals.macro_auc.se == pytest.approx(boot_macro.se, rel=0.15)
    boot_diff = uncertainty.bootstrap_interval(
        labels, candidate, lambda y, c, b: _macro(y, c) - _macro(y, b), samples=500, seed=4, baseline_scores=baseline
    )
    assert intervals.macro_change.estimate == pytest.approx(boot_diff.estimate, abs=1e-12)
    assert intervals.macro_change.se == pytest.approx(boot_diff.se, rel=0.15)
    # Paired: far narrower than if the two models' AUCs were independent.
    unpaired = math.sqrt(intervals.macro_auc.se**2 + uncertainty.gate_intervals(
        ("a", "b", "c"), labels, baseline).macro_auc.se**2)
    assert intervals.macro_change.se < 0.7 * unpaired
    for name, k in (("a", 0), ("c", 2)):
        boot = uncertainty.bootstrap_interval(labels[:, k:k + 1], candidate[:, k:k + 1], _macro, samples=500, seed=5)
        assert intervals.label_auc[name].se == pytest.approx(boot.se, rel=0.15)


def test_group_intervals_make_gap_intervals_of_independent_groups():
    labels, candidate, _ = _correlated(400, seed=2)
    groups = {"race_name": np.array(["x", "y"] * 200, dtype=object)}
    intervals = uncertainty.gate_intervals(("a", "b", "c"), labels, candidate, groups=groups)
    x, y = intervals.group_auc["race_name"]["x"]["a"], intervals.group_auc["race_name"]["y"]["a"]
    assert x.estimate == pytest.approx(roc_auc_score(labels[::2, 0], candidate[::2, 0]))
    gap = intervals.gap("race_name", "x", "y", "a")
    assert gap.estimate == pytest.approx(x.estimate - y.estimate)
    assert gap.se == pytest.approx(math.hypot(x.se, y.se))
    assert gap.lower < gap.estimate < gap.upper
    assert uncertainty.GateIntervals.from_dict(intervals.to_dict()).gap("race_name", "x", "y", "a").se == \
        pytest.approx(gap.se, abs=2e-6)  # the record rounds to 6 digits


def test_interval_edge_cases():
    assert uncertainty.auc_influence(np.zeros(5), np.arange(5.0))[0] != uncertainty.auc_influence(
        np.zeros(5), np.arange(5.0))[0]  # NaN: no positives
    assert uncertainty.interval(float("nan"), np.zeros(3)) is None
    auc, influence = uncertainty.auc_influence(np.array([1, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3]))
    assert auc == 1.0 and uncertainty.interval(auc, influence) is None  # one positive: no variance
    perfect, infl = uncertainty.auc_influence(np.array([1, 1, 0, 0]), np.array([0.9, 0.8, 0.1, 0.2]))
    iv = uncertainty.interval(perfect, infl, bounded=True)
    assert (iv.lower, iv.upper, iv.se) == (1.0, 1.0, 0.0)
    iv = uncertainty.Interval(0.02, 0.01, -0.0, 0.04)
    assert iv.straddles(0.03) and not iv.straddles(0.05) and not iv.excludes(0.0) and iv.excludes(-0.01)
