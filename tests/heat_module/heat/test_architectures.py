"""Right numbers on current decoders: for each tiny architecture, HEAT's g, I and M against references
computed without HEAT's code — the unmodified model (a deep copy never installed), its own eager
``output_attentions`` and value / output projections read from its weights — or the documented refusal."""

import copy
import dataclasses
import warnings

import pytest
import torch

from heat_module import HEAT, HEATConfig
from heat_module.heat.curvature import curvature_exact, curvature_naive, rademacher
from heat_module.heat.information import information, information_naive
from heat_module.heat.layer_sampling import residual_input, residual_stream
from heat_module.heat.objective import target_logprob_fn
from heat_module.heat.s_exact import ExactS
from heat_module.heat.transition import sink_positions, transition_from_captures
from heat_module.lm.anatomy import mask_band
from heat_module.lm.capture import can_share_prefix, capture, install
from heat_module.lm.forward import embed, next_token_logits
from heat_module.result import Cost
from heat_module.testing import TINY_VOCAB, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")

ARCHS = ("gemma2", "gemma3_sliding", "lfm2", "gpt_oss", "llama4", "phi3", "qwen2", "deepseek_v3")
HYBRIDS = ("lfm2",)
N = 11  # longer than the window / chunk (4) of the banded architectures


def _models(arch: str):
    """(HEAT-installed model, an untouched deep copy in eager mode): fp64."""
    model = tiny_model(arch).double()
    reference = copy.deepcopy(model)
    reference.set_attn_implementation("eager")
    return install(model), reference


