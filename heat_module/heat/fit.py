"""Fitting β, γ by constrained least squares (paper Theorem 3; docs/design.md "Variants": β,γ fitting).

For a context X and target y, removing a set of tokens R (their embeddings replaced by the mask vector of the config —
zero by default, the paper's choice) drops the target log-probability by Δg(R) = g(X) − g(X_\\R). HEAT's attribution
a_i = M[i](β S_i + γ I_i) should reconstruct these drops additively, Σ_{i∈R} a_i ≈ Δg(R); with the features

    f_S(R) = Σ_{i∈R} M[i] S_i,    f_I(R) = Σ_{i∈R} M[i] I_i,

Theorem 3's a^HEAT = argmin_{β,γ ≥ 0} E_R[(Δg(R) − β f_S(R) − γ f_I(R))²] is a non-negative least-squares problem
(``scipy.optimize.nnls``) over the rows R ∈ 𝒟: every singleton {i} and ``num_spans`` random contiguous spans per
example (length uniform in [2, max_span], default max_span = max(2, n // 4)). Reported: β, γ and the reconstruction
error 𝓛 = mean_R (Δg(R) − β f_S(R) − γ f_I(R))² (the empirical objective at the optimum), plus the relative residual
‖A w − b‖ / ‖b‖.

The components M, S, I come from the caller's HEAT configuration (any curvature mode / windowing) with β = γ = 1,
α = 0 and no ablation, so both features are always computed.

Command line: ``heat fit-weights ...`` (:mod:`heat_module.cli.fit_weights`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from scipy.optimize import nnls

from heat_module.heat.estimator import HEAT
from heat_module.lm.forward import embed, mask_vector, next_token_logits


@dataclass
class FitResult:
    """β, γ ≥ 0 of Theorem 3 and the reconstruction error.

    Attributes:
        beta, gamma: the fitted weights.
        loss: 𝓛 = mean squared reconstruction error over the subsets at (β, γ).
        relative_error: ‖A w − b‖ / ‖b‖ (0 = drops reconstructed exactly).
        num_subsets: rows R used; num_examples: contexts used.
        features: (R, 2) [f_S(R), f_I(R)]; drops: (R,) Δg(R) — kept for inspection.
    """

    beta: float
    gamma: float
    loss: float
    relative_error: float
    num_subsets: int
    num_examples: int = 0
    features: torch.Tensor | None = field(default=None, repr=False)
    drops: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"beta": self.beta, "gamma": self.gamma, "loss": self.loss, "relative_error": self.relative_error,
                "num_subsets": self.num_subsets, "num_examples": self.num_examples}


def random_subsets(n: int, num_spans: int, generator: torch.Generator, max_span: int | None = None) -> list[list[int]]:
    """Every singleton {i} of [0, n) and ``num_spans`` random contiguous spans of length in [2, max_span]."""
    subsets = [[i] for i in range(n)]
    if n < 2 or num_spans <= 0:
        return subsets
    top = max(2, min(n, max_span if max_span is not None else n // 4))
    for _ in range(num_spans):
        length = int(torch.randint(2, top + 1, (1,), generator=generator))
        start = int(torch.randint(0, n - length + 1, (1,), generator=generator))
        subsets.append(list(range(start, start + length)))
    return subsets


def removal_drops(
    model: torch.nn.Module,
    ids: torch.Tensor,
    target: int,
    subsets: Sequence[Sequence[int]],
    mask_value: torch.Tensor | None = None,
    batch_size: int = 32,
) -> torch.Tensor:
    """(R,) Δg(R) = log P(y | X) − log P(y | X_\\R) with the tokens of R replaced by ``mask_value`` (default zero).

    Args:
        ids: (n,) context ids.
    """
    x = embed(model, ids[None]).detach()
    if mask_value is None:
        mask_value = torch.zeros_like(x[0, 0])
    out = torch.zeros(len(subsets), dtype=torch.float64)
    with torch.no_grad():
        g0 = torch.log_softmax(next_token_logits(model, x), -1)[0, target].double()
        for c0 in range(0, len(subsets), max(1, batch_size)):
            chunk = subsets[c0:c0 + batch_size]
            xs = x.expand(len(chunk), -1, -1).clone()
            for row, subset in enumerate(chunk):
                xs[row, list(subset)] = mask_value.to(xs.dtype)
            g = torch.log_softmax(next_token_logits(model, xs), -1)[:, target].double()
            out[c0:c0 + len(chunk)] = g0 - g
    return out


def subset_features(transition: torch.Tensor, curvature: torch.Tensor, information: torch.Tensor,
                    subsets: Sequence[Sequence[int]]) -> torch.Tensor:
    """(R, 2) [Σ_{i∈R} M_i S_i, Σ_{i∈R} M_i I_i] for each subset R (Thm 3's features)."""
    ms = (transition.double() * curvature.double()).cpu()
    mi = (transition.double() * information.double()).cpu()
    rows = [[float(ms[list(r)].sum()), float(mi[list(r)].sum())] for r in subsets]
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 2)


