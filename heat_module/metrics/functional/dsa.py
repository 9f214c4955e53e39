"""Dependent Sentence Attribution (DSA, HEAT paper §5.1 and appendix "Curated Attribution Dataset").

Scores are clipped at 0 and normalised to sum to one over the context (the real tokens; uniform when no score is
positive); then per example

    DSA = Σ_{i ∈ gold} s_i − Σ_{j ∈ distractor} s_j ∈ [−1, 1],

averaged over examples. Higher is better. ``gold`` and ``distractor`` are bool masks (batch, n) aligned with the
padded inputs, or per-example index lists counted from the first real token (positions in the unpadded example).
Positions in both sets cancel. No model is needed.
"""

from __future__ import annotations

import torch

from heat_module.metrics.functional.common import IndexSpec, check_scores, index_mask, normalize_batch


def dsa_values(
    scores: torch.Tensor, gold: IndexSpec, distractor: IndexSpec, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(batch,) per-example DSA of scores (batch, n); ``gold``, ``distractor`` and ``attention_mask`` as in
    :func:`dsa`."""
    real = check_scores(scores, attention_mask)
    s = normalize_batch(scores, real)
    gold_m = index_mask(gold, real, "gold")
    distractor_m = index_mask(distractor, real, "distractor")
    return (s * gold_m).sum(-1) - (s * distractor_m).sum(-1)


def dsa_update(
    scores: torch.Tensor, gold: IndexSpec, distractor: IndexSpec, attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """Running totals: (sum of per-example DSA, number of examples)."""
    values = dsa_values(scores, gold, distractor, attention_mask)
    return values.sum(), len(values)


def dsa_compute(sum_dsa: torch.Tensor, total: torch.Tensor | int) -> torch.Tensor:
    """Mean DSA over examples."""
    return sum_dsa / total


def dsa(
    scores: torch.Tensor,
    gold: IndexSpec,
    distractor: IndexSpec,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean DSA of a batch (module docstring): a scalar tensor.

    Args:
        scores: (batch, n) attribution scores.
        gold: (batch, n) bool mask, or per-example index lists counted from the first real token.
        distractor: same form as ``gold``.
        attention_mask: (batch, n) or ``None``.

    Example:
        >>> import torch
        >>> scores = torch.tensor([[0.1, 0.2, 0.5, 0.1, 0.1]])
        >>> gold = torch.tensor([[False, True, True, False, False]])
        >>> from heat_module.metrics.functional import dsa
        >>> dsa(scores, gold, torch.tensor([[True, False, False, False, False]]))
        tensor(0.6000)
    """
    sum_dsa, total = dsa_update(scores, gold, distractor, attention_mask)
    return dsa_compute(sum_dsa, total)
