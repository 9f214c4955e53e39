"""DSA: hand-checked extremes, a direct formula, index lists = bool masks, padding ignored."""

from __future__ import annotations

import pytest
import torch

from heat_module.metrics.functional import dsa
from heat_module.metrics.functional.dsa import dsa_values


def reference_dsa(scores: list[float], gold: set[int], distractor: set[int]) -> float:
    s = [max(0.0, v) for v in scores]
    total = sum(s)
    s = [v / total for v in s] if total > 0 else [1 / len(s)] * len(s)
    return sum(s[i] for i in gold) - sum(s[j] for j in distractor)


def test_hand_checked_extremes():
    gold = torch.tensor([[False, False, True, True, False, False]])
    distractor = torch.tensor([[True, True, False, False, False, False]])
    all_on_gold = torch.tensor([[0.0, -1.0, 2.0, 5.0, 0.0, 0.0]])  # negatives clip to 0
    all_on_distractor = torch.tensor([[3.0, 1.0, 0.0, 0.0, -2.0, 0.0]])
    assert float(dsa(all_on_gold, gold, distractor)) == pytest.approx(1.0)
    assert float(dsa(all_on_distractor, gold, distractor)) == pytest.approx(-1.0)
    half = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    assert float(dsa(half, gold, distractor)) == pytest.approx(0.0)
    outside = torch.tensor([[0.0, 0.0, 1.0, 0.0, 3.0, 0.0]])  # mass on neither set only dilutes
    assert float(dsa(outside, gold, distractor)) == pytest.approx(0.25)


def test_matches_reference_with_padding_and_index_lists():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 8, generator=g)
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[0, :3] = 0
    mask[1, :1] = 0
    scores[~mask.bool()] = 100.0  # junk on padding must not count
    scores[2] = -1.0  # no positive score: uniform
    gold_idx = [[3, 4], [0, 6], [7]]  # counted from the first real token
    distractor_idx = [[0, 1], [2], [0, 1, 2]]
    got = dsa_values(scores, gold_idx, distractor_idx, mask)
    for b in range(3):
        real = scores[b, mask[b].bool()].tolist()
        assert got[b] == pytest.approx(reference_dsa(real, set(gold_idx[b]), set(distractor_idx[b])), abs=1e-6)
    gold_mask = torch.zeros(3, 8, dtype=torch.bool)
    distractor_mask = torch.zeros(3, 8, dtype=torch.bool)
    for b in range(3):
        pad = int((mask[b] == 0).sum())
        gold_mask[b, [pad + i for i in gold_idx[b]]] = True
        distractor_mask[b, [pad + i for i in distractor_idx[b]]] = True
    torch.testing.assert_close(dsa_values(scores, gold_mask, distractor_mask, mask), got)
    assert got[2] == pytest.approx((1 - 3) / 8)


def test_errors():
    with pytest.raises(ValueError, match="Expected gold indices in"):
        dsa(torch.rand(1, 4), [[4]], [[0]])
    with pytest.raises(ValueError, match=r"Expected distractor of shape \(1, 4\)"):
        dsa(torch.rand(1, 4), [[1]], torch.zeros(1, 5, dtype=torch.bool))
