"""HEAT-LS: curvature w.r.t. the residual stream entering layer L-k (tiny models, float64)."""

import pytest
import torch

import heat_module as hm
from heat_module.heat.cost import exact_fe
from heat_module.heat.curvature import rademacher
from heat_module.heat.layer_sampling import decoder_layers, residual_input, residual_stream
from heat_module.heat.s_exact import ExactS
from heat_module.heat.s_fisher import FisherS
from heat_module.heat.s_lowrank import LowRankS
from heat_module.lm.capture import eager_attention_mode
from heat_module.lm.forward import embed, next_token_logits
from tests.conftest import make_tiny

TEXT = "the cat sat on the hat because it"


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_all_layers_equals_exact(arch, tiny_tok):
    """k = L: the residual stream entering layer 0 is X (Llama) or X + position embeddings (GPT-2): same S."""
    model = make_tiny(arch)
    cfg = hm.HEATConfig.preset("exact", curvature=ExactS(probes=2))
    exact = hm.HEAT(model, tiny_tok, cfg).attribute(TEXT)
    ls = hm.HEAT(model, tiny_tok, cfg.replace(curvature=ExactS(probes=2, layers=model.config.num_hidden_layers))
                 ).attribute(TEXT)
    torch.testing.assert_close(ls.curvature, exact.curvature, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ls.scores, exact.scores, rtol=1e-9, atol=1e-12)
    assert ls.cost["curvature_layers"] == [0, model.config.num_hidden_layers]


def llama_upper(model, h, start, target):
    """g(h) written out by hand: Llama layers start..L-1, final norm, LM head (no hooks, no HEAT code)."""
    inner = model.model
    n = h.shape[1]
    pos = torch.arange(n)[None]
    cos_sin = inner.rotary_emb(h, pos)
    mask = torch.full((n, n), torch.finfo(h.dtype).min, dtype=h.dtype).triu(1)[None, None]
    with eager_attention_mode():
        for layer in inner.layers[start:]:
            h = layer(h, attention_mask=mask, position_ids=pos, position_embeddings=cos_sin)
    logits = model.lm_head(inner.norm(h)[:, -1])
    return torch.log_softmax(logits.float(), -1)[0, target]


def test_last_layers_match_double_backward_wrt_hidden_state(tiny_tok):
    model = make_tiny("llama", layers=3)
    k, start = 2, 1
    s = ExactS(probes=2, layers=k, hvp_chunk_size=4)
    heat = hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("exact", curvature=s))  # several runs
    res = heat.attribute(TEXT)
    ids = res.token_ids[None]
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    h = out.hidden_states[start].detach()  # input of decoder layer `start`
    torch.testing.assert_close(residual_input(model, embed(model, ids), start), h)
    n, d = h.shape[1:]
    probes = rademacher(2, n, d, seed=0, dtype=h.dtype)
    hh = h.clone().requires_grad_(True)
    (gh,) = torch.autograd.grad(llama_upper(model, hh, start, res.target_id), hh, create_graph=True)
    expected = torch.zeros(n, dtype=torch.float64)
    for i in range(n):
        for j in range(2):
            (hv,) = torch.autograd.grad((gh[0, i] * probes[j, i]).sum(), hh, retain_graph=True)
            expected[i] += hv[0, i].abs().sum() / 2
    torch.testing.assert_close(res.curvature.double(), expected, rtol=1e-5, atol=1e-8)
    exact = hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("exact", curvature=ExactS(probes=2))).attribute(TEXT)
    assert not torch.allclose(res.curvature, exact.curvature)
    # cost: one forward to read h, and each HVP runs k of L layers
    hvp_fe = exact_fe(n, 2, 4, share=True)
    assert res.cost["forward_equivalents"] == pytest.approx(1 + 1 + n + hvp_fe * k / 3)


@pytest.mark.parametrize("s", [FisherS(topk=5), LowRankS(rank=6)])
def test_all_layers_composes_with_other_modes(s, tiny_tok):
    model = make_tiny("qwen2")
    cfg = hm.HEATConfig.preset("exact", curvature=s)
    plain = hm.HEAT(model, tiny_tok, cfg).attribute(TEXT)
    ls = hm.HEAT(model, tiny_tok, cfg.replace(curvature=s.replace(layers=2))).attribute(TEXT)
    torch.testing.assert_close(ls.curvature, plain.curvature, rtol=1e-7, atol=1e-9)
    ls1 = hm.HEAT(model, tiny_tok, cfg.replace(curvature=s.replace(layers=1))).attribute(TEXT)
    assert torch.isfinite(ls1.curvature).all() and not torch.allclose(ls1.curvature, plain.curvature)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_residual_stream_skips_lower_layers_and_restores_model(arch):
    model = make_tiny(arch, layers=3)
    ids = torch.tensor([[5, 9, 14, 20]])
    x = embed(model, ids)
    with torch.no_grad():
        before = next_token_logits(model, x)
        h = residual_input(model, x, 2)
        with residual_stream(model, 2):
            via_h = next_token_logits(model, h)
        after = next_token_logits(model, x)
    torch.testing.assert_close(via_h, before)
    torch.testing.assert_close(after, before)
    layers = decoder_layers(model)
    assert all("forward" not in layer.__dict__ and not layer._forward_pre_hooks for layer in layers)
    assert not model._forward_pre_hooks


def test_bad_layer_count(tiny_tok):
    model = make_tiny("llama")
    with pytest.raises(ValueError, match="Expected layers"):
        hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("exact", curvature=ExactS(layers=5))).attribute(TEXT)


def test_reverse_over_reverse_mode(tiny_tok):
    model = make_tiny("llama", layers=3)
    cfg = hm.HEATConfig.preset("exact", curvature=ExactS(probes=2, layers=2, hvp_chunk_size=4))
    a = hm.HEAT(model, tiny_tok, cfg).attribute(TEXT)
    b = hm.HEAT(model, tiny_tok, cfg.replace(curvature=cfg.curvature.replace(hvp_mode="reverse_over_reverse"))
                ).attribute(TEXT)
    torch.testing.assert_close(a.curvature, b.curvature, rtol=1e-5, atol=1e-9)
