"""β, γ by non-negative least squares of removal drops (Theorem 3)."""


import pytest
import torch

import heat_module as hm
from heat_module.heat.fit import (
    nnls_fit,
    random_subsets,
    removal_drops,
    subset_features,
)
from heat_module.heat.s_fisher import FisherS
from heat_module.lm.forward import embed, next_token_logits
from tests.conftest import make_tiny

TEXTS = ["the cat sat on the hat because it", "a red bird sat in the old tree and", "my dog ate the bread after"]


@pytest.fixture(scope="module")
def heat(tiny_tok):
    return hm.HEAT(make_tiny("llama"), tiny_tok, hm.HEATConfig.preset("fisher", curvature=FisherS(topk=8)))


def test_recovers_known_weights_from_synthetic_drops(heat):
    gen = torch.Generator().manual_seed(0)
    feats = []
    for text in TEXTS:  # real M, S, I features of a tiny model
        res = heat.attribute(text)
        feats.append(subset_features(res.transition, res.curvature, res.information,
                                     random_subsets(len(res.tokens), 6, gen)))
    features = torch.cat(feats)
    beta, gamma = 0.3, 1.7
    clean = beta * features[:, 0] + gamma * features[:, 1]
    scale = min(float((beta * features[:, 0]).std()), float((gamma * features[:, 1]).std()))  # S, I differ in scale
    noise = 1e-3 * scale * torch.randn(clean.shape, generator=gen, dtype=torch.float64)
    fit = nnls_fit(features, clean + noise)
    assert fit.beta == pytest.approx(beta, rel=2e-2) and fit.gamma == pytest.approx(gamma, rel=2e-2)
    assert fit.relative_error < 1e-3 and fit.num_subsets == features.shape[0]
    exact = nnls_fit(features, clean)
    assert exact.beta == pytest.approx(beta, rel=1e-9) and exact.loss < 1e-20


def test_negative_true_weight_is_clipped_to_zero_by_hand():
    """drops = −1·A + 2·B: the true β* = −1 is infeasible; NNLS clips it to 0 and γ is then the 1-D least squares
    γ = Bᵀb / BᵀB, worked by hand."""
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]], dtype=torch.float64)
    drops = -1.0 * features[:, 0] + 2.0 * features[:, 1]  # b = [-1, 2, 1, 0]
    fit = nnls_fit(features, drops)
    # γ = (0·-1 + 1·2 + 1·1 + 1·0) / (0 + 1 + 1 + 1) = 1; residual b − γB = [-1, 1, 0, -1]: 𝓛 = 3/4,
    # ‖r‖/‖b‖ = √3/√6; and β = 0 is optimal: ∂/∂β ‖b − βA − γB‖² = −2 Aᵀr = −2·(−1 + 0 + 0 − 2) = 6 > 0
    assert fit.beta == 0.0
    assert fit.gamma == pytest.approx(1.0, rel=1e-12)
    assert fit.loss == pytest.approx(0.75, rel=1e-12)
    assert fit.relative_error == pytest.approx((3 / 6) ** 0.5, rel=1e-12)
    # γ* = −0.5 < 0: b = 2A − 0.5B = [2, −0.5, 1.5, 3.5]; γ clipped, β = Aᵀb / AᵀA = 10.5 / 6 = 1.75;
    # r = b − 1.75A = [0.25, −0.5, −0.25, 0], −2Bᵀr = 1.5 > 0 so γ = 0 is optimal; 𝓛 = (1/16 + 1/4 + 1/16) / 4
    fit = nnls_fit(features, 2.0 * features[:, 0] - 0.5 * features[:, 1])
    assert fit.gamma == 0.0 and fit.beta == pytest.approx(1.75, rel=1e-12)
    assert fit.loss == pytest.approx(0.375 / 4, rel=1e-12)
    with pytest.raises(ValueError, match="Expected features"):
        nnls_fit(features, torch.zeros(3))


def test_subsets_and_drops_match_naive_forwards(heat):
    gen = torch.Generator().manual_seed(1)
    subsets = random_subsets(8, 4, gen)
    assert subsets[:8] == [[i] for i in range(8)] and len(subsets) == 12
    assert all(2 <= len(s) <= 2 and s == list(range(s[0], s[-1] + 1)) for s in subsets[8:])  # max_span = n // 4 = 2
    ids = heat.encode(TEXTS[0])
    y = 7
    drops = removal_drops(heat.model, ids, y, subsets, batch_size=5)
    x = embed(heat.model, ids[None])
    g0 = torch.log_softmax(next_token_logits(heat.model, x), -1)[0, y]
    for subset, drop in zip(subsets, drops):
        xr = x.clone()
        xr[0, subset] = 0.0
        g = torch.log_softmax(next_token_logits(heat.model, xr), -1)[0, y]
        assert float(drop) == pytest.approx(float(g0 - g), abs=1e-6)


def test_fit_weights_end_to_end_is_the_nnls_optimum(heat):
    """fit_weights on real examples: its rows are Thm 3's features of HEAT's M, S, I over the seeded subsets, its drops
    the naive removal drops, and (β, γ) satisfy the NNLS optimality (KKT) conditions checked here by hand."""
    fit = hm.fit_weights(heat, TEXTS[:2], num_spans=3, seed=0)
    gen = torch.Generator().manual_seed(0)
    rows, drops = [], []
    for text in TEXTS[:2]:
        res = heat.attribute(text)  # (β, γ enter only the scores; the components do not depend on them)
        m, s, i = res.transition.double(), res.curvature.double(), res.information.double()
        x = embed(heat.model, res.token_ids[None])
        g0 = torch.log_softmax(next_token_logits(heat.model, x), -1)[0, res.target_id].double()
        for subset in random_subsets(len(res.tokens), 3, gen):
            rows.append([float((m[subset] * s[subset]).sum()), float((m[subset] * i[subset]).sum())])
            xr = x.clone()
            xr[0, subset] = 0.0
            drops.append(float(g0 - torch.log_softmax(next_token_logits(heat.model, xr), -1)[0, res.target_id]))
    A, b = torch.tensor(rows, dtype=torch.float64), torch.tensor(drops, dtype=torch.float64)
    assert fit.num_subsets == len(rows) and fit.num_examples == 2
    torch.testing.assert_close(fit.features, A, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(fit.drops, b, rtol=1e-6, atol=1e-6)
    w = torch.tensor([fit.beta, fit.gamma], dtype=torch.float64)
    grad = A.T @ (A @ w - b)  # ∇ of ½‖Aw − b‖²: 0 where w > 0, ≥ 0 where w = 0
    scale = float(A.abs().max() * b.abs().max()) * len(rows)
    for j in range(2):
        assert w[j] >= 0
        assert (abs(float(grad[j])) if w[j] > 0 else -float(grad[j])) <= 1e-8 * scale
    assert fit.loss == pytest.approx(float(((A @ w - b) ** 2).mean()), rel=1e-6)
