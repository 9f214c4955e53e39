"""Integrated gradients: quadrature rules, completeness, a literal one-point-at-a-time reference, padding."""

from __future__ import annotations

import pytest
import torch

from heat_module.baselines import get_method
from heat_module.baselines.integrated_gradients import QUADRATURES, quadrature
from heat_module.lm.forward import mask_vector


@pytest.mark.parametrize("method", QUADRATURES)
def test_quadrature_integrates_low_degree_polynomials(method):
    alphas, weights = quadrature(method, 16)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert (alphas >= 0).all() and (alphas <= 1).all()
    tol = 1e-12 if method == "gauss_legendre" else (2e-3 if method in ("trapezoid", "riemann_middle") else 0.04)
    assert float((weights * alphas**3).sum()) == pytest.approx(0.25, abs=tol)


@pytest.mark.parametrize("method,steps,tol", [("gauss_legendre", 24, 0.02), ("trapezoid", 64, 0.02)])
def test_completeness(model, batch, method, steps, tol):
    """Σ_i IG_i = g(X) − g(X') up to the quadrature error (mean-embedding baseline: a smooth path)."""
    ig = get_method("integrated_gradients")(model, steps=steps, baseline="mean", method=method)
    for ids in batch[2]:
        res = ig.attribute(ids)
        gap = res.extra["g_input"] - res.extra["g_baseline"]
        assert float(res.scores.sum()) == pytest.approx(gap, abs=tol * max(1.0, abs(gap)))
        assert res.extra["convergence_delta"] == pytest.approx(float(res.scores.sum()) - gap, abs=1e-6)


def test_matches_literal_reference(model, batch, logprob_and_grad):
    """One forward/backward per path point, summed by hand, equals the batched implementation."""
    ids, steps = batch[2][0], 6
    _, _, x, y = logprob_and_grad(model, ids)
    base = torch.zeros_like(x)
    alphas, weights = quadrature("trapezoid", steps)
    total = torch.zeros_like(x, dtype=torch.float64)
    for a, w in zip(alphas.tolist(), weights.tolist()):
        point = (base + a * (x - base)).requires_grad_(True)
        g = torch.log_softmax(model(inputs_embeds=point[None]).logits[0, -1], -1)[y]
        (grad,) = torch.autograd.grad(g, point)
        total += w * grad.double()
    expected = ((x - base).double() * total).sum(-1).float()
    ig = get_method("integrated_gradients")(model, steps=steps, method="trapezoid", internal_batch_size=4)
    res = ig.attribute(ids)
    torch.testing.assert_close(res.scores, expected, atol=1e-5, rtol=1e-4)


def test_mean_baseline_is_the_mean_embedding(model):
    vec = mask_vector(model, "mean")
    torch.testing.assert_close(vec, model.get_input_embeddings().weight.mean(0), atol=1e-6, rtol=1e-5)


def test_batched_equals_unbatched_with_left_padding(model, batch, check_batched):
    check_batched(get_method("integrated_gradients")(model, steps=8, internal_batch_size=5), batch, atol=1e-5)


def test_options_are_validated(model):
    with pytest.raises(ValueError, match="baseline"):
        get_method("integrated_gradients")(model, baseline="blur")
    with pytest.raises(ValueError, match="steps >= 2"):
        get_method("integrated_gradients")(model, steps=1, method="trapezoid")
    with pytest.raises(ValueError, match="method"):
        get_method("integrated_gradients")(model, method="simpson")
