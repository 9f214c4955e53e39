"""The ActivePassiveRobustness Metric class and the functional form against scipy.stats.spearmanr (ties included)."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

from heat_module.metrics import ActivePassiveRobustness
from heat_module.metrics.functional import active_passive_robustness


def test_matches_scipy_with_ties_and_valid_mask():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 4, (6, 9), generator=g).float()
    b = a + torch.randn(6, 9, generator=g)
    valid = torch.rand(6, 9, generator=g) > 0.2
    metric = ActivePassiveRobustness()
    metric.update(a[:3], b[:3], valid[:3])
    metric.update(a[3:], b[3:], valid[3:])
    expected = [spearmanr(a[i][valid[i]].numpy(), b[i][valid[i]].numpy()).statistic for i in range(6)]
    assert float(metric.compute()) == pytest.approx(sum(expected) / 6, abs=1e-6)
    assert float(active_passive_robustness(a, b, valid)) == pytest.approx(sum(expected) / 6, abs=1e-6)
