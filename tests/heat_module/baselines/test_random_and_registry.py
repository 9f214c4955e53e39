"""Random scores (seeded, batch-independent) and the method registry."""

from __future__ import annotations

import pytest
import torch

from heat_module.baselines import available_methods, get_method
from heat_module.heat import HEAT


def test_random_scores_are_seeded_and_batch_independent(model, batch, check_batched):
    method = get_method("random")(model, seed=3)
    results = check_batched(method, batch, atol=0, rtol=0)
    again = get_method("random")(model, seed=3).attribute(batch[2][0])
    other = get_method("random")(model, seed=4).attribute(batch[2][0])
    torch.testing.assert_close(results[0].scores, again.scores, atol=0, rtol=0)
    assert not torch.equal(again.scores, other.scores)
    assert ((again.scores >= 0) & (again.scores < 1)).all()


def test_registry_names_aliases_and_errors(model):
    names = available_methods()
    for name in ("heat", "attention_rollout", "last_layer_attention", "gradient_norm", "input_x_gradient",
                 "integrated_gradients", "occlusion", "random", "inseq"):
        assert name in names
    assert get_method("heat") is HEAT
    assert get_method("IG") is get_method("integrated_gradients")
    assert get_method("attention-rollout") is get_method("rollout")
    with pytest.raises(KeyError, match="integrated_gradients"):
        get_method("nonexistent")


@pytest.mark.parametrize("name", ["attention_rollout", "last_layer_attention", "gradient_norm", "input_x_gradient",
                                  "integrated_gradients", "occlusion", "random"])
def test_every_baseline_keeps_the_contract(model, tok, name):
    method = get_method(name)(model, tok)
    res = method.attribute("the cat sat on the hat and", target="the")
    assert res.method == name and len(res) == 7 and res.scores.shape == (7,)
    assert res.target == "the" and res.target_id == tok.convert_tokens_to_ids("the")
    assert torch.isfinite(res.scores).all()
    with pytest.raises(ValueError, match="right padding"):
        method.attribute_batch(torch.tensor([[5, 6, 7]]), torch.tensor([[1, 1, 0]]))


def test_heat_module_resolves_baselines(model, tok, batch):
    """``HEATModule(method=...)`` builds its attributor through ``get_method`` (left padding, greedy targets)."""
    module = pytest.importorskip("heat_module.module")
    attributor = module.get_attributor("integrated_gradients", model, tok, None, steps=4)
    ids, mask, rows = batch
    results = module._run_attributor(attributor, ids, mask, torch.tensor([-1, 17, -1]))
    assert [r.method for r in results] == ["integrated_gradients"] * 3 and results[1].target_id == 17
    assert [len(r) for r in results] == [len(r) for r in rows]
