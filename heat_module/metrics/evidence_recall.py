"""Evidence recall as a torchmetrics class; the definition and the functional form are in
:mod:`heat_module.metrics.functional.evidence_recall`."""

from __future__ import annotations

from typing import Any

import torch

from heat_module.metrics.base import SumCountMetric
from heat_module.metrics.functional.common import IndexSpec
from heat_module.metrics.functional.evidence_recall import (
    check_options,
    evidence_recall_compute,
    evidence_recall_update,
)


class EvidenceRecall(SumCountMetric):
    """Top-k recall of known evidence tokens among the context tokens, accumulated over batches.

    Args:
        top_k: how many top-ranked context tokens count; ``None`` (default): as many as there are evidence tokens.
        exclude_last: how many final real tokens are left out of the ranking (default 1).
        kwargs: torchmetrics ``Metric`` options.

    ``update(scores (batch, n), evidence (batch, n) bool | index lists, attention_mask (batch, n) | None,
    protected=None)``; ``compute()`` returns the mean recall (scalar tensor).

    Example:
        >>> import torch
        >>> scores = torch.tensor([[0.1, 0.2, 0.5, 0.1, 0.1]])
        >>> gold = torch.tensor([[False, True, True, False, False]])
        >>> from heat_module.metrics import EvidenceRecall
        >>> metric = EvidenceRecall(top_k=2)
        >>> metric.update(scores, gold, None)
        >>> metric.compute()
        tensor(1.)
    """

    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(self, top_k: int | None = None, exclude_last: int = 1, **kwargs: Any) -> None:
        super().__init__(("recall",), **kwargs)
        self.top_k = top_k
        self.exclude_last = exclude_last
        check_options(top_k, exclude_last)

    def update(
        self,
        scores: torch.Tensor,
        evidence: IndexSpec,
        attention_mask: torch.Tensor | None = None,
        protected: IndexSpec | None = None,
    ) -> None:
        """Add a batch (shapes as in :func:`heat_module.metrics.functional.evidence_recall.evidence_recall`)."""
        total, count = evidence_recall_update(scores, evidence, attention_mask, self.top_k, self.exclude_last,
                                              protected)
        self.accumulate({"recall": total}, count)

    def compute(self) -> torch.Tensor:
        """Mean recall over every example seen."""
        return evidence_recall_compute(self.sum_recall, self.total)
