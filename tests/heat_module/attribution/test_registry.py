"""The one method registry (names, aliases, errors, building, lazy listing) and the one contract every registered
method implements, parametrised over the registry itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import (
    available_methods,
    build,
    get_method,
    method_aliases,
    method_entries,
    method_entry,
    register_method,
    unregister_method,
)
from heat_module.config import HEATConfig
from heat_module.heat import HEAT

ROOT = Path(__file__).resolve().parents[3]
METHODS = available_methods()
TEXT = "the cat sat on the hat and"


def installed(package: str) -> bool:
    try:
        __import__(package)
    except ImportError:
        return False
    return True


def test_registry_names_aliases_and_errors():
    for name in ("heat", "attention_rollout", "last_layer_attention", "gradient_norm", "input_x_gradient",
                 "integrated_gradients", "occlusion", "random", "inseq", "attnlrp", "gated"):
        assert name in METHODS
    assert get_method("heat") is HEAT
    assert get_method("IG") is get_method("integrated_gradients")
    assert get_method("attention-rollout") is get_method("rollout")
    assert set(method_aliases().values()) <= set(METHODS)
    with pytest.raises(KeyError, match="integrated_gradients"):
        get_method("nonexistent")


def test_each_entry_is_declared_by_its_own_class():
    """The decorator is the one declaration: it sets the class's ``name`` (no second string beside it)."""
    for name, entry in method_entries().items():
        assert entry.cls.name == name and entry.title
        assert issubclass(entry.cls, Attributor), name
        for label, (title, options) in entry.evaluation.items():
            assert isinstance(label, str) and title and isinstance(options, dict)


@pytest.mark.parametrize("name", METHODS)
def test_every_registered_method_keeps_the_contract(model, tok, name):
    """Built from its entry (``example_options``), each method attributes a text to its tokens, writes its registry
    name, honours the target, and refuses right padding; a method that needs a data file refuses to build without."""
    entry = method_entry(name)
    missing = [p for p in entry.needs if not installed(p)]
    if missing:
        pytest.skip(f"optional dependency {missing} not installed")
    if entry.example_options is None:
        with pytest.raises((TypeError, ValueError)):
            build(name, model, tok)
        return
    config = HEATConfig(beta=0.0) if name == "heat" else None
    method = build(name, model, tok, config, **entry.example_options)
    res = method.attribute(TEXT, target="the")
    assert res.method == name and len(res) == 7 and res.scores.shape == (7,)
    assert res.target == "the" and res.target_id == tok.convert_tokens_to_ids("the")
    assert torch.isfinite(res.scores).all()
    with pytest.raises(ValueError, match="right padding"):
        method.attribute_batch(torch.tensor([[5, 6, 7]]), torch.tensor([[1, 1, 0]]))


def test_heat_module_resolves_baselines(model, tok, batch):
    """``HEATModule(method=...)`` builds its attributor through the registry (left padding, greedy targets)."""
    module = pytest.importorskip("heat_module.lightning.module")
    attributor = module.get_attributor("integrated_gradients", model, tok, None, steps=4)
    ids, mask, rows = batch
    results = module._run_attributor(attributor, ids, mask, torch.tensor([-1, 17, -1]))
    assert [r.method for r in results] == ["integrated_gradients"] * 3 and results[1].target_id == 17
    assert [len(r) for r in results] == [len(r) for r in rows]


def test_build_gives_heat_its_config_and_a_baseline_its_options(model, tok):
    heat = build("heat", model, tok, HEATConfig.preset("exact", curvature={"name": "exact", "probes": 2}))
    assert isinstance(heat, HEAT) and heat.config.curvature.probes == 2
    with pytest.raises(ValueError, match="method_options"):
        build("heat", model, tok, None, steps=4)
    ig = build("ig", model, tok, HEATConfig(), steps=4)
    assert ig.options()["steps"] == 4
    with pytest.raises(ValueError, match="integrated_gradients"):
        build("nonexistent", model, tok)


#: options that keep a method cheap on the tiny model (the rest run with their defaults)
CHEAP_OPTIONS = {"integrated_gradients": {"steps": 2}, "captum_lime": {"n_samples": 4},
                 "captum_shapley_value_sampling": {"n_samples": 1}, "captum_layer_integrated_gradients": {"steps": 2}}


@pytest.mark.parametrize("name", [n for n in available_methods() if method_entry(n).example_options is not None])
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
    options = {**method_entry(name).example_options, **CHEAP_OPTIONS.get(name, {})}
    method = heat if name == "heat" else build(name, model, tok, None, **options)
    method.attribute(ids[0])
    if name != "heat" and hasattr(method, "close"):
        method.close()
    heat.close()
    assert model.config._attn_implementation == before_impl
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)


def test_a_user_method_registers_with_one_decorator(model, tok):
    @register_method("constant_test", aliases=("const_test",), title="Constant")
    class Constant(Attributor):
        def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
            return torch.ones(input_ids.shape), None

    try:
        assert "constant_test" in available_methods() and get_method("const-test") is Constant
        assert build("constant_test", model, tok).attribute(TEXT).method == "constant_test"
        with pytest.raises(ValueError, match="name no other method"):
            register_method("other_test", aliases=("ig",))(Constant)
    finally:  # leave the registry as the other tests expect it
        unregister_method("constant_test")
    assert "constant_test" not in available_methods() and "const_test" not in method_aliases()


def test_listing_methods_imports_no_optional_dependency():
    code = ("import sys; from heat_module.attribution.registry import available_methods; "
            "names = available_methods(); assert 'captum_lime' in names, names; "
            "assert 'captum' not in sys.modules and 'inseq' not in sys.modules, 'imported an optional dependency'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
