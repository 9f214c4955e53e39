"""The Gauss–Newton/Fisher surrogate of S (paper §"Scalable curvature"; docs/design.md "S", ``fisher``).

G = Σ_y P_y u_y u_yᵀ with u_y = ∇_X log P_y (P the next-token distribution at p), the Fisher information of the
categorical output w.r.t. X (= −E_{y∼P}[∇²_X log P_y], the expected negative Hessian). Its diagonal blocks act as
G_ii r = Σ_y P_y u_{y,i} (u_{y,i} · r), so S_i = (1/m) Σ_k ‖G_ii r_{k,i}‖₁ (eq. 3 with H → G) is exactly
``heat_kernels.block_norm(w = u (n, K, d), coef = P_topk, r = probes)``.

The sum runs over the K most probable tokens: K = ``fisher_topk``, or — when ``fisher_mass`` is set — the smallest K
whose tokens cover that probability mass, capped at ``fisher_topk`` (the cap bounds memory: K gradients of size
n·d). With K = V the surrogate is the exact Gauss–Newton/Fisher matrix. Note that G does not depend on the target y:
the Fisher surrogate's S is the same for every target (target dependence then comes from M and I).

All K gradients u_y come from ONE forward pass and one batched backward pass (``torch.autograd.grad`` with
``is_grads_batched`` over K one-hot cotangents, in chunks; the forward runs outside any ``torch.func`` transform, so
models whose weights accelerate loads per forward work too): cost ≈ 1 forward + K input-gradient backward passes
instead of n·m HVPs. At long n attention's n² part dominates those backward passes
(:func:`heat_module.heat.cost.fisher_fe` counts it); from :data:`CHECKPOINT_FROM` tokens on the decoder layers are
checkpointed, so memory grows like n with a small slope.

Precision: log P is taken in at least fp32 (a bf16 log-softmax rounds P_y), P_y is kept in fp32, and the products
P_y u_{y,i}(u_{y,i} · r) and their sums run in at least fp32 even when u_y comes from a bf16/fp16 model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from heat_kernels import block_norm
from heat_module.lm.capture import first_order_attention_mode
from heat_module.lm.checkpointing import checkpointed_layers
from heat_module.lm.forward import next_token_logits


def logprobs_fn(
    model: nn.Module, attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``f(X (1, n, d)) -> (V,)`` log P(· | X) at the last position, in at least fp32 (bf16/fp16 logits are upcast
    before the log-softmax). Only first derivatives are taken, so attention runs blockwise
    (:func:`~heat_module.lm.capture.first_order_attention_mode`): no layers × heads × n² probabilities are kept, and
    the K cotangents of the batched backward go through each attention tile together."""

    def f(x: torch.Tensor) -> torch.Tensor:
        with first_order_attention_mode():
            logits = next_token_logits(model, x, attention_mask, position_ids)
        return torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)[0]

    return f


def select_tokens(probs: torch.Tensor, topk: int, mass: float | None = None) -> torch.Tensor:
    """(K,) ids of the most probable tokens: the top ``topk``, or the fewest covering ``mass`` (at most ``topk``).

    Args:
        probs: (V,) next-token probabilities.
    """
    if probs.dim() != 1:
        raise ValueError(f"Expected probs of shape (V,), got {tuple(probs.shape)}")
    V = probs.shape[0]
    k = min(int(topk), V)
    values, ids = torch.sort(probs, descending=True)
    if mass is not None:
        covered = torch.cumsum(values.double(), 0)
        reach = int(torch.searchsorted(covered, torch.tensor(float(mass), dtype=torch.float64)).item()) + 1
        k = max(1, min(k, reach))
    return ids[:k]


#: from this many tokens on, :func:`fisher_factors` checkpoints every decoder layer: the activations it would keep
#: otherwise (≈ 1 MB per token on SmolLM2) outgrow the rest of its memory
CHECKPOINT_FROM = 2048


def checkpoints_layers(n: int) -> bool:
    """Whether :func:`fisher_factors` checkpoints the decoder layers at n tokens (n ≥ :data:`CHECKPOINT_FROM`)."""
    return n >= CHECKPOINT_FROM