def nnls_fit(features: torch.Tensor, drops: torch.Tensor, num_examples: int = 0) -> FitResult:
    """Theorem 3: (β, γ) = argmin_{β,γ≥0} ‖features·[β, γ] − drops‖² by ``scipy.optimize.nnls``.

    Args:
        features: (R, 2); drops: (R,).
    """
    features = torch.as_tensor(features, dtype=torch.float64)
    drops = torch.as_tensor(drops, dtype=torch.float64).flatten()
    if features.dim() != 2 or features.shape[1] != 2 or features.shape[0] != drops.shape[0] or drops.numel() == 0:
        raise ValueError(f"Expected features (R, 2) and drops (R,) with R >= 1, got {tuple(features.shape)} and "
                         f"{tuple(drops.shape)}")
    if not (torch.isfinite(features).all() and torch.isfinite(drops).all()):
        raise ValueError("Expected finite features and drops, got NaN/inf")
    w, rnorm = nnls(features.numpy(), drops.numpy())
    R = drops.numel()
    norm_b = float(drops.norm())
    return FitResult(beta=float(w[0]), gamma=float(w[1]), loss=float(rnorm) ** 2 / R,
                     relative_error=float(rnorm) / norm_b if norm_b > 0 else 0.0, num_subsets=R,
                     num_examples=num_examples, features=features, drops=drops)


def _example(item: object) -> tuple[object, int | str | None]:
    if isinstance(item, dict):
        for key in ("text", "prompt", "input", "ids"):
            if key in item:
                return item[key], item.get("target")
        raise ValueError(f"Expected an example dict with a 'text' or 'prompt' key, got keys {sorted(item)}")
    if isinstance(item, tuple) and len(item) == 2:
        return item
    return item, None


def collect(heat: HEAT, examples: Iterable, num_spans: int = 8, seed: int = 0, max_span: int | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(features (R, 2), drops (R,), number of examples) over all examples' subsets.

    Args:
        heat: a :class:`heat_module.heat.estimator.HEAT`; its model, tokenizer and config (with β = γ = 1, α = 0,
            no ablation).
        examples: texts, token-id sequences, ``(text, target)`` pairs or dicts with ``text``/``prompt`` (+ ``target``).
    """
    cfg = heat.config.replace(beta=1.0, gamma=1.0, alpha=0.0, ablation="full")
    fitter = HEAT(heat.model, heat.tokenizer, cfg)
    mask = mask_vector(heat.model, cfg.information.mask, cfg.information.mask_token_id)
    batch_size = getattr(cfg.information, "batch_size", 8)  # masked runs per forward (only the exact I has one)
    gen = torch.Generator().manual_seed(int(seed))
    feats, drops, count = [], [], 0
    for item in examples:
        text, target = _example(item)
        res = fitter.attribute(text, target)
        subsets = random_subsets(len(res.tokens), num_spans, gen, max_span)
        feats.append(subset_features(res.transition, res.curvature, res.information, subsets))
        drops.append(removal_drops(heat.model, res.token_ids.to(fitter.device), res.target_id, subsets, mask,
                                   batch_size))
        count += 1
    if not count:
        raise ValueError("Expected at least one example to fit beta and gamma on, got none")
    return torch.cat(feats), torch.cat(drops), count


def fit_weights(heat: HEAT, examples: Iterable, num_spans: int = 8, seed: int = 0, max_span: int | None = None
                ) -> FitResult:
    """Fit HEAT's β, γ ≥ 0 on ``examples`` by non-negative least squares of removal drops (Theorem 3).

    Args:
        heat: a :class:`heat_module.heat.estimator.HEAT` (model, tokenizer and the configuration of M, S, I); the fit
            runs it with β = γ = 1 whatever its own weights, with the config's S estimator
            (``HEATConfig.preset("fisher")``: Fisher S), or the exact S where the config computes none.
        examples: texts / id sequences / ``(text, target)`` pairs / dicts (see :func:`collect`).
        num_spans: random contiguous spans per example, besides all singletons.
        seed: seed of the span sampler.
        max_span: longest span (default max(2, n // 4)).
    Returns:
        :class:`FitResult` (β, γ, 𝓛 and the relative residual).

    Example:
        >>> from heat_module import HEAT, HEATConfig, fit_weights
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> heat = HEAT(tiny_model("llama"), tiny_tokenizer(), HEATConfig.preset("fisher"))
        >>> fit = fit_weights(heat, ["the cat sat on the", "the dog ran to the"], num_spans=2)
        >>> fit.beta >= 0 and fit.gamma >= 0
        True
    """
    features, drops, count = collect(heat, examples, num_spans, seed, max_span)
    return nnls_fit(features, drops, count)
