"""Integrated gradients (Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks", ICML).

With g = log P(y | X), baseline X' and the straight path X(α) = X' + α (X − X'),

    IG_i = Σ_d (x_{i,d} − x'_{i,d}) · ∫_0^1 ∂g/∂x_{i,d}(X(α)) dα,

so Σ_i IG_i = g(X) − g(X') (completeness) up to the quadrature error. The integral is a weighted sum over
``steps`` points: ``"gauss_legendre"`` (default; exact for polynomials of degree 2·steps − 1), ``"trapezoid"``,
``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``. Baseline: ``"zero"`` embeddings (default) or the
``"mean"`` embedding row, on the real tokens only (padding keeps its embedding along the path). The path points of
all examples are batched, ``internal_batch_size`` rows per forward/backward. Each result's ``extra`` holds
``g_input``, ``g_baseline`` and ``convergence_delta`` = Σ_i IG_i − (g(X) − g(X')).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from heat_module.attribution.base import Attributor, chunk_rows
from heat_module.attribution.registry import register_method
from heat_module.baselines._grad import batch_gradient, batch_logprob
from heat_module.lm.forward import mask_vector

QUADRATURES = ("gauss_legendre", "trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def quadrature(method: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(steps,) points α_k in [0, 1] and weights w_k with Σ_k w_k f(α_k) ≈ ∫_0^1 f."""
    if method == "gauss_legendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return torch.tensor((x + 1) / 2, dtype=torch.float64), torch.tensor(w / 2, dtype=torch.float64)
    if method == "trapezoid":
        if steps < 2:
            raise ValueError(f"Expected steps >= 2 for the trapezoid rule, got {steps}")
        alphas = torch.linspace(0, 1, steps, dtype=torch.float64)
        weights = torch.full((steps,), 1.0 / (steps - 1), dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / (steps - 1)
        return alphas, weights
    k = torch.arange(steps, dtype=torch.float64)
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}.get(method)
    if offset is None:
        raise ValueError(f"Expected method to be one of {list(QUADRATURES)}, got {method!r}")
    return (k + offset) / steps, torch.full((steps,), 1.0 / steps, dtype=torch.float64)


@register_method("integrated_gradients", aliases=("ig",), title="Integrated gradients", evaluation={
    "integrated_gradients": ("Integrated gradients (zero baseline)",
                             {"steps": 16, "method": "gauss_legendre", "baseline": "zero"}),
    "integrated_gradients_mean": ("Integrated gradients (mean-embedding baseline)",
                                  {"steps": 16, "method": "gauss_legendre", "baseline": "mean"})})
class IntegratedGradients(Attributor):
    """Integrated gradients of log P(y | X) w.r.t. the input embeddings (https://arxiv.org/abs/1703.01365).

    Options:
        steps: number of quadrature points (default 32). ≥ 1 (≥ 2 for ``"trapezoid"``).
        baseline: ``"zero"`` (default) or ``"mean"`` embedding.
        method: quadrature rule, one of :data:`QUADRATURES`.
        internal_batch_size: path points per forward/backward pass (default 32).
    """

    def __init__(self, model: nn.Module, tokenizer: object | None = None, steps: int = 32, baseline: str = "zero",
                 method: str = "gauss_legendre", internal_batch_size: int = 32, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"Expected steps to be an integer >= 1, got {steps!r}")
        if baseline not in ("zero", "mean"):
            raise ValueError(f"Expected baseline to be one of ['zero', 'mean'], got {baseline!r}")
        if method not in QUADRATURES:
            raise ValueError(f"Expected method to be one of {list(QUADRATURES)}, got {method!r}")
        if not isinstance(internal_batch_size, int) or internal_batch_size < 1:
            raise ValueError(f"Expected internal_batch_size to be an integer >= 1, got {internal_batch_size!r}")
        quadrature(method, steps)  # validates steps for the rule
        self.steps, self.baseline, self.method = steps, baseline, method
        self.internal_batch_size = internal_batch_size

    def options(self) -> dict:
        return {"steps": self.steps, "baseline": self.baseline, "method": self.method}

    def baseline_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, n, d) X': the baseline vector on real tokens, the input's own embedding on padding."""
        vec = mask_vector(self.model, self.baseline).to(inputs_embeds.dtype)
        return torch.where(attention_mask.bool()[..., None], vec.expand_as(inputs_embeds), inputs_embeds)

    def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
        B = inputs_embeds.shape[0]
        alphas, weights = quadrature(self.method, self.steps)
        x = inputs_embeds
        base = self.baseline_embeds(x, attention_mask)
        diff = x - base
        avg = torch.zeros_like(x, dtype=torch.float64)
        rows = B * self.steps
        for sl in chunk_rows(rows, self.internal_batch_size):
            idx = torch.arange(sl.start, sl.stop)
            b, k = idx // self.steps, idx % self.steps
            a = alphas[k].to(x.dtype).to(x.device)[:, None, None]
            path = base[b] + a * diff[b]
            _, grad = batch_gradient(self.model, path, attention_mask[b], targets[b])
            w = weights[k].to(x.device)[:, None, None]
            avg.index_add_(0, b.to(x.device), grad.double() * w)
        scores = (diff.double() * avg).sum(-1) * attention_mask.double()
        g_pair = batch_logprob(self.model, torch.cat([x, base]), attention_mask.repeat(2, 1), targets.repeat(2))
        extras = []
        for i in range(B):
            g_in, g_base = float(g_pair[i]), float(g_pair[B + i])
            extras.append({"g_input": g_in, "g_baseline": g_base,
                           "convergence_delta": float(scores[i].sum()) - (g_in - g_base)})
        return scores.float(), extras
