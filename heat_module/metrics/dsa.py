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

from heat_module.metrics._common import IndexSpec, SumCountMetric, check_scores, index_mask, normalize_batch


def _dsa_values(
    scores: torch.Tensor, gold: IndexSpec, distractor: IndexSpec, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """(batch,) per-example DSA of scores (batch, n); ``gold``, ``distractor`` and ``attention_mask`` as in
    :func:`dsa`."""
    real = check_scores(scores, attention_mask)
    s = normalize_batch(scores, real)
    gold_m = index_mask(gold, real, "gold")
    distractor_m = index_mask(distractor, real, "distractor")
    return (s * gold_m).sum(-1) - (s * distractor_m).sum(-1)


def _dsa_update(
    scores: torch.Tensor, gold: IndexSpec, distractor: IndexSpec, attention_mask: torch.Tensor | None = None
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


class DSA(SumCountMetric):
    """DSA accumulated over batches (sum and count states).

    ``update(scores (batch, n), gold (batch, n) bool | index lists, distractor (same), attention_mask (batch, n) |
    None)``; ``compute()`` returns the mean DSA (scalar tensor).
    """

    higher_is_better = True
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(("dsa",), **kwargs)

    def update(
        self,
        scores: torch.Tensor,
        gold: IndexSpec,
        distractor: IndexSpec,
        attention_mask: torch.Tensor | None = None,
    ) -> None:
        """Add a batch (shapes as in :func:`dsa`)."""
        sum_dsa, count = _dsa_update(scores, gold, distractor, attention_mask)
        self.accumulate({"dsa": sum_dsa}, count)

    def compute(self) -> torch.Tensor:
        """Mean DSA over every example seen."""
        return _dsa_compute(self.sum_dsa, self.total)
