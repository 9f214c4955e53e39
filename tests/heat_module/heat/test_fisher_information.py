"""Fisher I (the quadratic form of eq. 4) against the second-order expansion of KL(P ‖ P^(i)) computed by autograd
on a separate eager copy of the model (not our capture code), and against the exact I as δ → 0 (tiny, float64)."""

import copy

import pytest
import torch

import heat_module as hm
from heat_module.heat.fisher import fisher_factors
from heat_module.heat.fisher_information import information_fisher, information_from_factors
from heat_module.heat.i_exact import ExactI
from heat_module.heat.i_fisher import FisherI
from heat_module.heat.s_fisher import FisherS
from heat_module.lm.forward import embed
from heat_module.testing import TINY_VOCAB
from tests.conftest import make_tiny


def setup(arch="llama", n=5, seed=0):
    model = make_tiny(arch, hidden=16)
    ids = torch.randint(4, TINY_VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))
    return model, embed(model, ids).detach()


def eager_copy(model):
    twin = copy.deepcopy(model)
    twin.set_attn_implementation("eager")
    return twin


def kl_second_order(twin, x, i, delta):
    """½ δᵀ ∇²_{x_i} KL(P ‖ P(· | X with x_i + t)) |_{t=0} δ — by autograd through the eager twin's own forward."""
    with torch.no_grad():
        logp = torch.log_softmax(twin(inputs_embeds=x).logits[0, -1], -1)

    def kl(t):
        xx = x.clone()
        xx[0, i] = xx[0, i] + t
        logq = torch.log_softmax(twin(inputs_embeds=xx).logits[0, -1], -1)
        return (logp.exp() * (logp - logq)).sum()

    H = torch.autograd.functional.hessian(kl, torch.zeros_like(x[0, i]))
    return 0.5 * delta @ H @ delta


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_full_vocabulary_equals_second_order_kl(arch):
    model, x = setup(arch)
    n = x.shape[1]
    mask = torch.randn(x.shape[-1], dtype=x.dtype, generator=torch.Generator().manual_seed(1))
    got, factors = information_fisher(model, x, mask, topk=TINY_VOCAB, chunk_size=64)
    assert factors.u.shape[0] == TINY_VOCAB
    twin = eager_copy(model)
    want = torch.stack([kl_second_order(twin, x, i, mask - x[0, i]) for i in range(n)])
    assert got.dtype == torch.float64  # an fp64 model gets fp64 I
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-12)  # the tiny models round their norms in fp32


def test_approaches_exact_information_as_delta_vanishes():
    """KL(P ‖ P^(i)) in float64 from the eager twin (``information`` itself reduces in fp32)."""
    model, x = setup("llama", seed=2)
    twin = eager_copy(model)
    factors = fisher_factors(model, x, topk=TINY_VOCAB, chunk_size=64)
    direction = torch.randn(x.shape[-1], dtype=x.dtype, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logp = torch.log_softmax(twin(inputs_embeds=x).logits[0, -1], -1)
    errors = []
    for eps in (1e-3, 1e-4, 1e-5):  # |direction| ≈ 4: the tiny model is far from quadratic beyond ~1e-3
        rel = []
        for i in range(x.shape[1]):
            mask = x[0, i] + eps * direction  # δ_i = eps·direction
            xx = x.clone()
            xx[0, i] = mask
            with torch.no_grad():
                logq = torch.log_softmax(twin(inputs_embeds=xx).logits[0, -1], -1)
            exact = (logp.exp() * (logp - logq)).sum()
            approx = information_from_factors(factors, x, mask)[i].double()
            rel.append(((approx - exact).abs() / exact).item())
        errors.append(max(rel))
    assert errors[1] < errors[0] / 5 and errors[2] < errors[1] / 5 and errors[2] < 1e-2, errors


def test_truncated_is_the_top_k_part_of_the_sum():
    model, x = setup("llama", seed=4)
    full = fisher_factors(model, x, topk=TINY_VOCAB, chunk_size=64)
    K = 5
    got, factors = information_fisher(model, x, None, topk=K, chunk_size=2)
    top = torch.argsort(full.probs, descending=True)[:K]
    delta = -x[0]
    want = 0.5 * (full.probs[top, None] * torch.einsum("knd,nd->kn", full.u[top], delta).square()).sum(0)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-12)
    assert (got < information_fisher(model, x, None, topk=TINY_VOCAB, chunk_size=64)[0] + 1e-12).all()


def test_heat_fisher_information_shares_one_backward_with_fisher_curvature():
    model, x = setup("llama", n=6, seed=5)
    ids = torch.randint(4, TINY_VOCAB, (6,), generator=torch.Generator().manual_seed(5))
    cfg = hm.HEATConfig.preset("fast", curvature=FisherS(topk=4), information=FisherI(topk=4))  # beta = gamma = 0.5
    res = hm.HEAT(model, None, cfg).attribute(ids)
    assert res.cost.forward_passes == 2 and res.cost.gradients == 4  # the unperturbed forward + one shared vjp
    x = embed(model, ids[None]).detach()
    want_i, _ = information_fisher(model, x, None, topk=4)
    torch.testing.assert_close(res.information.double(), want_i.double())
    ref = hm.HEAT(model, None, cfg.replace(information=ExactI())).attribute(ids)
    torch.testing.assert_close(res.curvature, ref.curvature)
    with pytest.raises(ValueError, match=r"Expected an I estimator name in \['exact', 'fisher'\], got 'approx'"):
        hm.HEATConfig(information="approx")


