"""The context of an example: the real tokens a faithfulness metric may perturb and rank, and P(y) of copies with
context tokens removed in score-rank order, by zeroing their embeddings or by deleting them from the sequence.

Every causal LM leans on the last tokens before the prediction, so a score vector with all its mass on the final
token wins comprehensiveness-style metrics without saying anything about the context. The context-only variants of
Soft-NC/NS, AOPC and ABPC therefore never perturb the final ``exclude_last`` real tokens of each example, nor any
``protected`` position (e.g. the query span of a templated prompt); those positions are dropped from the ranking and
the scores are renormalised over the rest (the context). With ``exclude_last=0`` and no protected positions the
context is every real token and the metrics are the standard ones.

Two perturbations remove a token:

- ``"zero"``: its embedding is set to 0 (the sequence keeps its length and positions);
- ``"deletion"``: it is taken out of the sequence; the remaining tokens close up (their positions shift down) and
  the row is left padded again, so a method is not scored only under the perturbation it was built on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal, get_args

import torch

from heat_module.metrics.functional.common import (
    Block,
    ForwardFn,
    IndexSpec,
    check_model_batch,
    chunked_forward,
    index_mask,
    ranking,
)

Perturbation = Literal["zero", "deletion"]
PERTURBATIONS: tuple[str, ...] = get_args(Perturbation)


def check_exclude_last(exclude_last: int) -> int:
    """``exclude_last`` as an int ≥ 0 (``"Expected ..."`` otherwise)."""
    if isinstance(exclude_last, bool) or not isinstance(exclude_last, int) or exclude_last < 0:
        raise ValueError(f"Expected exclude_last to be an integer >= 0, got {exclude_last!r}")
    return exclude_last


def check_perturbation(perturbation: str) -> str:
    """``perturbation`` if it is one of :data:`PERTURBATIONS`."""
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"Expected perturbation to be one of {list(PERTURBATIONS)}, got {perturbation!r}")
    return perturbation


def context_mask(real: torch.Tensor, exclude_last: int = 0, protected: IndexSpec | None = None) -> torch.Tensor:
    """(batch, n) bool: the real tokens a metric may perturb and rank.

    Args:
        real: (batch, n) bool mask of real tokens (left padded).
        exclude_last: how many final real tokens of each example are never perturbed nor ranked.
        protected: further positions never perturbed: a bool (batch, n) mask aligned with the padded inputs, or
            per-example index lists counted from the first real token (as :func:`common.index_mask`).
    Returns:
        ``real`` without the last ``exclude_last`` real tokens of each row and without ``protected``.
    Raises:
        ValueError: when a row has no context token left.
    """
    exclude_last = check_exclude_last(exclude_last)
    ctx = real.clone()
    if exclude_last:
        rank_from_end = real.flip(-1).long().cumsum(-1).flip(-1)  # 1 on the last real token, 2 on the one before
        ctx &= rank_from_end > exclude_last
    if protected is not None:
        ctx &= ~index_mask(protected, real, "protected")
    empty = (~ctx.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise ValueError(
            f"Expected at least one context token per example after leaving out the last {exclude_last} and the "
            f"protected positions, got none in rows {empty.tolist()}"
        )
    return ctx


def perturbed_row(x: torch.Tensor, mask: torch.Tensor, removed: torch.Tensor, perturbation: str
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One copy of one example with the positions ``removed`` taken away.

    Args:
        x: (n, d) the left-padded example's embeddings.
        mask: (n,) its attention mask (1 on real tokens).
        removed: (k,) positions (in the padded row) to remove; real tokens only.
        perturbation: ``"zero"`` (embeddings set to 0) or ``"deletion"`` (taken out; the rest left padded again).
    Returns:
        ``(x' (n, d), mask' (n,))``.
    """
    if perturbation == "zero":
        row = x.clone()
        row[removed] = 0.0
        return row, mask
    keep = mask.bool().clone()
    keep[removed] = False
    kept = x[keep]
    if len(kept) == 0:
        raise ValueError("Expected at least one token left after deletion, got none (every real token deleted)")
    n = x.shape[0]
    row = torch.zeros_like(x)
    row[n - len(kept):] = kept
    new_mask = torch.zeros_like(mask)
    new_mask[n - len(kept):] = 1
    return row, new_mask


def context_removal_probs(
    scores: torch.Tensor,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    target_ids: torch.Tensor,
    forward_fn: ForwardFn,
    removals: Callable[[int], Sequence[slice]],
    batch_size: int,
    exclude_last: int = 0,
    protected: IndexSpec | None = None,
    perturbation: Perturbation = "zero",
) -> list[torch.Tensor]:
    """P(y) on copies of each example with context tokens removed in score-rank order (AOPC, ABPC).

    Each example's context tokens (:func:`context_mask`) are ranked by score (:func:`common.ranking`, ties: earlier
    position first); copy j removes the ranked tokens ``order[removals(n_context)[j]]`` (``slice(0, k)``: the top
    k; ``slice(k, None)``: all but the top k; ``slice(0, 0)``: none) by ``perturbation``. Padding, the final
    ``exclude_last`` tokens and ``protected`` positions are never removed. All copies go through
    :func:`common.chunked_forward`.

    Args:
        scores, inputs_embeds, attention_mask, target_ids: (batch, n) scores, (batch, n, d) left-padded embeddings,
            (batch, n) mask or ``None``, (batch,) target ids y.
        forward_fn, batch_size: as :func:`common.chunked_forward`.
        removals: ``removals(n_context)`` -> one slice of the ranking per copy.
        exclude_last, protected: as :func:`context_mask`.
        perturbation: ``"zero"`` or ``"deletion"`` (module docstring).
    Returns:
        Per example, (copies,) fp32 P(y | copy) in the order of ``removals``.
    """
    if target_ids is None:
        raise ValueError("Expected target_ids of shape (batch,), got None")
    check_perturbation(perturbation)
    real, mask = check_model_batch(scores, inputs_embeds, attention_mask, target_ids)
    ctx = context_mask(real, exclude_last, protected)
    batch, n, _ = inputs_embeds.shape
    scores = scores.to(inputs_embeds.device)

    def blocks() -> Iterator[Block]:
        for b in range(batch):
            pos = ctx[b].nonzero().flatten()
            order = pos[ranking(scores[b, pos])]
            rows, masks = [], []
            for removed in removals(len(pos)):
                row, row_mask = perturbed_row(inputs_embeds[b], mask[b], order[removed], perturbation)
                rows.append(row)
                masks.append(row_mask)
            y = int(target_ids[b])
            yield torch.stack(rows), torch.stack(masks), lambda logp, y=y: logp[:, y].exp()

    with torch.no_grad():
        return chunked_forward(forward_fn, blocks(), batch_size)
