"""I — KL information of each context token (paper eq. 4; docs/design.md "I").

I_i = KL(P ‖ P^{(i)}), P the next-token distribution at p = n-1 and P^{(i)} the same with x_i's embedding replaced
by the mask vector (``zero``: the paper's choice; ``mean``: the mean embedding row; ``token``: a given token's
embedding). The batched form runs the masked variants in chunks of consecutive positions [i0, i1): everything before
i0 is identical in all of them, so its keys/values are taken from the unmasked run (a frozen KV cache) and only
positions i0..n-1 are recomputed — about half the work of the naive loop before any batching. The mask vector
is :func:`heat_module.lm.forward.mask_vector`; the runs and the prefix-sharing rule live with the prefix cache
(:mod:`heat_module.lm.capture`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from heat_module.lm.capture import LayerCapture, PrefixKV, can_share_prefix, consecutive_runs, prefix_cache
from heat_module.lm.forward import next_token_logits, position_ids_from_mask


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision of I for a model computing in ``dtype``: fp32 for half precision and fp32, fp64 for fp64 (on a
    near-flat prediction the KL is a small sum of small differences, and fp32 would cost fp64 models ~1e-3)."""
    return torch.promote_types(dtype, torch.float32)


def kl_divergence(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """(..., V) log-probabilities of p and q -> (...) KL(p ‖ q) in fp32, or fp64 when either input is fp64 (the
    argument order of eq. 4 everywhere)."""
    dtype = score_dtype(torch.promote_types(p_log.dtype, q_log.dtype))
    p_log, q_log = p_log.to(dtype), q_log.to(dtype)
    return (p_log.exp() * (p_log - q_log)).sum(-1).clamp_min(0.0)


def information_naive(
    model: nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    mask_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference: one full forward per masked token.

    Args:
        inputs_embeds: (1, n, d) embeddings of one (possibly left-padded) example.
        attention_mask: (1, n) 1 for real tokens.
        mask_value: (d,) replacement vector (default zeros).
    Returns:
        (n,) I_i (0 on padding): fp32, fp64 for an fp64 model.
    """
    n = inputs_embeds.shape[1]
    if mask_value is None:
        mask_value = torch.zeros_like(inputs_embeds[0, 0])
    valid = torch.ones(n, dtype=torch.bool) if attention_mask is None else attention_mask[0].bool().cpu()
    with torch.no_grad():
        logp = torch.log_softmax(next_token_logits(model, inputs_embeds, attention_mask), -1)
        out = torch.zeros(n, dtype=score_dtype(logp.dtype), device=inputs_embeds.device)
        for i in range(n):
            if not valid[i]:
                continue
            x = inputs_embeds.clone()
            x[0, i] = mask_value
            logq = torch.log_softmax(next_token_logits(model, x, attention_mask), -1)
            out[i] = kl_divergence(logp, logq)[0]
    return out


def information(
    model: nn.Module,
    inputs_embeds: torch.Tensor,
    captures: Sequence[LayerCapture] | None,
    logp: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    mask_value: torch.Tensor | None = None,
    batch_size: int = 32,
    positions: Sequence[int] | None = None,
    contrast: tuple[int, int] | None = None,
    progress: Callable[[int], object] | None = None,
) -> torch.Tensor:
    """Batched I (eq. 4) reusing the unmasked run's KV cache for the shared prefix.

    Args:
        inputs_embeds: (1, n, d) one example (left padding allowed).
        captures: the unmasked run's :class:`LayerCapture` list (its keys/values form the prefix cache); ``None``
            disables prefix sharing.
        logp: (1, V) or (V,) log P of the unmasked run (in the model's precision: fp64 for an fp64 model).
        attention_mask: (1, n) 1 for real tokens.
        mask_value: (d,) replacement vector (default zeros).
        batch_size: masked variants per forward pass.
        positions: which positions to score (default: every real token).
        contrast: ``(target, foil)`` ids: I_i = |Δ_i|, Δ_i the change of log P(target) − log P(foil) when x_i is
            masked (the KL compares whole distributions, so it has no contrastive form; this is the same difference
            the contrastive S differentiates).
        progress: called with the number of masked runs after each chunk (a progress bar's ``update``).
    Returns:
        (n,) I_i (0 on padding and on positions not asked for): fp32, fp64 when ``logp`` is fp64.
    """
    _, n, _ = inputs_embeds.shape
    device = inputs_embeds.device
    if attention_mask is None:
        attention_mask = torch.ones(1, n, dtype=torch.long, device=device)
    if mask_value is None:
        mask_value = torch.zeros_like(inputs_embeds[0, 0])
    valid = attention_mask[0].bool()
    if positions is None:
        positions = [i for i in range(n) if valid[i]]
    share = captures is not None and can_share_prefix(captures)
    full_pos = position_ids_from_mask(attention_mask)
    base = None if contrast is None else (logp.reshape(-1)[contrast[0]] - logp.reshape(-1)[contrast[1]])
    dtype = score_dtype(logp.dtype)
    logp = logp.reshape(1, -1).to(dtype)
    out = torch.zeros(n, dtype=dtype, device=device)
    with torch.no_grad():
        for run in consecutive_runs(positions, batch_size):
            i0 = run[0] if share else 0
            c = len(run)
            x = inputs_embeds[:, i0:].expand(c, -1, -1).clone()
            rows = torch.arange(c, device=device)
            x[rows, torch.tensor(run, device=device) - i0] = mask_value.to(x.dtype)
            am = attention_mask[:, i0:].expand(c, -1)
            pos = full_pos[:, i0:].expand(c, -1)
            prefix = PrefixKV.from_captures(list(captures), i0, attention_mask) if share and i0 > 0 else None
            with prefix_cache(prefix):
                logits = next_token_logits(model, x, am, position_ids=pos)
            logq = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, dtype)), -1)
            if contrast is None:
                out[torch.tensor(run, device=device)] = kl_divergence(logp, logq)
            else:  # in the model's precision: Δ is a small difference of two log-probabilities
                t, f = contrast
                out[torch.tensor(run, device=device)] = ((logq[:, t] - logq[:, f]) - base).abs().to(dtype)
            if progress is not None:
                progress(c)
    return out