def test_fisher_cost_counts_attention_and_recomputed_forwards():
    """fisher_fe: one forward + K backward cotangents, each (1 − a)·1 + a·FE_ATTENTION_BACKWARD for attention share a,
    plus one forward per checkpointed backward call; the share grows with n."""
    from heat_module.heat.cost import FE_ATTENTION_BACKWARD, attention_share, fisher_fe

    assert fisher_fe(16, 0.0) == 17
    assert fisher_fe(16, 0.5) == pytest.approx(1 + 16 * (0.5 + 0.5 * FE_ATTENTION_BACKWARD))
    assert fisher_fe(16, 0.5, recomputed=2) == pytest.approx(fisher_fe(16, 0.5) + 2)
    assert attention_share(1.0, 0.0) == 0 and 0 < attention_share(1.0, 1.0) < attention_share(1.0, 2.0) < 1


def test_heat_fast_reports_the_attention_part_of_its_cost():
    """The reported FE of Fisher S + Fisher I is 1 + fisher_fe(K, a(n)) (more than 2 + K: attention's n² part of the
    backward is counted) and grows with n relative to one forward."""
    from heat_module.heat.cost import attention_share, fisher_fe
    from heat_module.lm.flops import attention_flops, linear_flops_per_token

    model, _ = setup("llama", n=6)
    cfg = hm.HEATConfig.preset("fast", curvature=FisherS(topk=4), information=FisherI(topk=4))
    fe = {}
    for n in (6, 40):
        ids = torch.randint(4, TINY_VOCAB, (n,), generator=torch.Generator().manual_seed(n))
        res = hm.HEAT(model, None, cfg).attribute(ids)
        share = attention_share(linear_flops_per_token(model) * n, attention_flops(model, n))
        assert res.cost.forward_equivalents == pytest.approx(1 + fisher_fe(4, share)) and share > 0
        assert res.cost.forward_equivalents > 2 + 4
        fe[n] = res.cost.forward_equivalents
    assert fe[40] > fe[6]


@pytest.mark.parametrize("parts", ["s", "i"])
def test_fisher_s_or_i_alone_reports_the_attention_part_of_its_cost(parts):
    """Fisher S with exact I, and Fisher I alone (M·I): the Fisher part's cost is fisher_fe(K, a(n)), not 1 + K."""
    from heat_module.heat.cost import attention_share, fisher_fe
    from heat_module.heat.part import Example
    from heat_module.lm.flops import attention_flops, linear_flops_per_token

    model, x = setup("llama", n=24, seed=6)
    part = FisherS(topk=4, chunk=2) if parts == "s" else FisherI(topk=4, chunk=2)
    out = part.estimate(Example(model=model, x=x, target=0, captures=[]))
    n = x.shape[1]
    share = attention_share(linear_flops_per_token(model) * n, attention_flops(model, n))
    assert out.cost.forward_equivalents == pytest.approx(fisher_fe(4, share)) and out.cost.forward_equivalents > 1 + 4
    assert out.cost.forward_passes == 1 and out.cost.gradients == 4
    assert out.cost.details["fisher_recomputed_forwards"] == 0


def test_checkpointed_fisher_factors_count_one_forward_per_backward_call(monkeypatch):
    """From CHECKPOINT_FROM tokens on (lowered here to the example's length) the layers are checkpointed: K = 5 in
    chunks of 2 is three backward calls, three recomputed forwards in the cost, the values unchanged."""
    from heat_module.heat import fisher
    from heat_module.heat.cost import attention_share, fisher_fe
    from heat_module.heat.part import Example
    from heat_module.heat.s_fisher import shared_fisher
    from heat_module.lm.flops import attention_flops, linear_flops_per_token

    model, x = setup("llama", n=8, seed=7)
    s, i = FisherS(topk=5, chunk=2), FisherI(topk=5, chunk=2)
    ex = Example(model=model, x=x, target=0, captures=[])
    plain_s, plain_i = shared_fisher(s, i, ex)
    assert plain_i.cost.details["fisher_recomputed_forwards"] == 0
    monkeypatch.setattr(fisher, "CHECKPOINT_FROM", 8)
    got_s, got_i = shared_fisher(s, i, ex)
    share = attention_share(linear_flops_per_token(model) * 8, attention_flops(model, 8))
    assert got_i.cost.details["fisher_recomputed_forwards"] == 3 and got_i.cost.forward_passes == 4
    assert got_i.cost.forward_equivalents == pytest.approx(fisher_fe(5, share, recomputed=3))
    assert got_s.cost.forward_equivalents == 0  # the shared factors are counted once, with I
    torch.testing.assert_close(got_s.values, plain_s.values, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got_i.values, plain_i.values, rtol=1e-9, atol=1e-12)
