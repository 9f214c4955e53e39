"""ABPC against an independent re-implementation written here (one forward per perturbed copy, no batching)."""

from __future__ import annotations

import pytest
import torch

from heat_module.metrics.functional import abpc
from heat_module.metrics.functional.abpc import abpc_counts, abpc_values


def reference_abpc(model, x: torch.Tensor, scores: torch.Tensor, target: int, steps: int) -> float:
    """x (n, d) one unpadded example: (1/T) Σ_j [P(y | only the top k_j kept) − P(y | top k_j zeroed)]."""
    n = x.shape[0]
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    total = 0.0
    for j in range(1, steps):
        k = min(max(round(j * n / steps), 1), n - 1)
        ins, dele = torch.zeros_like(x), x.clone()
        for i in order[:k]:
            ins[i] = x[i]
            dele[i] = 0.0
        with torch.no_grad():
            p_ins = torch.softmax(model(inputs_embeds=ins[None]).logits[0, -1], -1)[target]
            p_del = torch.softmax(model(inputs_embeds=dele[None]).logits[0, -1], -1)[target]
        total += float(p_ins - p_del)
    return total / steps


@pytest.mark.parametrize("steps", [2, 4, 10])
def test_abpc_matches_the_reference_on_a_padded_batch(model, forward_fn, batch, scores, steps):
    x, mask, targets, examples = batch
    values = abpc_values(scores, x, mask, targets, forward_fn, steps=steps, batch_size=5)
    for b, (e, y) in enumerate(examples):
        real = mask[b].bool()
        want = reference_abpc(model, e, scores[b, real], y, steps)
        assert values[b].item() == pytest.approx(want, abs=1e-5)
    assert abpc(scores, x, mask, targets, forward_fn, steps=steps).item() == pytest.approx(values.mean().item())


def test_only_the_order_counts_and_reversal_flips_the_sign(forward_fn, batch, scores):
    """Peaked scores of the same order score the same; reversing the order negates ABPC (insertion of the top k ≡
    deletion of the rest)."""
    x, mask, targets, _ = batch
    base = abpc_values(scores, x, mask, targets, forward_fn, steps=4)
    peaked = torch.where(mask.bool(), torch.exp(20 * scores), scores)
    assert torch.allclose(abpc_values(peaked, x, mask, targets, forward_fn, steps=4), base, atol=1e-6)
    # n even and T | n keeps the counts symmetric: k_j and n − k_j are both on the grid
    n = 8
    ids_x = x[2:3, -n:]
    s = torch.arange(n, dtype=torch.float32)[None]
    a = abpc_values(s, ids_x, None, targets[2:3], forward_fn, steps=4)
    b = abpc_values(-s, ids_x, None, targets[2:3], forward_fn, steps=4)
    assert a.item() == pytest.approx(-b.item(), abs=1e-6)


def test_counts_and_errors():
    assert abpc_counts(10, 4) == [2, 5, 8]
    assert abpc_counts(2, 4) == [1, 1, 1]
    with pytest.raises(ValueError, match="Expected steps"):
        abpc(torch.ones(1, 3), torch.zeros(1, 3, 4), None, torch.tensor([0]), lambda x, m: x[:, -1], steps=1)
