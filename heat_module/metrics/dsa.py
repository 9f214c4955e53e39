"""DSA as a torchmetrics class; the definition and the functional form are in
:mod:`heat_module.metrics.functional.dsa`."""

from __future__ import annotations

from typing import Any

import torch

from heat_module.metrics.base import SumCountMetric
from heat_module.metrics.functional.common import IndexSpec
from heat_module.metrics.functional.dsa import dsa, dsa_compute, dsa_update
from heat_module.metrics.registry import register_metric


@register_metric("dsa", title="DSA", inputs="gold_distractor", functional=dsa, default=True)
class DSA(SumCountMetric):
    """DSA accumulated over batches (sum and count states).

    ``update(scores (batch, n), gold (batch, n) bool | index lists, distractor (same), attention_mask (batch, n) |
    None)``; ``compute()`` returns the mean DSA (scalar tensor).

    Example:
        >>> import torch
        >>> scores = torch.tensor([[0.1, 0.2, 0.5, 0.1, 0.1]])
        >>> gold = torch.tensor([[False, True, True, False, False]])
        >>> from heat_module.metrics import DSA
        >>> metric = DSA()
        >>> metric.update(scores, gold, torch.tensor([[True, False, False, False, False]]), None)
        >>> metric.compute()  # 0.2 + 0.5 on the gold, 0.1 on the distractor: (0.7 - 0.1)
        tensor(0.6000)
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
        sum_dsa, count = dsa_update(scores, gold, distractor, attention_mask)
        self.accumulate({"dsa": sum_dsa}, count)

    def compute(self) -> torch.Tensor:
        """Mean DSA over every example seen."""
        return dsa_compute(self.sum_dsa, self.total)