def _ids(n: int = N, seed: int = 3) -> torch.Tensor:
    return torch.randint(4, TINY_VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


def _captures(model, x, am=None):
    with torch.no_grad(), capture() as caps:
        logits = next_token_logits(model, x, am)
    return logits, caps


@pytest.mark.parametrize("arch", ARCHS)
def test_g_equals_unmodified_model(arch):
    model, reference = _models(arch)
    x = embed(reference, _ids())
    with torch.no_grad():
        expected = torch.log_softmax(reference(inputs_embeds=x).logits[0, -1], -1)
        for y in (5, 17, 60):
            got = target_logprob_fn(model, y)(x)  # the eager, differentiable path (fp32 logits, as HEAT's)
            torch.testing.assert_close(got.double(), expected[y], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_information_equals_naive_loop(arch):
    model, reference = _models(arch)
    x = embed(reference, _ids())
    logits, caps = _captures(model, x)
    # the prefix cache runs on every non-hybrid but Llama 4 (its attention temperature reads the cache's length)
    assert can_share_prefix(caps) == (arch not in (*HYBRIDS, "llama4"))
    got = information(model, x, caps, torch.log_softmax(logits, -1), batch_size=3)
    expected = information_naive(reference, x)
    # HEAT's logits are fp32 (next_token_logits): I agrees to fp32 round-off, not more
    torch.testing.assert_close(got.double(), expected.double(), rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_left_padding_equals_unpadded(arch):
    model, _ = _models(arch)
    ids = _ids()
    pad = 3
    padded = torch.cat([torch.zeros(1, pad, dtype=ids.dtype), ids], 1)
    am = torch.ones_like(padded)
    am[0, :pad] = 0
    gate = "attention_only" if arch in HYBRIDS else "full"
    x, xp = embed(model, ids), embed(model, padded)
    logits, caps = _captures(model, x)
    logits_p, caps_p = _captures(model, xp, am)
    torch.testing.assert_close(logits_p, logits, rtol=1e-6, atol=1e-6)
    m = transition_from_captures(caps, sink="keep", gate=gate)[0]
    m_p = transition_from_captures(caps_p, am, sink="keep", gate=gate)[0]
    torch.testing.assert_close(m_p[pad:], m, rtol=1e-5, atol=1e-7)
    assert float(m_p[:pad].abs().sum()) == 0
    info = information(model, x, caps, torch.log_softmax(logits, -1), batch_size=4)
    info_p = information(model, xp, caps_p, torch.log_softmax(logits_p, -1), am, batch_size=4)
    torch.testing.assert_close(info_p[pad:], info, rtol=1e-4, atol=2e-6)


def _value_states(layer_attn, hidden: torch.Tensor, config) -> torch.Tensor:
    """(B, H_kv, n, d_v) values from the attention module's own projections (no capture involved)."""
    B, n, _ = hidden.shape
    if hasattr(layer_attn, "kv_b_proj"):  # MLA (DeepSeek-V3): values are the last d_v of each head of kv_b_proj
        kv = layer_attn.kv_a_proj_with_mqa(hidden)[..., : config.kv_lora_rank]
        kv = layer_attn.kv_b_proj(layer_attn.kv_a_layernorm(kv))
        kv = kv.view(B, n, config.num_attention_heads, config.qk_nope_head_dim + config.v_head_dim)
        return kv[..., config.qk_nope_head_dim:].transpose(1, 2)
    hkv = config.num_key_value_heads
    if hasattr(layer_attn, "qkv_proj"):  # Phi-3: fused q, k, v
        v = layer_attn.qkv_proj(hidden)[..., -hkv * layer_attn.head_dim:]
    else:
        v = layer_attn.v_proj(hidden)
    return v.view(B, n, hkv, -1).transpose(1, 2)


def _rollout_reference(reference, ids: torch.Tensor, chosen=None) -> torch.Tensor:
    """(n,) M (sink kept) from the model's own eager attentions and its weights: ρ^{L-1} = e_p,
    Φ^{l,h} = ρ^l A^{l,h}, M += Σ_h Φ^{l,h}·‖v^{l,h} W_O^{l,h}‖₁, ρ ← ½ρ + ½ mean_h Φ^{l,h}; over attention layers."""
    attn_modules = [layer.self_attn for layer in reference.model.layers if hasattr(layer, "self_attn")]
    inputs: list[torch.Tensor] = []
    hooks = [a.register_forward_pre_hook(lambda mod, args, kw: inputs.append(kw["hidden_states"]), with_kwargs=True)
             for a in attn_modules]
    with torch.no_grad():
        out = reference(ids, output_attentions=True)
    for h in hooks:
        h.remove()
    attentions = [a for a in out.attentions if a is not None]
    assert len(attentions) == len(attn_modules) == len(inputs)
    n = ids.shape[1]
    rho = torch.zeros(n, dtype=torch.float64)
    rho[-1] = 1.0
    m = torch.zeros(n, dtype=torch.float64)
    config = reference.config
    for module, hidden, attn in reversed(list(zip(attn_modules, inputs, attentions))):
        H = attn.shape[1]
        with torch.no_grad():
            v = _value_states(module, hidden, config)[0]  # (H_kv, n, d_v)
        proj = getattr(module, "o_proj", None) or module.out_proj
        dv = v.shape[-1]
        phi = torch.einsum("j,hji->hi", rho, attn[0].double())
        for h in range(H):
            w_o = proj.weight[:, h * dv:(h + 1) * dv].double()  # (d, d_v)
            norms = (v[h // (H // v.shape[0])] @ w_o.T).abs().sum(-1)
            m += phi[h] * norms
        rho = 0.5 * rho + 0.5 * phi.mean(0)
    return m / m.sum()


@pytest.mark.parametrize("backend", ["torch", "auto"])
@pytest.mark.parametrize("arch", ARCHS)
def test_transition_equals_eager_output_attentions(arch, backend):
    model, reference = _models(arch)
    ids = _ids()
    _, caps = _captures(model, embed(model, ids))
    expected = _rollout_reference(reference, ids)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if arch in HYBRIDS:
            with pytest.raises(ValueError, match="attention_only"):
                transition_from_captures(caps, sink="keep", backend=backend)
            got = transition_from_captures(caps, sink="keep", backend=backend, gate="attention_only")[0]
        else:
            got = transition_from_captures(caps, sink="keep", backend=backend)[0]
    assert not [w for w in caught if "rollout_phi" in str(w.message) or "materialised" in str(w.message)]
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-7)


def test_sinks_take_mass():
    """GPT-OSS's learned sinks: the captured attention rows sum to less than one, as the model's own weights."""
    model, reference = _models("gpt_oss")
    ids = _ids()
    _, caps = _captures(model, embed(model, ids))
    assert all(c.sinks is not None for c in caps)
    with torch.no_grad():
        attentions = reference(ids, output_attentions=True).attentions
    rows = attentions[1][0].sum(-1)
    assert float(rows.max()) < 1 - 1e-6


def test_sink_positions_by_hand():
    # Two rows of n = 4, all valid except row 1's first position (left padding).
    # phi_mass row 0 = [6, 1, 2, 1] -> alpha = [0.6, 0.1, 0.2, 0.1]; norm_mass row 0 = [1, 4, 4, 3]:
    #   mean over valid = 3 -> nu = [1/3, 4/3, 4/3, 1]. Sink: alpha >= 0.2 and nu < 0.5 -> only position 0.
    #   (position 2 has alpha = 0.2 but nu = 4/3.)
    # phi_mass row 1 = [9, 1, 1, 2] with position 0 padding -> alpha over valid = [0, 0.25, 0.25, 0.5];
    #   norm_mass row 1 = [0, 2, 2, 0.5]: mean over the 3 valid = 1.5 -> nu = [0, 4/3, 4/3, 1/3].
    #   Sinks: position 3 (alpha 0.5, nu 1/3); position 0 is padding, never a sink.
    phi = torch.tensor([[6.0, 1.0, 2.0, 1.0], [9.0, 1.0, 1.0, 2.0]])
    norms = torch.tensor([[1.0, 4.0, 4.0, 3.0], [0.0, 2.0, 2.0, 0.5]])
    valid = torch.tensor([[True, True, True, True], [False, True, True, True]])
    expected = torch.tensor([[True, False, False, False], [False, False, False, True]])
    assert torch.equal(sink_positions(phi, norms, valid), expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_exact_curvature_with_prefix_cache_equals_naive(arch):
    """Exact S (eq. 3) with the frozen prefix cache (window / chunks rebuilt; refused on hybrids) against the
    per-token double backward through the unmodified eager model."""
    model, reference = _models(arch)
    ids = _ids(8)
    x = embed(reference, ids)
    _, caps = _captures(model, x)
    probes = rademacher(2, 8, x.shape[-1], seed=1, dtype=x.dtype)
    got = curvature_exact(model, x, 17, probes, captures=caps, chunk_size=4)
    expected = curvature_naive(reference, x, 17, probes)
    torch.testing.assert_close(got.double(), expected.double(), rtol=1e-4, atol=1e-6)


def test_layer_sampling_maps_decoder_layers_on_a_hybrid():
    """HEAT-LS on LFM2 (conv, attention, conv): the captures at and above the start layer are chosen by decoder
    layer, and S w.r.t. the residual stream equals the double backward through the unmodified model's layers."""
    model, reference = _models("lfm2")
    ids = _ids(7)
    cfg = HEATConfig(curvature=ExactS(layers=2, probes=1, hvp_chunk_size=4), beta=1.0, gamma=0.0, sink="keep",
                     gate="attention_only")
    heat = HEAT(model, config=cfg)
    x = embed(model, ids)
    _, caps = _captures(model, x)
    probes = rademacher(1, 7, x.shape[-1], seed=cfg.seed, dtype=x.dtype)
    got = heat.curvature(x, 17, caps, Cost())
    start = 1
    z = residual_input(reference, x, start)
    with residual_stream(reference, start):
        expected = curvature_naive(reference, z, 17, probes)
    torch.testing.assert_close(got.double(), expected.double(), rtol=1e-4, atol=1e-6)
    heat.close()


def test_other_masks_warn_once_per_model_and_refuse_sharing():
    """A mask that is neither causal, a window nor chunks (here: dilated) uses the materialised attention with ONE
    warning per model (not per layer, not per call), and the prefix cache is refused."""
    model, _ = _models("llama")
    x = embed(model, _ids(9))
    _, caps = _captures(model, x)
    n = x.shape[1]
    j, i = torch.arange(n)[:, None], torch.arange(n)[None]
    dilated = (i <= j) & ((j - i) % 2 == 0)
    additive = torch.zeros(1, 1, n, n, dtype=torch.float64).masked_fill(~dilated, torch.finfo(torch.float64).min)
    odd = [dataclasses.replace(c, mask=additive, band=mask_band(additive)) for c in caps]
    assert {c.band.kind for c in odd} == {"other"}
    assert not can_share_prefix(odd)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = transition_from_captures(odd, sink="keep")
        transition_from_captures(odd, sink="keep")
    assert len([w for w in caught if "materialised" in str(w.message)]) == 1
    # and the materialised attention uses the dilated mask: the rollout differs from the causal one
    assert not torch.allclose(m, transition_from_captures(caps, sink="keep"))
