"""HEAT-LR (randomized eigendecomposition of H, Thm 4): exact at full rank, correct on a known operator."""


import torch

import heat_module as hm
from heat_module.heat import lowrank
from heat_module.heat.curvature import rademacher
from heat_module.heat.lowrank import LowRank, curvature_lowrank, lowrank_block_norms, randomized_eig
from heat_module.heat.s_exact import ExactS
from heat_module.heat.s_lowrank import LowRankS
from heat_module.lm.forward import embed
from heat_module.testing import TINY_VOCAB
from tests.conftest import make_tiny
from tests.heat_module.heat.dense_reference import bf16_case, block_norms, dense_hessian, eager_copy, log_probs


def test_full_rank_reproduces_exact_curvature(tiny_tok):
    model = make_tiny("llama", hidden=16)  # d = 16
    text = "the cat sat on the"  # n = 5 -> n·d = 80 (160 HVPs)
    exact = hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("exact", curvature=ExactS(probes=2))).attribute(text)
    n, d = len(exact.tokens), model.config.hidden_size
    lowrank = hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("exact", curvature=LowRankS(probes=2, rank=n * d,
                                                                                             chunk=32))).attribute(text)
    torch.testing.assert_close(lowrank.curvature, exact.curvature, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(lowrank.scores, exact.scores, rtol=1e-6, atol=1e-9)
    assert lowrank.cost["hvps"] == 2 * n * d and lowrank.cost["lowrank_k"] == n * d


def test_low_rank_operator_recovered_and_truncated():
    n, d, r = 4, 6, 5
    gen = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(n * d, r, generator=gen, dtype=torch.float64))
    lam = torch.tensor([9.0, -7.0, 3.0, -2.0, 0.5], dtype=torch.float64)
    H = basis @ torch.diag(lam) @ basis.T
    calls = []

    def hvp(v):
        calls.append(v.shape[0])
        return (v.reshape(v.shape[0], -1) @ H).reshape(v.shape)

    lr = randomized_eig(hvp, n, d, rank=r, oversample=3, dtype=torch.float64)
    torch.testing.assert_close(lr.dense(), H, atol=1e-10, rtol=0)
    torch.testing.assert_close(lr.eigenvalues, lam)  # ordered by |λ|
    assert sum(calls) == lr.hvps == 2 * (r + 3)
    top2 = randomized_eig(hvp, n, d, rank=2, oversample=3, dtype=torch.float64)
    torch.testing.assert_close(top2.eigenvalues, lam[:2])
    best = basis[:, :2] @ torch.diag(lam[:2]) @ basis[:, :2].T  # Eckart–Young best rank 2
    torch.testing.assert_close(top2.dense(), best, atol=1e-10, rtol=0)
    # block norms through heat_kernels.block_norm equal the dense block products U_i Λ U_iᵀ r_i
    probes = torch.randint(0, 2, (3, n, d), generator=gen).double() * 2 - 1
    Hk = top2.dense().view(n, d, n, d)
    expected = torch.stack([torch.stack([(Hk[i, :, i] @ probes[k, i]).abs().sum() for k in range(3)]).mean()
                            for i in range(n)])
    torch.testing.assert_close(lowrank_block_norms(top2, probes, backend="torch").double(), expected)


def test_rank_clipped_to_dimension():
    H = torch.eye(6, dtype=torch.float64) * 2
    lr = randomized_eig(lambda v: (v.reshape(v.shape[0], -1) @ H).reshape(v.shape), 2, 3, rank=50,
                        dtype=torch.float64)
    assert isinstance(lr, LowRank) and lr.u.shape == (6, 6) and lr.hvps == 12
    torch.testing.assert_close(lr.dense(), H)


def test_full_rank_equals_dense_hessian_of_an_eager_copy():
    """rank = n·d: HEAT-LR's S equals S from the dense Hessian of g computed by torch.autograd.functional.hessian on
    an eager copy of the model that never went through HEAT's install/capture code (same Rademacher probes)."""
    model = make_tiny("llama", hidden=16)
    ref = eager_copy(model)
    ids = torch.randint(4, TINY_VOCAB, (1, 5), generator=torch.Generator().manual_seed(2))
    x = embed(model, ids).detach()
    n, d = x.shape[1:]
    y = int(log_probs(ref, x).argmax())
    probes = rademacher(2, n, d, seed=4, dtype=x.dtype)
    expected = block_norms(dense_hessian(ref, x, y), probes)
    got, lr = curvature_lowrank(model, x, y, probes, rank=n * d, oversample=0, chunk_size=40, seed=5)
    assert lr.eigenvalues.numel() == n * d and lr.hvps == 2 * n * d
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-8)
    low, _ = curvature_lowrank(model, x, y, probes, rank=4, oversample=2, chunk_size=40, seed=5)
    assert not torch.allclose(low.double(), expected, rtol=1e-3)  # the check can see a truncated H


def test_bf16_model_keeps_factors_in_fp32(monkeypatch):
    """A bf16 copy of a tiny model: U, Λ and the probes' products are fp32, and S stays within 10 % of the fp32
    model's S computed the same way (bf16 has 8 mantissa bits; measured ≤ 3 % here)."""
    model, half, x, probes, seen = bf16_case(lowrank, monkeypatch)
    n, d = x.shape[1:]
    for rank in (n * d, 8):
        full, _ = curvature_lowrank(model, x, 7, probes, rank=rank, chunk_size=40)
        got, lr = curvature_lowrank(half, x.bfloat16(), 7, probes, rank=rank, chunk_size=40)
        assert lr.u.dtype == lr.eigenvalues.dtype == got.dtype == torch.float32
        assert seen[-1] == (torch.float32,) * 3
        torch.testing.assert_close(got, full, rtol=0.1, atol=0)


def test_reverse_over_reverse_hvps_match(tiny_tok):
    model = make_tiny("llama", hidden=16)
    s = LowRankS(rank=6, oversample=2, chunk=3)
    cfg = hm.HEATConfig.preset("exact", curvature=s)
    a = hm.HEAT(model, tiny_tok, cfg).attribute("the cat sat on the")
    b = hm.HEAT(model, tiny_tok, cfg.replace(curvature=s.replace(hvp_mode="reverse_over_reverse"))).attribute(
        "the cat sat on the")
    torch.testing.assert_close(a.curvature, b.curvature, rtol=1e-6, atol=1e-9)
