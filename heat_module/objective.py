"""g(X) = log softmax(logits_p(X))_y — the function HEAT differentiates (paper eq. 1–2; DESIGN.md "Notation").

Also the first-order term ‖∇_{x_i} g‖₁ of HEAT+FO (appendix Table 19), which the gradient baselines share.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from heat_module.capture import PrefixKV, eager_attention_mode, prefix_cache
from heat_module.forward import next_token_logits, position_ids_from_mask


def target_logprob_fn(
    model: nn.Module,
    target: int | torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    prefix: PrefixKV | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function ``g(X) -> ()`` for one example: X (1, s, d) are the embeddings of the positions being
    recomputed (all n, or the suffix after a frozen ``prefix``). Attention runs in the eager path so that
    forward-mode AD and double backward work."""

    def g(x: torch.Tensor) -> torch.Tensor:
        with eager_attention_mode(), prefix_cache(prefix):
            logits = next_token_logits(model, x, attention_mask, position_ids)
        return torch.log_softmax(logits, -1)[0, target]

    return g


def gradient(
    model: nn.Module, inputs_embeds: torch.Tensor, target: int, attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, n, d) X -> (g(X), ∇_X g (1, n, d)) with one backward pass."""
    if attention_mask is None:
        attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
    x = inputs_embeds.detach().requires_grad_(True)
    with torch.enable_grad():
        value = target_logprob_fn(model, target, attention_mask, position_ids_from_mask(attention_mask))(x)
        (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def gradient_norms(
    model: nn.Module, inputs_embeds: torch.Tensor, target: int, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(n,) ‖∇_{x_i} g‖₁, the α term of HEAT+FO (0 on padding)."""
    _, grad = gradient(model, inputs_embeds, target, attention_mask)
    norms = grad[0].abs().sum(-1).float()
    if attention_mask is not None:
        norms = norms * attention_mask[0].float()
    return norms
