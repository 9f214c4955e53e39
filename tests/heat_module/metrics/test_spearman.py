"""Active/passive Spearman ρ against scipy.stats.spearmanr (ties included), class = function."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr

from heat_module.metrics import ActivePassiveRobustness
from heat_module.metrics.functional import active_passive_robustness, spearman_rho


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


def test_degenerate_cases():
    assert float(spearman_rho(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0]))) == pytest.approx(-1)
    assert float(spearman_rho(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 2.0]))) == 0.0
    assert float(spearman_rho(torch.tensor([1.0]), torch.tensor([2.0]))) == 0.0
    with pytest.raises(ValueError, match="Expected two vectors of the same length"):
        spearman_rho(torch.zeros(3), torch.zeros(4))
