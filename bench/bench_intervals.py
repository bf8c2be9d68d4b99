"""Which 95% interval for AUCs: DeLong (Wald or logit scale), a seeded bootstrap, or TFMA's 20 samples?

Simulates binormal scores with a known AUC (negatives N(0, 1), positives N(d, 1): AUC = Phi(d / sqrt 2)),
for group sizes from the smallest judged fairness group (20 positives, 20 negatives) up to the
bundled eval split's, and counts how often each method's interval covers the true AUC and how
wide it is. A paired scenario (two correlated models on the same examples) checks the interval of
the candidate-minus-baseline difference. Then times each method at the sizes the pipeline meets.

    .venv/bin/python bench/bench_intervals.py                 # ~25 minutes on the shared 2 cores
    .venv/bin/python bench/bench_intervals.py --reps 100      # a quick look
    .venv/bin/python bench/bench_intervals.py --part seeds    # three data sets, 100 resampling seeds each
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
from scipy.stats import norm, rankdata, t

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from components import uncertainty  # noqa: E402


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    m = int(y.sum())
    n = len(y) - m
    if not m or not n:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - m * (m + 1) / 2) / (m * n))


def _bootstrap(y, s, rng, samples):
    n = len(y)
    values = []
    for _ in range(samples):
        rows = rng.integers(0, n, n)
        v = _auc(y[rows], s[rows])
        if not math.isnan(v):
            values.append(v)
    return np.asarray(values)


def _tfma_like(y, s, rng):
    """TFMA's confidence intervals: 20 bootstrap samples, the unsampled value +- t(19) x their std."""
    values = _bootstrap(y, s, rng, 20)
    half = t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1)
    value = _auc(y, s)
    return value - half, value + half


def coverage(m: int, n: int, true_auc: float, reps: int, boot: int, seed: int) -> dict[str, tuple[float, float]]:
    """Coverage and mean width of each method for one configuration."""
    d = math.sqrt(2) * norm.ppf(true_auc)
    rng = np.random.default_rng(seed)
    hits = {k: 0 for k in ("delong-wald", "delong-logit", "bootstrap", "tfma-20")}
    widths = {k: 0.0 for k in hits}
    for _ in range(reps):
        y = np.r_[np.ones(m, bool), np.zeros(n, bool)]
        s = np.r_[rng.normal(d, 1, m), rng.normal(0, 1, n)]
        auc, infl = uncertainty.auc_influence(y, s)
        bounds = {
            "delong-wald": uncertainty.interval(auc, infl, bounded=False),
            "delong-logit": uncertainty.interval(auc, infl, bounded=True),
        }
        for k, iv in bounds.items():
            hits[k] += iv.lower <= true_auc <= iv.upper
            widths[k] += iv.upper - iv.lower
        values = _bootstrap(y, s, rng, boot)
        lo, hi = np.quantile(values, [0.025, 0.975])
        hits["bootstrap"] += lo <= true_auc <= hi
        widths["bootstrap"] += hi - lo
        lo, hi = _tfma_like(y, s, rng)
        hits["tfma-20"] += lo <= true_auc <= hi
        widths["tfma-20"] += hi - lo
    return {k: (hits[k] / reps, widths[k] / reps) for k in hits}


def paired_coverage(m: int, n: int, reps: int, seed: int, rho: float = 0.8) -> tuple[float, float, float]:
    """Coverage of the paired DeLong interval of AUC(A) - AUC(B) for correlated models (true diff known)."""
    rng = np.random.default_rng(seed)
    da, db = 1.6, 1.4  # true AUCs Phi(da/sqrt2), Phi(db/sqrt2) with unit-variance scores
    true = norm.cdf(da / math.sqrt(2)) - norm.cdf(db / math.sqrt(2))
    hits, width, unpaired_width = 0, 0.0, 0.0
    for _ in range(reps):
        y = np.r_[np.ones(m, bool), np.zeros(n, bool)]
        shared = rng.normal(0, 1, m + n)
        noise_a, noise_b = rng.normal(0, 1, m + n), rng.normal(0, 1, m + n)
        sa = np.sqrt(rho) * shared + np.sqrt(1 - rho) * noise_a + da * y
        sb = np.sqrt(rho) * shared + np.sqrt(1 - rho) * noise_b + db * y
        auc_a, ia = uncertainty.auc_influence(y, sa)
        auc_b, ib = uncertainty.auc_influence(y, sb)
        iv = uncertainty.interval(auc_a - auc_b, ia - ib)
        hits += iv.lower <= true <= iv.upper
        width += iv.upper - iv.lower
        unpaired_width += 2 * 1.96 * math.sqrt(np.sum(ia**2) + np.sum(ib**2))
    return hits / reps, width / reps, unpaired_width / reps


