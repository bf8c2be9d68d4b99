"""bench/bench_revisions.py's bookkeeping: the ABBA order, the pairs and the interval it reports."""

from __future__ import annotations

import importlib
import pathlib
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))  # the bench scripts import their sibling harness by name
    try:
        yield importlib.import_module("bench_revisions")
    finally:
        sys.path.remove(str(BENCH))


def _runs(bench, sides, values):
    pairs = enumerate(zip(sides, values, strict=True))
    return [bench.Run(side, i, value, value, 0, None, None) for i, (side, value) in pairs]


def test_abba_blocks_alternate_which_side_starts(bench):
    assert bench.abba_order(4) == ["before", "after", "after", "before", "after", "before", "before", "after"]
    assert bench.abba_order(3) == ["before", "after", "after", "before", "after", "before"]
    assert bench.abba_order(1) == ["before", "after"]
    order = bench.abba_order(10)
    assert order.count("before") == order.count("after") == 10


def test_pair_differences_are_after_minus_before_whatever_the_order(bench):
    runs = _runs(bench, bench.abba_order(2), [10.0, 11.5, 13.0, 12.0])
    assert bench.pair_differences(runs, "wall_s") == [1.5, 1.0]


def test_a_pair_of_one_side_is_refused(bench):
    runs = _runs(bench, ["before", "before"], [1.0, 2.0])
    with pytest.raises(ValueError, match="not one of each side"):
        bench.pair_differences(runs, "wall_s")


def test_the_bootstrap_interval_holds_the_mean_and_is_reproducible(bench):
    values = [-2.0, 0.5, 1.0, 3.0, -1.0, 0.0, 2.0, 1.5]
    low, high = bench.bootstrap_mean_interval(values)
    assert low < sum(values) / len(values) < high
    assert (low, high) == bench.bootstrap_mean_interval(values)
    assert bench.bootstrap_mean_interval([4.0, 4.0, 4.0]) == (4.0, 4.0)
