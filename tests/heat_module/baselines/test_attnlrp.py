"""AttnLRP against a literal per-layer LRP of a tiny Llama written here, its conservation statement, a hand-worked
two-layer example, every tiny architecture, and the model being restored exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from heat_module.baselines import get_method
from heat_module.testing import ARCHITECTURES, tiny_model


def bias_free(arch: str = "llama", seed: int = 0, **kwargs) -> nn.Module:
    """A tiny fp64 model of ``arch`` with every bias and learned position embedding set to zero."""
    model = tiny_model(arch, seed=seed, **kwargs).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or name.endswith("wpe.weight"):
                p.zero_()
    return model


# ------------------------------------------------------------------ a literal AttnLRP of a Llama, from its weights
class Divide(torch.autograd.Function):
    """Uniform rule (eq. 7) for one factor of a product of two: the factor receives half the relevance."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g / ctx.factor, None


class Identity(torch.autograd.Function):
    """Identity rule (eq. 9) for an element-wise function: R_in = R_out, i.e. ∂̃ = f(x)/x."""

    @staticmethod
    def forward(ctx, x, fn):
        y = fn(x)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        return g * torch.where(x != 0, y / torch.where(x != 0, x, 1), 0), None


class Softmax(torch.autograd.Function):
    """AttnLRP's softmax rule: R_in_i = z_i (R_i − s_i Σ_j R_j) with R = s ⊙ ĝ, written as the relevance
    it hands on divided by z, and the relevance each row absorbs recorded in ``leak``."""

    @staticmethod
    def forward(ctx, z, mask, leak):
        s = torch.softmax(z.masked_fill(~mask, float("-inf")), -1)
        ctx.save_for_backward(z, s)
        ctx.leak = leak
        return s

    @staticmethod
    def backward(ctx, g):
        z, s = ctx.saved_tensors
        relevance_out = s * g
        relevance_in = z * (relevance_out - s * relevance_out.sum(-1, keepdim=True))
        ctx.leak.append(float(relevance_out.sum() - relevance_in.sum()))
        return s * (g - relevance_out.sum(-1, keepdim=True)), None, None  # = relevance_in / z


