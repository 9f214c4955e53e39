"""The cost formulas of heat_module.heat.cost against sums written out by hand."""

import pytest

from heat_module.heat.cost import information_fe


def test_information_fe_counts_the_suffix_runs_attention_pairs():
    """n = 4 tokens in runs of 2 sharing the prefix: runs start at 0 and 2, so 2 variants recompute all 4 positions
    and 2 recompute the last 2; attention counts the causal (query, key) pairs of the recomputed queries."""
    n, a = 4, 0.4
    linear = 2 * (4 / 4) + 2 * (2 / 4)
    # the formula's (2sn − s²)/n² is (n² − i0²)/n², the continuous form of the pair count; at i0 = 2: 12/16
    attention = 2 * 1.0 + 2 * (16 - 4) / 16
    assert information_fe(n, 2, True, a) == pytest.approx((1 - a) * linear + a * attention)
    assert information_fe(n, 2, True) == pytest.approx(linear)  # positions only
    assert information_fe(n, 2, False, a) == pytest.approx(4.0)  # no prefix cache: every run is a whole forward
