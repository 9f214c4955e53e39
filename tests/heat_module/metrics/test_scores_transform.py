"""Soft-NC / Soft-NS on ranks or at a fixed entropy: the transform checked by hand, and the metric with the option
equal to the plain metric on scores transformed here (an independent path)."""

from __future__ import annotations

import math

import pytest
import torch

from heat_module.metrics import SoftNC, SoftNS
from heat_module.metrics.functional import soft_faithfulness
from heat_module.metrics.functional.common import entropy_scores, rank_scores, transform_scores


def test_rank_scores_by_hand():
    # ranks from the lowest: 0.2 -> 1, 5 -> 4, -1 -> ... ; ties share the mean rank
    s = torch.tensor([0.2, 5.0, -1.0, 0.2])
    want = torch.tensor([2.5, 4.0, 1.0, 2.5]) / 10.0
    assert torch.allclose(rank_scores(s), want)
    assert torch.allclose(rank_scores(torch.exp(30 * s)), want)  # only the order counts


def test_entropy_scores_have_the_asked_entropy_and_order():
    s = torch.tensor([0.0, 3.0, 1.0, 10.0, 2.0])
    for fraction in (0.3, 0.8, 0.95):
        p = entropy_scores(s, fraction)
        h = -(p * p.log()).sum().item()
        assert h == pytest.approx(fraction * math.log(5), abs=1e-4)
        assert torch.equal(torch.argsort(p), torch.argsort(s))
    assert torch.allclose(entropy_scores(torch.ones(4)), torch.full((4,), 0.25))
    with pytest.raises(ValueError, match="scores_transform"):
        transform_scores(s, "softmax")


@pytest.mark.parametrize("transform", ["rank", "entropy"])
def test_metric_with_transform_equals_plain_metric_on_transformed_scores(forward_fn, batch, scores, transform):
    x, mask, _, _ = batch
    pre = torch.zeros_like(scores)
    for b in range(scores.shape[0]):
        real = mask[b].bool()
        s = scores[b, real]
        pre[b, real] = rank_scores(s) if transform == "rank" else entropy_scores(s, 0.8)
    got = soft_faithfulness(scores, x, mask, forward_fn, num_masks=3, seed=2, random_baseline=False,
                            scores_transform=transform)
    want = soft_faithfulness(pre, x, mask, forward_fn, num_masks=3, seed=2, random_baseline=False)
    for k in ("soft_nc", "soft_ns"):
        assert got[k].item() == pytest.approx(want[k].item(), abs=1e-6)
    nc = SoftNC(forward_fn, num_masks=3, seed=2, random_baseline=False, scores_transform=transform)
    ns = SoftNS(forward_fn, num_masks=3, seed=2, random_baseline=False, scores_transform=transform)
    nc.update(scores, x, mask)
    ns.update(scores, x, mask)
    assert nc.compute()["soft_nc"].item() == pytest.approx(want["soft_nc"].item(), abs=1e-6)
    assert ns.compute()["soft_ns"].item() == pytest.approx(want["soft_ns"].item(), abs=1e-6)


def test_peaked_scores_gain_nothing_on_ranks(forward_fn, batch, scores):
    x, mask, _, _ = batch
    peaked = torch.where(mask.bool(), torch.exp(25 * scores), scores)
    a = soft_faithfulness(scores, x, mask, forward_fn, num_masks=2, random_baseline=False, scores_transform="rank")
    b = soft_faithfulness(peaked, x, mask, forward_fn, num_masks=2, random_baseline=False, scores_transform="rank")
    assert a["soft_nc"].item() == pytest.approx(b["soft_nc"].item(), abs=1e-6)
    with pytest.raises(ValueError, match="scores_transform"):
        SoftNC(forward_fn, scores_transform="flat")
