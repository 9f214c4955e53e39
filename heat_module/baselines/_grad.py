"""Batched g = log P(y | X) and ∇_X g for a left-padded batch (the gradient baselines' shared helper)."""

from __future__ import annotations

import torch
from torch import nn

from heat_module.lm.forward import next_token_logits


def batch_gradient(
    model: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n, d) X -> (g (B,), ∇_X g (B, n, d)) with one backward pass.

    Examples are independent (no cross-example term in the forward), so the gradient of Σ_b g_b w.r.t. X_b is
    ∇_{X_b} g_b. Padding positions get the (meaningless, masked) gradient the model gives them; callers ignore it.
    """
    x = inputs_embeds.detach().requires_grad_(True)
    with torch.enable_grad():
        logp = torch.log_softmax(next_token_logits(model, x, attention_mask), -1)
        g = logp[torch.arange(x.shape[0], device=x.device), targets.to(x.device)]
        (grad,) = torch.autograd.grad(g.sum(), x)
    return g.detach(), grad.detach()


def batch_logprob(
    model: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """(B,) g = log P(y | X) without gradients."""
    with torch.no_grad():
        logp = torch.log_softmax(next_token_logits(model, inputs_embeds, attention_mask), -1)
    return logp[torch.arange(inputs_embeds.shape[0], device=inputs_embeds.device), targets.to(inputs_embeds.device)]
