"""Dependent Sentence Attribution (DSA, HEAT paper §5.1 and appendix "Curated Attribution Dataset").

Scores are clipped at 0 and normalised to sum to one over the context (the real tokens; uniform when no score is
positive); then per example

    DSA = Σ_{i ∈ gold} s_i − Σ_{j ∈ distractor} s_j ∈ [−1, 1],

averaged over examples. Higher is better. ``gold`` and ``distractor`` are bool masks (batch, n) aligned with the
padded inputs, or per-example index lists counted from the first real token (positions in the unpadded example).
Positions in both sets cancel. No model is needed.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

from heat_module.metrics._common import IndexSpec, index_mask, normalize_batch, real_mask


def _dsa_values(
    scores: torch.Tensor,
    gold: IndexSpec,
    distractor: IndexSpec,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(batch,) per-example DSA.

    Args:
        scores: (batch, n) attribution scores.
        gold: (batch, n) bool, or ``batch`` index lists (unpadded positions).
        distractor: same form as ``gold``.
        attention_mask: (batch, n) or ``None``.
    """
    if scores.dim() != 2:
        raise ValueError(f"Expected scores of shape (batch, n), got {tuple(scores.shape)}")
    real = real_mask(attention_mask, *scores.shape, scores.device)
    s = normalize_batch(scores, real)
    gold_m = index_mask(gold, real, "gold")
    distractor_m = index_mask(distractor, real, "distractor")
    return (s * gold_m).sum(-1) - (s * distractor_m).sum(-1)


def _dsa_update(
    scores: torch.Tensor,
    gold: IndexSpec,
    distractor: IndexSpec,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Running totals: (sum of per-example DSA, number of examples)."""
    values = _dsa_values(scores, gold, distractor, attention_mask)
    return values.sum(), len(values)


def _dsa_compute(sum_dsa: torch.Tensor, total: torch.Tensor | int) -> torch.Tensor:
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
    """
    sum_dsa, total = _dsa_update(scores, gold, distractor, attention_mask)
    return _dsa_compute(sum_dsa, total)


class DSA(Metric):
    """DSA accumulated over batches (sum and count states).

    ``update(scores (batch, n), gold (batch, n) bool | index lists, distractor (same), attention_mask (batch, n) |
    None)``; ``compute()`` returns the mean DSA (scalar tensor).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sum_dsa", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(
        self,
        scores: torch.Tensor,
        gold: IndexSpec,
        distractor: IndexSpec,
        attention_mask: torch.Tensor | None = None,
    ) -> None:
        """Add a batch (shapes as in :func:`dsa`)."""
        sum_dsa, count = _dsa_update(scores, gold, distractor, attention_mask)
        self.sum_dsa += sum_dsa.to(self.sum_dsa.device)
        self.total += count

    def compute(self) -> torch.Tensor:
        """Mean DSA over every example seen."""
        return _dsa_compute(self.sum_dsa, self.total)
