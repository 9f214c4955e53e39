"""g(X) = log softmax(logits_p(X))_y — the function HEAT differentiates (paper eq. 1–2; docs/design.md "Notation").

Contrastive attribution (a ``foil`` token f, "why y rather than f", as inseq's ``contrast_prob_diff``) differentiates
g(X) = log P(y | X) − log P(f | X) instead (= logit_y − logit_f); with f = y it is identically 0.

Also the first-order term ‖∇_{x_i} g‖₁ of HEAT+FO (appendix Table 19), which the gradient baselines share, and the
batched Hessian-vector products of g that the exact (eq. 3) and low-rank curvature estimators share.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import grad, jvp, vmap

from heat_module.config import HVP_MODES, check_choice
from heat_module.lm.capture import PrefixKV, eager_attention_mode, first_order_attention_mode, prefix_cache
from heat_module.lm.forward import next_token_logits, position_ids_from_mask


def target_logprob_fn(
    model: nn.Module,
    target: int | torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    prefix: PrefixKV | None = None,
    foil: int | None = None,
    first_order: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function ``g(X) -> ()`` for one example: X (1, s, d) are the embeddings of the positions being
    recomputed (all n, or the suffix after a frozen ``prefix``). Attention runs in the eager path so that
    forward-mode AD and double backward work; with ``first_order`` (only first derivatives will be taken) it runs
    blockwise (:mod:`heat_module.lm.blockwise_attention`), whose backward keeps no n × n probabilities. With a
    ``foil`` id, g = log P(target) − log P(foil)."""
    mode = first_order_attention_mode if first_order else eager_attention_mode

    def g(x: torch.Tensor) -> torch.Tensor:
        with mode(), prefix_cache(prefix):
            logits = next_token_logits(model, x, attention_mask, position_ids)
        logp = torch.log_softmax(logits, -1)[0]
        return logp[target] if foil is None else logp[target] - logp[foil]

    return g


def check_hvp_mode(mode: str) -> None:
    """Raise "Expected mode to be one of [...]" unless ``mode`` is one of :data:`heat_module.config.HVP_MODES`."""
    check_choice("mode", mode, HVP_MODES)


def resolve_hvp_mode(mode: str, device: str | torch.device = "cpu") -> str:
    """``"auto"`` -> the faster mode measured for this device (``benchmarks/RESULTS-cost.md``, "Which HVP mode"):
    reverse-over-reverse on the CPU (a batched double backward through one ``create_graph`` gradient per run was
    ~1.5–3× faster per HVP than ``vmap(jvp(grad))`` on SmolLM2 at n = 48–96), forward-over-reverse elsewhere
    (docs/design.md's choice; not measured on a GPU here)."""
    check_hvp_mode(mode)
    if mode != "auto":
        return mode
    return "reverse_over_reverse" if torch.device(device).type == "cpu" else "forward_over_reverse"


def batched_hvp(
    g: Callable[[torch.Tensor], torch.Tensor], primal: torch.Tensor, mode: str = "forward_over_reverse"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``hvp(T (c, *primal.shape)) -> (c, *primal.shape)``: ∇²g(primal) t for each of c tangents; call it with
    autograd enabled. ``mode="auto"``: :func:`resolve_hvp_mode`.

    ``mode="forward_over_reverse"``: ``torch.func.jvp`` of ``torch.func.grad``, vmapped over the tangents.
    ``mode="reverse_over_reverse"``: ∇g is built with ``create_graph`` on the first call and kept; every call is one
    batched second backward through it (``is_grads_batched``). Same values.
    """
    mode = resolve_hvp_mode(mode, primal.device)
    primal = primal.detach()
    if mode == "forward_over_reverse":
        return vmap(lambda t: jvp(grad(g), (primal,), (t,))[1])
    graph: list[torch.Tensor] = []  # [x, ∇g(x)] once built

    def hvp(t: torch.Tensor) -> torch.Tensor:
        if not graph:
            x = primal.clone().requires_grad_(True)
            (gx,) = torch.autograd.grad(g(x), x, create_graph=True)
            graph.extend([x, gx])
        x, gx = graph
        (hv,) = torch.autograd.grad(gx, x, grad_outputs=t, is_grads_batched=True, retain_graph=True)
        return hv

    return hvp


def gradient(
    model: nn.Module, inputs_embeds: torch.Tensor, target: int, attention_mask: torch.Tensor | None = None,
    foil: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, n, d) X -> (g(X), ∇_X g (1, n, d)) with one backward pass (g contrastive when ``foil`` is given)."""
    if attention_mask is None:
        attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
    x = inputs_embeds.detach().requires_grad_(True)
    with torch.enable_grad():
        value = target_logprob_fn(model, target, attention_mask, position_ids_from_mask(attention_mask),
                                  foil=foil, first_order=True)(x)
        (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def gradient_norms(
    model: nn.Module, inputs_embeds: torch.Tensor, target: int, attention_mask: torch.Tensor | None = None,
    foil: int | None = None,
) -> torch.Tensor:
    """(n,) ‖∇_{x_i} g‖₁, the α term of HEAT+FO (0 on padding)."""
    _, grad = gradient(model, inputs_embeds, target, attention_mask, foil)
    norms = grad[0].abs().sum(-1).float()
    if attention_mask is not None:
        norms = norms * attention_mask[0].float()
    return norms
