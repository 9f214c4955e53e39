"""``recency``: rate^(n − 1 − i) by hand, its option checks, and the rate fitted on held-apart results."""

from __future__ import annotations

import pytest
import torch

from heat_module.attribution.registry import build
from heat_module.baselines.recency import fit_rate
from heat_module.result import AttributionResult


def test_geometric_scores_by_hand(model, tok, batch, check_batched):
    res = build("recency", model, tok).attribute("the cat sat on the")
    assert res.scores.tolist() == [0.0625, 0.125, 0.25, 0.5, 1.0] and res.config == {"rate": 0.5}
    res = build("recency", model, tok, rate=0.2).attribute([5, 6, 7])
    torch.testing.assert_close(res.scores, torch.tensor([0.04, 0.2, 1.0]))
    assert build("recency", model, rate=1).attribute([5, 6, 7]).scores.tolist() == [1.0, 1.0, 1.0]
    check_batched(build("recency", model), batch)
    for bad in (0.0, 1.5, "0.5", True):
        with pytest.raises(ValueError, match="Expected rate in"):
            build("recency", model, rate=bad)


def test_fit_recovers_the_rate_of_the_reference_scores():
    """Scores that are a geometric profile of rate r (any scale, any length) fit r; noise moves it little."""
    g = torch.Generator().manual_seed(0)
    exact = [3.0 * 0.3 ** torch.arange(n - 1, -1, -1, dtype=torch.float64) for n in (4, 7, 12)]
    assert fit_rate(exact) == 0.3
    noisy = [s * (1 + 0.05 * torch.rand(s.shape, generator=g, dtype=torch.float64)) for s in exact]
    assert abs(fit_rate(noisy) - 0.3) <= 0.02
    results = [AttributionResult(tokens=["a"] * len(s), token_ids=torch.arange(len(s)), target="b", target_id=1,
                                 scores=s.float(), method="reference") for s in exact]
    assert fit_rate(results, rates=(0.1, 0.3, 0.9)) == 0.3
    assert fit_rate([torch.ones(5)]) == 1.0  # uniform scores: rate 1
    with pytest.raises(ValueError, match="positive scores"):
        fit_rate([torch.zeros(4), -torch.ones(3)])
    with pytest.raises(ValueError, match=r"rates in \(0, 1\]"):
        fit_rate(exact, rates=(0.0, 0.5))
