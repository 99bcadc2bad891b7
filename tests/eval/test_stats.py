"""The Wilson interval against values computed by hand from its formula."""

import pytest

from loom.eval.stats import accuracy_with_interval, wilson_interval


def test_wilson_interval_matches_the_formula_at_known_points():
    # 5 of 10: centre 0.5, half-width 1.96 * sqrt(0.025 + 0.0096) / 1.384 = 0.2634
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    # none and all right: not the empty interval the normal approximation gives
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    low, high = wilson_interval(30, 100)
    assert low < 0.3 < high and high - low < wilson_interval(3, 10)[1] - wilson_interval(3, 10)[0]
    assert wilson_interval(0, 0) == (0.0, 1.0)  # nothing asked: nothing known


def test_accuracy_reads_as_percent_with_interval():
    assert accuracy_with_interval(5, 10) == "50% [24%, 76%]"
    assert accuracy_with_interval(0, 0) == "0% [0%, 100%]"
