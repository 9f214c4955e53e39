"""Fisher/Gauss–Newton surrogate of S against the full Jacobian of log P w.r.t. X (tiny models, float64)."""


import pytest
import torch

import heat_module as hm
from heat_module.heat import fisher
from heat_module.heat.cost import attention_share, fisher_fe, information_fe
from heat_module.heat.curvature import rademacher
from heat_module.heat.fisher import curvature_fisher, fisher_factors, logprobs_fn, select_tokens
from heat_module.heat.i_exact import ExactI
from heat_module.heat.s_fisher import FisherS
from heat_module.lm.flops import attention_flops, linear_flops_per_token
from heat_module.lm.forward import embed
from heat_module.testing import TINY_VOCAB
from tests.conftest import make_tiny
from tests.heat_module.heat.dense_reference import bf16_case, eager_copy, fisher_reference


def setup(arch="llama", n=5, seed=0):
    model = make_tiny(arch, hidden=16)
    ids = torch.randint(4, TINY_VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))
    return model, ids, embed(model, ids).detach()


def gauss_newton_reference(model, x, probes, keep=None):
    """S_i from G = Jᵀ diag(P) J with J the full (V, n·d) Jacobian of log P (optionally over the tokens ``keep``)."""
    n, d = x.shape[1:]
    f = logprobs_fn(model)
    J = torch.autograd.functional.jacobian(lambda flat: f(flat.view(1, n, d)), x.flatten())  # (V, n·d)
    P = f(x).exp()
    if keep is not None:
        J, P = J[keep], P[keep]
    G = (J.T * P) @ J
    G = G.view(n, d, n, d)
    m = probes.shape[0]
    return torch.stack([
        torch.stack([(G[i, :, i, :] @ probes[k, i]).abs().sum() for k in range(m)]).mean() for i in range(n)
    ])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_full_vocabulary_equals_exact_gauss_newton(arch):
    model, _, x = setup(arch)
    n, d = x.shape[1:]
    probes = rademacher(2, n, d, seed=3, dtype=x.dtype)
    got, factors = curvature_fisher(model, x, probes, topk=TINY_VOCAB, chunk_size=64, backend="torch")
    assert factors.u.shape == (TINY_VOCAB, n, d) and abs(factors.mass - 1) < 1e-6
    torch.testing.assert_close(got.double(), gauss_newton_reference(model, x, probes), rtol=1e-5, atol=1e-8)


def test_truncated_equals_truncated_sum():
    model, _, x = setup("llama", seed=1)
    n, d = x.shape[1:]
    probes = rademacher(3, n, d, seed=5, dtype=x.dtype)
    K = 7
    got, factors = curvature_fisher(model, x, probes, topk=K, chunk_size=3, backend="torch")  # several chunks
    top = torch.topk(logprobs_fn(model)(x), K).indices
    assert sorted(factors.token_ids.tolist()) == sorted(top.tolist())
    torch.testing.assert_close(got.double(), gauss_newton_reference(model, x, probes, keep=top), rtol=1e-5, atol=1e-8)
    full, _ = curvature_fisher(model, x, probes, topk=TINY_VOCAB, backend="torch")
    assert not torch.allclose(got, full)


def test_gradients_are_per_token_gradients():
    model, _, x = setup("qwen2")
    factors = fisher_factors(model, x, topk=3)
    f = logprobs_fn(model)
    for y, u in zip(factors.token_ids.tolist(), factors.u):
        xx = x.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(f(xx)[y], xx)
        torch.testing.assert_close(u, ref[0])


def test_mass_cutoff_selects_fewest_tokens():
    probs = torch.tensor([0.1, 0.5, 0.05, 0.3, 0.05])
    assert select_tokens(probs, 5).tolist() == [1, 3, 0, 2, 4]
    assert select_tokens(probs, 5, mass=0.8).tolist() == [1, 3]
    assert select_tokens(probs, 5, mass=0.81).tolist() == [1, 3, 0]
    assert select_tokens(probs, 2, mass=0.99).tolist() == [1, 3]  # fisher_topk caps the count
    assert select_tokens(probs, 5, mass=0.2).tolist() == [1]


