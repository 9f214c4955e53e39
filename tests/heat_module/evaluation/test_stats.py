"""The statistics helpers: bootstrap intervals and the log ratio."""

from __future__ import annotations

import math

import numpy as np
import pytest

from heat_module.evaluation.stats import bootstrap_ci, log_ratio_ci


def test_bootstrap_helpers():
    rng = np.random.default_rng(0)
    values = rng.normal(1.0, 0.1, size=200)
    est, lo, hi = bootstrap_ci(values, 500, seed=0)
    assert est == pytest.approx(values.mean()) and lo < est < hi and hi - lo < 0.05
    est, lo, hi = log_ratio_ci([2.0, 2.2, 1.8], [1.0, 1.1, 0.9], 200, seed=0)
    assert est == pytest.approx(math.log(2.0))
    assert math.isnan(bootstrap_ci([1.0], 10, 0)[1])
