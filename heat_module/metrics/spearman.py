"""Active/passive robustness (mean Spearman ρ) as a torchmetrics class; the definition and the functional form
are in :mod:`heat_module.metrics.functional.spearman`."""

from __future__ import annotations

from typing import Any

import torch

from heat_module.metrics.base import SumCountMetric
from heat_module.metrics.functional.spearman import (
    active_passive_compute,
    active_passive_robustness,
    active_passive_update,
)
from heat_module.metrics.registry import register_metric


@register_metric("active_passive_robustness", title="Active/passive robustness (Spearman ρ)",
                 aliases=("spearman",), inputs="pairs", functional=active_passive_robustness)
class ActivePassiveRobustness(SumCountMetric):
    """Mean Spearman ρ over aligned pairs (sum and count states).

    ``update(scores_a (batch, m), scores_b (batch, m), valid (batch, m) bool | None)``; ``compute()`` -> scalar.

    Example:
        >>> import torch
        >>> from heat_module.metrics import ActivePassiveRobustness
        >>> metric = ActivePassiveRobustness()
        >>> metric.update(torch.tensor([[0.1, 0.5, 0.2]]), torch.tensor([[0.2, 0.9, 0.3]]), None)  # aligned tokens
        >>> metric.compute()
        tensor(1.)
    """

    higher_is_better = True
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(("rho",), **kwargs)

    def update(self, scores_a: torch.Tensor, scores_b: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Add a batch of aligned pairs."""
        sum_rho, count = active_passive_update(scores_a, scores_b, valid)
        self.accumulate({"rho": sum_rho}, count)

    def compute(self) -> torch.Tensor:
        """Mean ρ over every pair seen."""
        return active_passive_compute(self.sum_rho, self.total)