def test_heat_fisher_mode_and_cost(tiny_tok):
    model = make_tiny("llama")
    text = "the cat sat on the hat because it was"
    cfg = hm.HEATConfig.preset("fisher", curvature=FisherS(topk=4, probes=2), information=ExactI(batch_size=32))
    res = hm.HEAT(model, tiny_tok, cfg).attribute(text)
    ids = res.token_ids[None]
    x = embed(model, ids).detach()
    n, d = x.shape[1:]
    # the Fisher blocks from explicit per-token gradients of an eager copy (no HEAT code): Σ_y P_y u_{y,i}(u_{y,i}·r)
    expected = fisher_reference(eager_copy(model), x, rademacher(2, n, d, seed=cfg.seed, dtype=x.dtype), topk=4)
    torch.testing.assert_close(res.curvature.double(), expected, rtol=1e-5, atol=1e-6)
    assert res.cost["gradients"] == 4 and res.cost["hvps"] == 0 and res.cost["fisher_k"] == 4
    # 1 unperturbed forward + (1 forward + 4 backward cotangents, attention's n² part counted) + the prefix-shared
    # masked forwards of I
    share = attention_share(linear_flops_per_token(model) * n, attention_flops(model, n))
    assert share > 0 and fisher_fe(4, share) > 1 + 4
    expected = 1 + fisher_fe(4, share) + information_fe(n, 32, True, share)
    assert res.cost["forward_equivalents"] == pytest.approx(expected)
    masked = hm.HEAT(model, tiny_tok, cfg.replace(curvature=FisherS(mass=0.5, topk=50, probes=2))).attribute(text)
    assert 1 <= masked.cost["fisher_k"] <= 50 and masked.cost["fisher_mass"] >= 0.5


