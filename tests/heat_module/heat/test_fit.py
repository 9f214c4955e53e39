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
from heat_module.lm.forward import embed, next_token_logits
from tests.conftest import make_tiny

TEXTS = ["the cat sat on the hat because it", "a red bird sat in the old tree and", "my dog ate the bread after"]


@pytest.fixture(scope="module")
def heat(tiny_tok):
    return hm.HEAT(make_tiny("llama"), tiny_tok, hm.HEATConfig(curvature="fisher", fisher_topk=8))


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


def test_nonnegativity_constraint():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]], dtype=torch.float64)
    fit = nnls_fit(features, -1.0 * features[:, 0] + 2.0 * features[:, 1])
    assert fit.beta == 0.0 and fit.gamma > 0 and fit.loss > 0
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


def test_fit_weights_end_to_end(heat):
    fit = hm.fit_weights(heat, TEXTS[:2], num_spans=3, seed=0)
    n = sum(len(heat.encode(t)) for t in TEXTS[:2])
    assert fit.num_subsets == n + 6 and fit.num_examples == 2
    assert fit.beta >= 0 and fit.gamma >= 0 and fit.loss >= 0 and 0 <= fit.relative_error <= 1
    assert fit.features.shape == (n + 6, 2)
