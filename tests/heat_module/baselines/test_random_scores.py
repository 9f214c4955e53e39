"""Random scores: seeded, and independent of the batch an example is in."""

from __future__ import annotations

import torch

from heat_module.baselines import get_method


def test_random_scores_are_seeded_and_batch_independent(model, batch, check_batched):
    method = get_method("random")(model, seed=3)
    results = check_batched(method, batch, atol=0, rtol=0)
    again = get_method("random")(model, seed=3).attribute(batch[2][0])
    other = get_method("random")(model, seed=4).attribute(batch[2][0])
    torch.testing.assert_close(results[0].scores, again.scores, atol=0, rtol=0)
    assert not torch.equal(again.scores, other.scores)
    assert ((again.scores >= 0) & (again.scores < 1)).all()