def test_bf16_model_reduces_in_fp32(monkeypatch):
    """A bf16 copy of a tiny model: P_y and the products P_y u_{y,i}(u_{y,i}·r) are fp32 (never rounded to bf16), and
    S stays within 10 % of the fp32 model's S computed the same way (measured ≤ 5 %)."""
    model, half, x, probes, seen = bf16_case(fisher, monkeypatch)
    full, ref = curvature_fisher(model, x, probes, topk=8)
    got, factors = curvature_fisher(half, x.bfloat16(), probes, topk=8)
    assert factors.u.dtype == torch.bfloat16 and factors.probs.dtype == torch.float32
    assert seen[-1] == (torch.float32,) * 3 and got.dtype == torch.float32
    assert factors.token_ids.tolist() == ref.token_ids.tolist()
    torch.testing.assert_close(factors.probs, ref.probs, rtol=0.05, atol=0)
    torch.testing.assert_close(got, full, rtol=0.1, atol=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_fisher_factors_take_first_order_attention_and_equal_the_eager_path(arch, monkeypatch):
    """The Fisher gradients need first derivatives only: no eager (n × n probabilities) attention runs, and the
    gradients equal those of the eager path (the path that keeps the probabilities for double backward)."""
    from heat_module.lm import capture

    model, _, x = setup(arch, n=7)
    with capture.eager_attention_mode():
        old = fisher_factors(model, x, topk=5)
    calls = []
    eager = capture.eager_attention
    monkeypatch.setattr(capture, "eager_attention", lambda *a, **k: calls.append(1) or eager(*a, **k))
    new = fisher_factors(model, x, topk=5)
    assert calls == []
    torch.testing.assert_close(new.token_ids, old.token_ids)
    torch.testing.assert_close(new.probs, old.probs, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(new.u, old.u, rtol=1e-9, atol=1e-11)


def test_target_gradient_takes_first_order_attention_and_equals_the_eager_path(monkeypatch):
    """∇_X g of HEAT+FO and the gradient baselines runs without eager attention and equals the eager path's."""
    from heat_module.heat.objective import gradient
    from heat_module.lm import capture

    model, _, x = setup("llama", n=7)
    with capture.eager_attention_mode():
        old_value, old_grad = gradient(model, x, target=5)
    calls = []
    eager = capture.eager_attention
    monkeypatch.setattr(capture, "eager_attention", lambda *a, **k: calls.append(1) or eager(*a, **k))
    value, grad = gradient(model, x, target=5)
    assert calls == []
    torch.testing.assert_close(value, old_value, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, old_grad, rtol=1e-9, atol=1e-11)


def own_gradients(model, x, token_ids):
    """(K, n, d) ∇_X log P_y of the model's own forward, one backward per token. Outside HEAT's blocks an installed
    model runs the attention it had (transformers' SDPA here; its eager function rounds the softmax to fp32)."""
    out = []
    for y in token_ids.tolist():
        xr = x.detach().clone().requires_grad_(True)
        logp = torch.log_softmax(model(inputs_embeds=xr).logits[0, -1], -1)
        (g,) = torch.autograd.grad(logp[y], xr)
        out.append(g[0])
    return torch.stack(out)


@pytest.mark.parametrize("arch", ["llama", "gemma3_sliding"])
def test_fisher_gradients_over_several_attention_tiles_equal_the_models_own(arch, monkeypatch):
    """Tiles of 4 over 19 positions (skipped tiles, a partial last tile; gemma3_sliding: window 4 on every other
    layer, 2 kv heads for 4 query heads): the K batched gradients equal the model's own (fp64)."""
    from heat_module.lm import blockwise_attention

    monkeypatch.setattr(blockwise_attention, "BLOCK", 4)
    monkeypatch.setattr(blockwise_attention, "FUSED_CAUSAL", False)  # plain causal masks too run in tiles
    tiles = []
    active = blockwise_attention.active_tiles
    monkeypatch.setattr(blockwise_attention, "active_tiles", lambda *a: tiles.append(active(*a)) or tiles[-1])
    model, _, x = setup(arch, n=19)
    factors = fisher_factors(model, x, topk=4)
    assert tiles and len(tiles[0]) == 5 and tiles[0][0] == [0]  # the blockwise path ran, in tiles of 4
    want = own_gradients(model, x, factors.token_ids)
    torch.testing.assert_close(factors.u, want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("arch", ["llama", "gemma3_sliding"])
def test_fisher_gradients_through_the_causal_kernel_equal_the_models_own(arch, monkeypatch):
    """A plain causal mask runs on SDPA's causal kernel (llama: every layer; gemma3_sliding: its full-attention
    layers, the windowed ones stay blockwise): the K batched gradients still equal the model's own (fp64)."""
    from heat_module.lm import blockwise_attention

    calls = []
    causal = blockwise_attention.causal_attention
    monkeypatch.setattr(blockwise_attention, "causal_attention", lambda *a: calls.append(a[0].shape) or causal(*a))
    tiles = []
    active = blockwise_attention.active_tiles
    monkeypatch.setattr(blockwise_attention, "active_tiles", lambda *a: tiles.append(active(*a)) or tiles[-1])
    model, _, x = setup(arch, n=19)
    factors = fisher_factors(model, x, topk=4)
    assert calls  # the causal kernel ran
    assert bool(tiles) == (arch == "gemma3_sliding")  # only sliding-window layers went blockwise
    want = own_gradients(model, x, factors.token_ids)
    torch.testing.assert_close(factors.u, want, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("fused", [True, False], ids=["causal-kernel", "blockwise"])
def test_fisher_gradients_on_smollm2_equal_the_models_own(smollm2, monkeypatch, fused):
    """SmolLM2 (fp64 copy, 3 kv heads for 9 query heads) over 40 tokens: SDPA's causal kernel, or tiles of 16."""
    import copy

    from heat_module.lm import blockwise_attention
    from heat_module.lm.capture import install, uninstall

    monkeypatch.setattr(blockwise_attention, "BLOCK", 16)
    monkeypatch.setattr(blockwise_attention, "FUSED_CAUSAL", fused)
    model = copy.deepcopy(smollm2[0]).double()
    uninstall(model)  # whatever earlier tests left on the shared model: the reference below is transformers' SDPA
    model.set_attn_implementation("sdpa")
    ids = smollm2[1]("The capital of France is Paris, and the capital of Italy is Rome. So the capital of "
                     "Germany, a country north of both of them, is the city of", return_tensors="pt").input_ids
    assert ids.shape[1] >= 33
    x = embed(model, ids).detach()
    install(model)
    try:
        factors = fisher_factors(model, x, topk=3)
    finally:
        uninstall(model)
    want = own_gradients(model, x, factors.token_ids)
    torch.testing.assert_close(factors.u, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("arch", ["llama", "gemma3_sliding", "gpt2"])
def test_checkpointed_layers_give_the_same_gradients(arch, monkeypatch):
    """Checkpointing every decoder layer (kept: the layers' inputs; the backward recomputes each layer, once per
    chunk of 2 cotangents here) gives the model's own gradients, and the layers are restored afterwards."""
    from heat_module.lm import checkpointing

    model, _, x = setup(arch, n=9)
    layer_forward = type(model).forward
    runs = []
    wrap = checkpointing.checkpoint
    monkeypatch.setattr(checkpointing, "checkpoint", lambda *a, **k: runs.append(1) or wrap(*a, **k))
    factors = fisher_factors(model, x, topk=5, chunk_size=2, checkpoint=True)
    assert len(runs) == model.config.num_hidden_layers  # every layer ran checkpointed
    assert all("forward" not in vars(layer) for layer in checkpointing.decoder_layers(model))
    assert type(model).forward is layer_forward
    torch.testing.assert_close(factors.u, own_gradients(model, x, factors.token_ids), rtol=1e-9, atol=1e-11)


def test_checkpointing_starts_at_long_contexts():
    assert not fisher.checkpoints_layers(fisher.CHECKPOINT_FROM - 1)
    assert fisher.checkpoints_layers(fisher.CHECKPOINT_FROM)