@dataclass
class FisherFactors:
    """The factors of the truncated Fisher G = Σ_y P_y u_y u_yᵀ.

    Attributes:
        u: (K, n, d) the gradients u_y = ∇_X log P_y (dtype of X).
        probs: (K,) P_y (at least fp32).
        token_ids: (K,) the ids y.
        recomputed_forwards: the decoder-layer forwards recomputed by checkpointing (one per backward call; 0 when
            the layers were not checkpointed).
    """

    u: torch.Tensor
    probs: torch.Tensor
    token_ids: torch.Tensor
    recomputed_forwards: int = 0

    @property
    def mass(self) -> float:
        return float(self.probs.sum())


def fisher_factors(
    model: nn.Module,
    inputs_embeds: torch.Tensor,
    topk: int = 16,
    mass: float | None = None,
    chunk_size: int = 16,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    checkpoint: bool | None = None,
) -> FisherFactors:
    """One forward and one batched backward: the K gradients u_y of the most probable tokens.

    Args:
        inputs_embeds: (1, n, d) X (or the residual stream under
            :func:`heat_module.heat.layer_sampling.residual_stream`).
        topk, mass: which tokens (see :func:`select_tokens`).
        chunk_size: cotangents per vmapped backward call.
        checkpoint: keep only each decoder layer's input and recompute its forward in every backward call
            (:func:`heat_module.lm.checkpointing.checkpointed_layers`: one more forward per chunk of cotangents,
            memory ≈ n × d per layer instead of all activations); default :func:`checkpoints_layers` of n.
    Returns:
        :class:`FisherFactors` with u (K, n, d) in the dtype of ``inputs_embeds``.
    """
    if inputs_embeds.dim() != 3 or inputs_embeds.shape[0] != 1:
        raise ValueError(f"Expected inputs_embeds of shape (1, n, d), got {tuple(inputs_embeds.shape)}")
    f = logprobs_fn(model, attention_mask, position_ids)
    x = inputs_embeds.detach().requires_grad_(True)
    if checkpoint is None:
        checkpoint = checkpoints_layers(inputs_embeds.shape[1])
    with torch.enable_grad(), checkpointed_layers(model, checkpoint):
        logp = f(x)
        probs = logp.detach().exp()
        ids = select_tokens(probs, topk, mass)
        K, V = ids.numel(), logp.shape[0]
        parts = []
        for c0 in range(0, K, max(1, chunk_size)):
            sel = ids[c0:c0 + chunk_size]
            cot = torch.zeros(sel.numel(), V, dtype=logp.dtype, device=logp.device)
            cot[torch.arange(sel.numel(), device=cot.device), sel] = 1.0
            (u,) = torch.autograd.grad(logp, x, cot, is_grads_batched=True, retain_graph=True)  # (c, 1, n, d)
            parts.append(u[:, 0].detach())
    return FisherFactors(torch.cat(parts, 0), probs[ids], ids, len(parts) if checkpoint else 0)


def fisher_block_norms(factors: FisherFactors, probes: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """(n,) S_i = (1/m) Σ_k ‖Σ_y P_y u_{y,i} (u_{y,i} · r_{k,i})‖₁ through ``heat_kernels.block_norm``, in at least
    fp32 (bf16/fp16 gradients are upcast; P_y is never rounded to the model dtype).

    Args:
        probes: (m, n, d).
    """
    dtype = torch.promote_types(factors.u.dtype, torch.float32)
    w = factors.u.permute(1, 0, 2).to(dtype)  # (n, K, d)
    return block_norm(w, factors.probs.to(dtype), probes.to(dtype), backend=backend)


def curvature_fisher(
    model: nn.Module,
    inputs_embeds: torch.Tensor,
    probes: torch.Tensor,
    topk: int = 16,
    mass: float | None = None,
    chunk_size: int = 16,
    backend: str = "auto",
) -> tuple[torch.Tensor, FisherFactors]:
    """(n,) fp32 Fisher-surrogate S and the factors used (K = ``factors.u.shape[0]``).

    Args:
        inputs_embeds: (1, n, d); probes: (m, n, d).
    """
    factors = fisher_factors(model, inputs_embeds, topk, mass, chunk_size)
    return fisher_block_norms(factors, probes, backend), factors
