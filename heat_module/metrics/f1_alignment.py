"""F1 / Span-F1 alignment as a torchmetrics class; the definition and the functional form are in
:mod:`heat_module.metrics.functional.f1_alignment`."""

from __future__ import annotations

from typing import Any

import torch

from heat_module.metrics.base import SumCountMetric
from heat_module.metrics.functional.common import IndexSpec
from heat_module.metrics.functional.f1_alignment import f1_alignment, f1_alignment_compute, f1_alignment_update
from heat_module.metrics.registry import register_metric


@register_metric("f1", title="F1", keys={"f1": "F1", "span_f1": "Span-F1"}, aliases=("f1_alignment",),
                 inputs="gold", functional=f1_alignment, default=True)
class F1Alignment(SumCountMetric):
    """F1 and Span-F1 alignment accumulated over batches (sum and count states).

    ``update(scores (batch, n), gold (batch, n) bool | index lists, attention_mask (batch, n) | None)``;
    ``compute()`` returns ``{"f1", "span_f1"}``.

    Example:
        >>> import torch
        >>> scores = torch.tensor([[0.1, 0.2, 0.5, 0.1, 0.1]])
        >>> gold = torch.tensor([[False, True, True, False, False]])
        >>> from heat_module.metrics import F1Alignment
        >>> F1Alignment()(scores, gold, None)  # the two highest scores are the two gold tokens
        {'f1': tensor(1.), 'span_f1': tensor(1.)}
    """

    higher_is_better = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(("f1", "span_f1"), **kwargs)

    def update(self, scores: torch.Tensor, gold: IndexSpec, attention_mask: torch.Tensor | None = None) -> None:
        """Add a batch (shapes as in :func:`f1_alignment`)."""
        sum_f1, sum_span, count = f1_alignment_update(scores, gold, attention_mask)
        self.accumulate({"f1": sum_f1, "span_f1": sum_span}, count)

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"f1", "span_f1"}`` means over the examples with a gold set."""
        return f1_alignment_compute(self.sum_f1, self.sum_span_f1, self.total)