def rms_const(x, weight, eps):
    """RMSNorm with the normaliser held constant (identity rule on the normalisation)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps).detach() * weight


def literal_llama(model, ids: torch.Tensor, target: int, objective: str = "logit"):
    """(relevance (n,), out, leak) of a Llama under AttnLRP, computed from its weights by hand (one example)."""
    cfg = model.config
    inner = model.model
    x = inner.embed_tokens.weight[ids].detach().clone().requires_grad_(True)  # (n, d)
    n, d = x.shape
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    dh = getattr(cfg, "head_dim", None) or d // heads
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    inv_freq = 1.0 / theta ** (torch.arange(0, dh, 2, dtype=torch.float64) / dh)
    freqs = torch.arange(n, dtype=torch.float64)[:, None] * inv_freq[None]
    cos, sin = torch.cat([freqs, freqs], -1).cos().to(x.dtype), torch.cat([freqs, freqs], -1).sin().to(x.dtype)

    def rot(t):  # (heads, n, dh)
        t1, t2 = t[..., : dh // 2], t[..., dh // 2:]
        return t * cos + torch.cat([-t2, t1], -1) * sin

    causal = torch.ones(n, n, dtype=torch.bool).tril()
    leak: list[float] = []
    h = x
    for layer in inner.layers:
        at, mlp = layer.self_attn, layer.mlp
        a = rms_const(h, layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon)
        q = rot((a @ at.q_proj.weight.T).view(n, heads, dh).transpose(0, 1))
        k = rot((a @ at.k_proj.weight.T).view(n, kv, dh).transpose(0, 1))
        v = (a @ at.v_proj.weight.T).view(n, kv, dh).transpose(0, 1)
        k, v = k.repeat_interleave(heads // kv, 0), v.repeat_interleave(heads // kv, 0)
        # A·v: both factors halved; q·kᵀ: both factors halved again (A's half reaches q and k through the softmax)
        z = Divide.apply(q, 2.0) @ Divide.apply(k, 2.0).transpose(1, 2) * dh ** -0.5
        probs = Softmax.apply(z, causal, leak)
        o = Divide.apply(probs, 2.0) @ Divide.apply(v, 2.0)  # (heads, n, dh)
        h = h + o.transpose(0, 1).reshape(n, heads * dh) @ at.o_proj.weight.T
        m = rms_const(h, layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon)
        gate = Identity.apply(m @ mlp.gate_proj.weight.T, torch.nn.functional.silu)
        up = m @ mlp.up_proj.weight.T
        h = h + (Divide.apply(gate, 2.0) * Divide.apply(up, 2.0)) @ mlp.down_proj.weight.T
    final = rms_const(h[-1], inner.norm.weight, inner.norm.variance_epsilon)
    logits = final @ model.lm_head.weight.T
    out = logits[target] if objective == "logit" else torch.log_softmax(logits, -1)[target]
    (grad,) = torch.autograd.grad(out, x)
    return (x * grad).sum(-1).detach(), float(out.detach()), sum(leak)


@pytest.fixture(scope="module")
def llama():
    return bias_free("llama", seed=1)  # hidden 32, 2 layers, 4 heads over 2 kv heads (GQA)


@pytest.fixture(scope="module")
def ids():
    return torch.tensor([5, 17, 33, 8, 61, 12, 40, 9])


@pytest.mark.parametrize("objective", ["logit", "logprob"])
def test_equals_literal_per_layer_lrp(llama, ids, objective):
    target = 21
    expected, out, _ = literal_llama(llama, ids, target, objective)
    res = get_method("attnlrp")(llama, objective=objective).attribute(ids, target=target)
    assert res.method == "attnlrp" and res.config == {"objective": objective}
    assert res.extra[objective] == pytest.approx(out, rel=1e-5)  # the model's RMSNorm runs in fp32
    torch.testing.assert_close(res.scores.double(), expected, rtol=1e-4, atol=1e-8)
    # and it is not input × gradient: the rules change the answer
    ixg = get_method("input_x_gradient")(llama).attribute(ids, target=target).scores
    assert not torch.allclose(res.scores, ixg, rtol=1e-2, atol=1e-3)


def test_conservation_up_to_the_softmax_bias(llama, ids):
    """Σ_i R_i = logit_y − Σ (relevance absorbed by the softmaxes), exactly; the absorbed share agrees with the
    literal computation, and in fp32 the same statement holds within 1 %."""
    target = 21
    _, logit, leak = literal_llama(llama, ids, target)
    res = get_method("attnlrp")(llama).attribute(ids, target=target)
    assert res.extra["softmax_bias"] == pytest.approx(leak, rel=1e-6, abs=1e-9)  # model-internal fp32
    assert float(res.scores.double().sum()) == pytest.approx(logit - leak, rel=1e-6, abs=1e-8)
    assert abs(leak) > 1e-6  # the softmax rule is not conservative (AttnLRP's Taylor residual), so this is a claim
    res32 = get_method("attnlrp")(llama.float()).attribute(ids, target=target)
    llama.double()
    total = float(res32.scores.sum()) + res32.extra["softmax_bias"]
    assert total == pytest.approx(res32.extra["logit"], rel=1e-2)


def test_hand_worked_two_layer_example():
    """Uniform attention (W_Q = W_K = 0), W_V = W_O = I, no MLP, lm_head row y = e_0: only dimension 0 carries the
    logit. Token 'A' (= 3 e_0 + noise ⊥ e_0) supports y, 'B' (= −2 e_0 + ...) opposes it, the rest have no e_0
    component. By hand: relevance goes back through each layer as r_{l-1,i} = r_{l,i} + ½ Σ_{j≥i} r_{l,j}/(j+1) /
    ρ_{l-1,i} (residual + the halved value path of A·v; the other half reaches the softmax, whose input is 0, and is
    absorbed) with ρ the constant RMS normalisers, and R_i = x_i · r_{0,i}."""
    model = tiny_model("llama", layers=2, hidden=8, heads=2, kv_heads=2).double()
    d, y = 8, 7
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.zero_()
            layer.self_attn.k_proj.weight.zero_()
            layer.self_attn.v_proj.weight.copy_(torch.eye(d))
            layer.self_attn.o_proj.weight.copy_(torch.eye(d))
            layer.mlp.down_proj.weight.zero_()
        for norm in [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]:
            norm.weight.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[y, 0] = 1.0
        emb = model.model.embed_tokens.weight
        emb.copy_(torch.randn(emb.shape, generator=gen, dtype=emb.dtype))
        emb[:, 0] = 0.0
        emb[10, 0], emb[11, 0] = 3.0, -2.0  # 'A' = token 10, 'B' = token 11
    ids = torch.tensor([20, 10, 21, 22, 11, 23])
    res = get_method("attnlrp")(model).attribute(ids, target=y)

    # by hand
    x = model.model.embed_tokens.weight[ids].detach()
    n = len(ids)
    eps = model.config.rms_norm_eps
    rho = []  # normalisers per layer input
    h = x
    for _ in range(2):
        r = torch.sqrt(h.pow(2).mean(-1) + eps)
        rho.append(r)
        a = h / r[:, None]
        h = h + torch.stack([a[: j + 1].mean(0) for j in range(n)])
    r_final = torch.sqrt(h[-1].pow(2).mean() + eps)
    rel = torch.zeros(n, d, dtype=x.dtype)
    rel[-1, 0] = 1.0 / float(r_final)
    for layer in (1, 0):
        back = torch.stack([sum(rel[j] / (j + 1) for j in range(i, n)) for i in range(n)])
        rel = rel + 0.5 * back / rho[layer][:, None]
    by_hand = (x * rel).sum(-1)

    torch.testing.assert_close(res.scores.double(), by_hand, rtol=1e-6, atol=1e-9)
    assert by_hand[1] > 0 > by_hand[4]
    assert torch.all(by_hand[[0, 2, 3, 5]].abs() < 1e-12)
    assert res.scores.argmax() == 1 and res.scores.argmin() == 4
    assert torch.sign(res.scores[[1, 4]]).tolist() == [1.0, -1.0]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_tiny_architecture_conserves(arch, ids):
    """Finite on every tiny architecture and, with its biases (and GPT-2's learned positions) zeroed, conservative up
    to the softmax bias — so norms, MLP products and activations are handled per the rules everywhere."""
    model = bias_free(arch)
    res = get_method("attnlrp")(model).attribute(ids)
    assert torch.isfinite(res.scores).all() and res.cost == {"forward_passes": 2, "gradients": 1}
    total = float(res.scores.double().sum()) + res.extra["softmax_bias"]
    assert total == pytest.approx(res.extra["logit"], rel=1e-6, abs=1e-8)


def test_model_is_restored_exactly(ids):
    model = tiny_model("gemma3")
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(True)
    before = model(ids[None]).logits
    impl = model.config._attn_implementation
    flags = [p.requires_grad for p in model.parameters()]
    get_method("attnlrp")(model).attribute(ids, target=3)
    assert model.config._attn_implementation == impl
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert not any(m._forward_pre_hooks for m in model.modules())
    torch.testing.assert_close(model(ids[None]).logits, before, rtol=0, atol=0)


def test_batched_equals_unbatched(model, batch, check_batched):
    results = check_batched(get_method("attnlrp")(model), batch)
    assert all(r.cost == {"forward_passes": 2, "gradients": 1} for r in results)


def test_unknown_mlp_layout_raises_and_leaves_the_model_alone(ids):
    model = tiny_model("llama")

    class WeirdMLP(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.w1, self.w2, self.w3 = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
            self.act_fn = nn.SiLU()

        def forward(self, x):
            return self.w2(self.act_fn(self.w1(x)) * self.w3(x))

    model.model.layers[1].mlp = WeirdMLP(model.config.hidden_size)
    impl = model.config._attn_implementation
    with pytest.raises(TypeError, match="WeirdMLP"):
        get_method("attnlrp")(model).attribute(ids)
    assert model.config._attn_implementation == impl
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_options_are_validated(model):
    with pytest.raises(ValueError, match="objective"):
        get_method("attnlrp")(model, objective="prob")
    with pytest.raises(TypeError, match="unexpected options"):
        get_method("attnlrp")(model, bogus=1)