def seed_variability(data_seed: int, seeds: int = 100) -> tuple[float, dict[str, tuple[float, float, float]]]:
    """Width of each method's interval on ONE fixed data set (20/20, true AUC 0.9) over resampling seeds.

    DeLong has no seed; a bootstrap's width moves a little with its seed, TFMA's 20 samples far more.
    Returns (the sample's AUC, method -> (min, median, max) width).
    """
    rng = np.random.default_rng(data_seed)
    d = math.sqrt(2) * norm.ppf(0.9)
    y = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    s = np.r_[rng.normal(d, 1, 20), rng.normal(0, 1, 20)]
    auc, influence = uncertainty.auc_influence(y, s)
    out = {}
    for name, bounded in (("delong-wald", False), ("delong-logit", True)):
        iv = uncertainty.interval(auc, influence, bounded=bounded)
        out[name] = (iv.upper - iv.lower,) * 3
    boot, tfma = [], []
    for seed in range(seeds):
        r = np.random.default_rng(1000 + seed)
        lo, hi = np.quantile(_bootstrap(y, s, r, 1000), [0.025, 0.975])
        boot.append(hi - lo)
        lo, hi = _tfma_like(y, s, r)
        tfma.append(hi - lo)
    out["bootstrap x1000"] = (min(boot), float(np.median(boot)), max(boot))
    out["tfma-20"] = (min(tfma), float(np.median(tfma)), max(tfma))
    return auc, out


def timings() -> list[tuple[str, float]]:
    """Seconds per interval computation at the sizes the pipeline meets (10 labels)."""
    rng = np.random.default_rng(0)
    out = []
    for n in (324, 4_700, 240_000):
        y = rng.random((n, 10)) < 0.3
        s = rng.normal(0, 1, (n, 10)) + y
        start = time.perf_counter()
        aucs, infl = uncertainty.delong(y, s)
        uncertainty.interval(*uncertainty.macro(aucs, infl), bounded=True)
        out.append((f"DeLong, macro AUC + 10 labels, n={n:,}", time.perf_counter() - start))
    for n, samples in ((324, 1000), (4_700, 1000)):
        y = rng.random((n, 10)) < 0.3
        s = rng.normal(0, 1, (n, 10)) + y
        start = time.perf_counter()
        uncertainty.bootstrap_interval(y, s, lambda a, b: float(np.nanmean(uncertainty.exact_aucs(a, b))), samples)
        out.append((f"bootstrap x{samples}, macro AUC, n={n:,}", time.perf_counter() - start))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=400, help="simulated data sets per configuration")
    parser.add_argument("--bootstrap", type=int, default=500, help="bootstrap samples per interval")
    parser.add_argument("--part", choices=("all", "coverage", "seeds", "timing"), default="all")
    args = parser.parse_args()
    if args.part in ("all", "seeds"):
        print("interval width on one data set (20/20, true AUC 0.9) over 100 resampling seeds: min / median / max")
        for data_seed in (11, 12, 13):
            auc, widths = seed_variability(data_seed)
            print(f" data set {data_seed}, sample AUC {auc:.3f}")
            for method, (low, mid, high) in widths.items():
                print(f"  {method:<16} {low:.3f} / {mid:.3f} / {high:.3f}")
    if args.part == "seeds":
        return
    if args.part == "timing":
        for what, seconds in timings():
            print(f"  {what:<45} {seconds:8.3f} s")
        return
    print(f"coverage of nominal 95% intervals (mean width), {args.reps} simulated data sets each")
    print(f"{'pos/neg':>9} {'AUC':>5} " + " ".join(f"{k:>22}" for k in ("delong-wald", "delong-logit",
                                                                          "bootstrap", "tfma-20")))
    for (m, n) in ((10, 10), (20, 20), (50, 200), (200, 800)):
        for true_auc in (0.75, 0.9, 0.97):
            result = coverage(m, n, true_auc, args.reps, args.bootstrap, seed=m * 1000 + int(true_auc * 100))
            cells = " ".join(f"{100 * c:>12.1f}% ({w:.3f})" for c, w in result.values())
            print(f"{m:>4}/{n:<4} {true_auc:>5} {cells}", flush=True)
    for m, n in ((20, 20), (50, 200)):
        cover, width, unpaired = paired_coverage(m, n, args.reps, seed=7)
        print(f"paired difference, {m}/{n}, correlation 0.8: coverage {100 * cover:.1f}%, mean width {width:.3f} "
              f"(unpaired would be {unpaired:.3f})")
    print("\ntime per interval computation:")
    for what, seconds in timings():
        print(f"  {what:<45} {seconds:8.3f} s")


if __name__ == "__main__":
    main()
