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
