"""Active/passive robustness (HEAT paper appendix, eq. 20): Spearman ρ between the attributions of aligned tokens.

For an original sentence and its rephrasing (active/passive), the caller aligns corresponding tokens and passes
the two score vectors in aligned order (same length; ``valid`` marks the aligned positions to use). Per pair,

    ρ = Pearson correlation of the average ranks (ties share their mean rank) of the two vectors,

averaged over pairs. Higher is better. A pair where either vector is constant over the valid positions (or has
fewer than two valid positions) gets ρ = 0 (no ranking information) rather than NaN, so sums stay finite.
"""

from __future__ import annotations

import torch

from heat_module.metrics.functional.common import mid_ranks


def spearman_rho(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman ρ of two (m,) vectors (0 when either is constant or m < 2), a 0-dim fp64 tensor.

    Example:
        >>> import torch
        >>> from heat_module.metrics.functional import spearman_rho
        >>> spearman_rho(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 30.0, 20.0]))
        tensor(0.5000, dtype=torch.float64)
    """
    if a.shape != b.shape or a.dim() != 1:
        raise ValueError(f"Expected two vectors of the same length, got {tuple(a.shape)} and {tuple(b.shape)}")
    if len(a) < 2:
        return torch.zeros((), dtype=torch.float64, device=a.device)
    ra, rb = mid_ranks(a), mid_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.pow(2).sum() * rb.pow(2).sum()).sqrt()
    if denom == 0:
        return torch.zeros((), dtype=torch.float64, device=a.device)
    return (ra * rb).sum() / denom


def active_passive_values(
    scores_a: torch.Tensor, scores_b: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """(batch,) Spearman ρ per aligned pair.

    Args:
        scores_a: (batch, m) scores of the aligned tokens of the original sentences.
        scores_b: (batch, m) scores of the same tokens in the rephrasings (same order).
        valid: (batch, m) bool, which aligned positions to use (``None``: all).
    """
    if scores_a.dim() != 2 or scores_a.shape != scores_b.shape:
        raise ValueError(f"Expected scores_a and scores_b of one shape (batch, m), got {tuple(scores_a.shape)} "
                         f"and {tuple(scores_b.shape)}")
    if valid is not None and valid.shape != scores_a.shape:
        raise ValueError(f"Expected valid of shape {tuple(scores_a.shape)}, got {tuple(valid.shape)}")
    rhos = []
    for i in range(scores_a.shape[0]):
        keep = slice(None) if valid is None else valid[i].bool()
        rhos.append(spearman_rho(scores_a[i][keep].double(), scores_b[i][keep].double()))
    return torch.stack(rhos).float()


def active_passive_update(
    scores_a: torch.Tensor, scores_b: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """Running totals: (sum of ρ, number of pairs)."""
    values = active_passive_values(scores_a, scores_b, valid)
    return values.sum(), len(values)


def active_passive_compute(sum_rho: torch.Tensor, total: torch.Tensor | int) -> torch.Tensor:
    """Mean ρ over pairs."""
    return sum_rho / total


def active_passive_robustness(
    scores_a: torch.Tensor, scores_b: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean Spearman ρ over aligned (original, rephrased) pairs: scalar tensor (shapes as in the class).

    Example:
        >>> import torch
        >>> from heat_module.metrics.functional import active_passive_robustness
        >>> active_passive_robustness(torch.tensor([[0.1, 0.5, 0.2]]), torch.tensor([[0.3, 0.2, 0.1]]))
        tensor(-0.5000)
    """
    return active_passive_compute(*active_passive_update(scores_a, scores_b, valid))
