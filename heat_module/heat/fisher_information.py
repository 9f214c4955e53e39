"""I from the Fisher factors — the second-order KL of masking token i (paper eq. 4, its quadratic form).

I_i = KL(P ‖ P^{(i)}) with P^{(i)} the next-token distribution after x_i is replaced by the mask vector. Write
δ_i = mask − x_i and Q(ε) = P(· | X + ε Π_i δ_i). KL(P ‖ Q(0)) = 0 and its gradient in ε vanishes at 0, so

    KL(P ‖ Q(1)) ≈ ½ δ_iᵀ F_ii δ_i,    F = Σ_y P_y u_y u_yᵀ,  u_y = ∇_X log P_y,

the Fisher information of the categorical output w.r.t. X (= the Hessian of ε ↦ KL(P ‖ Q(ε)) at 0). Hence

    I_i ≈ ½ Σ_y P_y (u_{y,i} · δ_i)².

With the full vocabulary this is exactly the second-order expansion of eq. 4 (it approaches eq. 4 as δ → 0); the
sum is truncated to the K most probable tokens as for the Fisher surrogate of S (:mod:`heat_module.heat.fisher`), and
the K gradients u_y are the same: one forward plus one K-cotangent backward give both S and I at any n
(``HEATConfig.preset("fast")``). It is an approximation of eq. 4 (masking is not a small
perturbation); ``benchmarks/bench_fisher_information.py`` measures how far its ranking is from the exact I.
"""

from __future__ import annotations

import torch

from heat_module.heat.fisher import FisherFactors, fisher_factors


def information_from_factors(
    factors: FisherFactors, inputs_embeds: torch.Tensor, mask_value: torch.Tensor | None = None
) -> torch.Tensor:
    """(n,) I_i ≈ ½ Σ_y P_y (u_{y,i} · δ_i)², δ_i = mask − x_i (the Fisher quadratic form of eq. 4); fp32, fp64 for
    fp64 factors.

    Args:
        factors: u (K, n, d), probs (K,) from :func:`heat_module.heat.fisher.fisher_factors` of ``inputs_embeds``.
        inputs_embeds: (1, n, d) X.
        mask_value: (d,) the mask vector (default zeros, the paper's choice).
    """
    if inputs_embeds.dim() != 3 or inputs_embeds.shape[0] != 1:
        raise ValueError(f"Expected inputs_embeds of shape (1, n, d), got {tuple(inputs_embeds.shape)}")
    if factors.u.shape[1:] != inputs_embeds.shape[1:]:
        raise ValueError(
            f"Expected factors.u of shape (K, {inputs_embeds.shape[1]}, {inputs_embeds.shape[2]}), "
            f"got {tuple(factors.u.shape)}"
        )
    x = inputs_embeds[0].to(factors.u.dtype)
    mask = torch.zeros_like(x[0]) if mask_value is None else mask_value.to(x)
    delta = mask[None, :] - x  # (n, d)
    proj = torch.einsum("knd,nd->kn", factors.u, delta)  # (K, n): u_{y,i} · δ_i
    out = 0.5 * (factors.probs.to(proj.dtype)[:, None] * proj.square()).sum(0)
    return out.to(torch.promote_types(out.dtype, torch.float32))


def information_fisher(
    model: torch.nn.Module,
    inputs_embeds: torch.Tensor,
    mask_value: torch.Tensor | None = None,
    topk: int = 16,
    mass: float | None = None,
    chunk_size: int = 16,
) -> tuple[torch.Tensor, FisherFactors]:
    """(n,) Fisher I (fp32, fp64 for an fp64 model) and the factors used (one forward + one K-cotangent backward).

    Args:
        inputs_embeds: (1, n, d) X; mask_value: (d,); topk, mass: which tokens (see
            :func:`heat_module.heat.fisher.select_tokens`); chunk_size: cotangents per vmapped backward call.
    """
    factors = fisher_factors(model, inputs_embeds, topk, mass, chunk_size)
    return information_from_factors(factors, inputs_embeds, mask_value), factors
