"""mid_ranks, the one mid-rank computation (Spearman's ρ, rank-normalised scores, the choice study's rule), against
scipy's rankdata."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import rankdata

from heat_module.metrics.functional.common import mid_ranks


@pytest.mark.parametrize("seed", range(5))
def test_mid_ranks_equal_scipy_rankdata_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(0, 6, (40,), generator=g).double() / 3  # many ties
    assert mid_ranks(values).tolist() == rankdata(values.numpy(), method="average").tolist()


def test_mid_ranks_nan_gets_nan_and_leaves_the_others():
    got = mid_ranks(torch.tensor([0.3, math.nan, 0.1, 0.3]))
    assert math.isnan(got[1])
    assert got[[0, 2, 3]].tolist() == [2.5, 1.0, 2.5]


def test_mid_ranks_refuses_a_matrix():
    with pytest.raises(ValueError, match="Expected a vector"):
        mid_ranks(torch.zeros(2, 2))
