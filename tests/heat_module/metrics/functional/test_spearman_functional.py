"""Spearman ρ on degenerate inputs (constant vectors, one element, mismatched lengths)."""

from __future__ import annotations

import pytest
import torch

from heat_module.metrics.functional import spearman_rho


def test_degenerate_cases():
    assert float(spearman_rho(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0]))) == pytest.approx(-1)
    assert float(spearman_rho(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 2.0]))) == 0.0
    assert float(spearman_rho(torch.tensor([1.0]), torch.tensor([2.0]))) == 0.0
    with pytest.raises(ValueError, match="Expected two vectors of the same length"):
        spearman_rho(torch.zeros(3), torch.zeros(4))
