"""Contrastive HEAT (foil): g = log P(target) − log P(foil); S and I checked against a direct computation on an eager
copy of the model that never goes through our capture code; multi-token text targets go to the sentence path."""

import pytest
import torch

import heat_module as hm
from heat_module.heat.curvature import rademacher
from heat_module.heat.s_exact import ExactS
from heat_module.lm.capture import install
from heat_module.testing import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "the cat sat on the old"


@pytest.fixture(scope="module")
def models():
    reference = tiny_model("llama", attn_implementation="eager").double()  # never installed
    heat_model = install(tiny_model("llama").double())
    return reference, heat_model


def contrast_fn(model, target, foil):
    def g(x):
        logp = torch.log_softmax(model(inputs_embeds=x).logits[0, -1], -1)
        return logp[target] - logp[foil]

    return g


def test_foil_equal_to_target_gives_zero_scores(models, tiny_tok):
    cfg = hm.HEATConfig.preset("exact", curvature=ExactS(probes=2), alpha=0.5)
    res = hm.HEAT(models[1], tiny_tok, cfg).attribute(TEXT, target="hat", foil="hat")
    assert torch.count_nonzero(res.scores) == 0
    assert torch.count_nonzero(res.curvature) == 0 and torch.count_nonzero(res.information) == 0
    assert torch.count_nonzero(res.first_order) == 0
    assert res.extra["foil"] == "hat" and res.extra["foil_id"] == res.target_id


def test_contrastive_s_and_i_equal_direct_computation(models, tiny_tok):
    reference, heat_model = models
    cfg = hm.HEATConfig.preset("exact", curvature=ExactS(probes=3), seed=7)
    res = hm.HEAT(heat_model, tiny_tok, cfg).attribute(TEXT, target="hat", foil="tree")
    t, f = res.target_id, res.extra["foil_id"]
    assert t != f
    ids = res.token_ids[None]
    x = reference.get_input_embeddings()(ids).detach()
    n, d = x.shape[1:]
    g = contrast_fn(reference, t, f)
    H = torch.autograd.functional.hessian(lambda flat: g(flat.view(1, n, d)), x.flatten()).view(n, d, n, d)
    m = cfg.curvature.probes
    probes = rademacher(m, n, d, seed=cfg.seed, dtype=x.dtype)
    s = torch.stack([torch.stack([(H[i, :, i, :] @ probes[k, i]).abs().sum() for k in range(m)]).mean()
                     for i in range(n)])
    torch.testing.assert_close(res.curvature.double(), s, rtol=1e-5, atol=1e-9)
    with torch.no_grad():
        base = g(x)
        delta = []
        for i in range(n):
            masked = x.clone()
            masked[0, i] = 0.0  # mask="zero": the paper's mask vector
            delta.append((g(masked) - base).abs())
    # next_token_logits returns fp32 logits, so Δ (a difference of log-probabilities ~5) carries ~1e-6 round-off
    torch.testing.assert_close(res.information.double(), torch.stack(delta), rtol=1e-5, atol=5e-6)
    # M unchanged: the same gate as the plain attribution of the same target
    plain = hm.HEAT(heat_model, tiny_tok, cfg).attribute(TEXT, target="hat")
    torch.testing.assert_close(res.transition, plain.transition)
    assert not torch.allclose(res.curvature, plain.curvature)


def test_foil_needs_exact_curvature_and_no_window(models, tiny_tok):
    with pytest.raises(ValueError, match="curvature='exact'"):
        hm.HEAT(models[1], tiny_tok, hm.HEATConfig.preset("fisher")).attribute(TEXT, target="hat", foil="tree")
    with pytest.raises(ValueError, match="window=None"):
        hm.HEAT(models[1], tiny_tok, hm.HEATConfig.preset("exact", window=4)).attribute(TEXT, target="hat", foil="tree")


def test_multi_token_text_target_goes_to_sentence_level(models, tiny_tok):
    heat = hm.HEAT(models[1], tiny_tok, hm.HEATConfig.preset("exact", aggregation="max"))
    res = heat.attribute(TEXT, target="red hat")
    assert res.method == "heat-sentence" and res.extra["aggregation"] == "max"
    assert res.extra["multi_token_target"] == "red hat"
    expected = heat.attribute_sentence(TEXT, "red hat", aggregation="max")
    torch.testing.assert_close(res.scores, expected.scores)
    assert res.extra["targets"] == tiny_tok("red hat", add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="single-token target with a foil"):
        heat.attribute(TEXT, target="red hat", foil="tree")
