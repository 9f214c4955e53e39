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


#: options that keep a method cheap on the tiny model (the rest run with their defaults)
CHEAP_OPTIONS = {"integrated_gradients": {"steps": 2}, "captum_lime": {"n_samples": 4},
                 "captum_shapley_value_sampling": {"n_samples": 1}, "captum_layer_integrated_gradients": {"steps": 2}}


@pytest.mark.parametrize("name", [n for n in available_methods() if n != "inseq"])  # inseq reads files, no model
def test_every_method_gives_the_model_back(tok, name):
    """After a method has run (and been closed, where it can be), the model has its attention implementation and
    its logits as before — also when a HEAT object was open meanwhile and is closed afterwards."""
    from heat_module.testing import tiny_model

    if name.startswith("captum"):
        pytest.importorskip("captum")
    model = tiny_model("llama", seed=0)
    ids = torch.randint(4, 60, (1, 6), generator=torch.Generator().manual_seed(0))
    before_impl = model.config._attn_implementation
    with torch.no_grad():
        before = model(ids).logits
    heat = HEAT(model, tok, HEATConfig())
    options = CHEAP_OPTIONS.get(name, {})
    method = heat if name == "heat" else build(name, model, tok, None, **options)
    method.attribute(ids[0])
    if name != "heat" and hasattr(method, "close"):
        method.close()
    heat.close()
    assert model.config._attn_implementation == before_impl
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)
