"""The one method registry (names, aliases, errors, building) and the one contract every method implements."""

from __future__ import annotations

import pytest
import torch

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import build
from heat_module.baselines import AttributionMethod, available_methods, get_method
from heat_module.config import HEATConfig
from heat_module.heat import HEAT


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
    module = pytest.importorskip("heat_module.lightning.module")
    attributor = module.get_attributor("integrated_gradients", model, tok, None, steps=4)
    ids, mask, rows = batch
    results = module._run_attributor(attributor, ids, mask, torch.tensor([-1, 17, -1]))
    assert [r.method for r in results] == ["integrated_gradients"] * 3 and results[1].target_id == 17
    assert [len(r) for r in results] == [len(r) for r in rows]


def test_every_method_is_an_attributor():
    assert AttributionMethod is Attributor
    for name in available_methods():
        if name.startswith("captum"):
            continue  # optional dependency
        assert issubclass(get_method(name), Attributor), name


def test_build_gives_heat_its_config_and_a_baseline_its_options(model, tok):
    heat = build("heat", model, tok, HEATConfig.preset("exact", probes=2))
    assert isinstance(heat, HEAT) and heat.config.probes == 2
    with pytest.raises(ValueError, match="method_options"):
        build("heat", model, tok, None, steps=4)
    ig = build("ig", model, tok, HEATConfig(), steps=4)
    assert ig.options()["steps"] == 4
    with pytest.raises(ValueError, match="integrated_gradients"):
        build("nonexistent", model, tok)
