"""AOPC comprehensiveness as a torchmetrics class; the definition and the functional form are in
:mod:`heat_module.metrics.functional.aopc`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from heat_module.metrics.base import SumCountMetric
from heat_module.metrics.functional.aopc import AOPC_PERCENTS, AOPCOptions, aopc_compute, aopc_update
from heat_module.metrics.functional.common import ForwardFn


class AOPC(SumCountMetric):
    """AOPC comprehensiveness accumulated over batches (sum and count states).

    Args:
        forward_fn: ``f(inputs_embeds (rows, n, d), attention_mask (rows, n)) -> logits (rows, V)``.
        percents: the k values in percent.
        batch_size: rows per forward call.
        kwargs: torchmetrics ``Metric`` options.

    ``update(scores (batch, n), inputs_embeds (batch, n, d), attention_mask (batch, n) | None,
    target_ids (batch,))``; ``compute()`` returns the mean AOPC (scalar tensor).
    """

    higher_is_better = True

    def __init__(
        self, forward_fn: ForwardFn, percents: Sequence[float] = AOPC_PERCENTS, batch_size: int = 64, **kwargs: Any
    ) -> None:
        super().__init__(("aopc",), **kwargs)
        self.forward_fn = forward_fn
        self.options = AOPCOptions(percents, batch_size)

    def update(
        self,
        scores: torch.Tensor,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        target_ids: torch.Tensor,
    ) -> None:
        """Add a batch (shapes as in :func:`aopc`)."""
        total_aopc, count = aopc_update(scores, inputs_embeds, attention_mask, target_ids, self.forward_fn,
                                         **asdict(self.options))
        self.accumulate({"aopc": total_aopc}, count)

    def compute(self) -> torch.Tensor:
        """Mean AOPC over every example seen."""
        return aopc_compute(self.sum_aopc, self.total)
