"""ABPC (area between the deletion and insertion curves) as a torchmetrics class; the definition and the functional
form are in :mod:`heat_module.metrics.functional.abpc`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from heat_module.metrics.base import SumCountMetric
from heat_module.metrics.functional.abpc import ABPCOptions, abpc_compute, abpc_update
from heat_module.metrics.functional.common import ForwardFn


class ABPC(SumCountMetric):
    """ABPC accumulated over batches (sum and count states).

    Args:
        forward_fn: ``f(inputs_embeds (rows, n, d), attention_mask (rows, n)) -> logits (rows, V)``.
        steps: T, the number of intervals of [0, 1].
        batch_size: rows per forward call.
        kwargs: torchmetrics ``Metric`` options.

    ``update(scores (batch, n), inputs_embeds (batch, n, d), attention_mask (batch, n) | None,
    target_ids (batch,))``; ``compute()`` returns the mean ABPC (scalar tensor).
    """

    higher_is_better = True

    def __init__(self, forward_fn: ForwardFn, steps: int = 10, batch_size: int = 64, **kwargs: Any) -> None:
        super().__init__(("abpc",), **kwargs)
        self.forward_fn = forward_fn
        self.options = ABPCOptions(steps, batch_size)

    def update(
        self,
        scores: torch.Tensor,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        target_ids: torch.Tensor,
    ) -> None:
        """Add a batch (shapes as in :func:`heat_module.metrics.functional.abpc.abpc`)."""
        total_abpc, count = abpc_update(scores, inputs_embeds, attention_mask, target_ids, self.forward_fn,
                                         **asdict(self.options))
        self.accumulate({"abpc": total_abpc}, count)

    def compute(self) -> torch.Tensor:
        """Mean ABPC over every example seen."""
        return abpc_compute(self.sum_abpc, self.total)
