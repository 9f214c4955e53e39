"""Sensitivity under embedding noise as a torchmetrics class; the definition and the functional form are in
:mod:`heat_module.metrics.functional.sensitivity`."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from heat_module.metrics.base import SumCountMetric
from heat_module.metrics.functional.sensitivity import (
    AttributeFn,
    SensitivityOptions,
    sensitivity,
    sensitivity_compute,
    sensitivity_update,
)
from heat_module.metrics.registry import register_metric


@register_metric("sensitivity", title="Sensitivity", inputs="attribute_fn", functional=sensitivity)
class Sensitivity(SumCountMetric):
    """Sensitivity accumulated over batches (sum and count states).

    Args: as :func:`sensitivity` (``attribute_fn``, ``num_samples``, ``delta``, ``seed``, ``batch_size``,
    ``normalize``) plus torchmetrics ``Metric`` options.

    ``update(inputs_embeds (batch, n, d), attention_mask (batch, n) | None, target_ids (batch,) | None)`` — no
    ``scores`` argument: the metric attributes the noisy copies itself. ``compute()`` returns the mean (scalar).

    Example:
        >>> from heat_module.testing import tiny_metric_example
        >>> forward_fn, x, scores, target = tiny_metric_example()  # "the cat sat on the" -> "road", fixed scores
        >>> from heat_module.metrics import Sensitivity
        >>> def attribute_fn(inputs_embeds, attention_mask, target_ids):  # any method, on noisy embeddings
        ...     return inputs_embeds.norm(dim=-1)
        >>> metric = Sensitivity(attribute_fn, num_samples=2)
        >>> metric.update(x, None, target)
        >>> bool(metric.compute() >= 0)
        True
    """

    higher_is_better = False
    plot_lower_bound = 0.0

    def __init__(
        self,
        attribute_fn: AttributeFn,
        num_samples: int = 10,
        delta: float = 0.01,
        seed: int = 0,
        batch_size: int = 16,
        normalize: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(("sensitivity",), **kwargs)
        self.attribute_fn = attribute_fn
        self.options = SensitivityOptions(num_samples, delta, seed, batch_size, normalize)

    def update(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        target_ids: torch.Tensor | None = None,
    ) -> None:
        """Add a batch (shapes as in :func:`sensitivity`)."""
        sum_sensitivity, count = sensitivity_update(
            inputs_embeds, attention_mask, target_ids, self.attribute_fn, **asdict(self.options)
        )
        self.accumulate({"sensitivity": sum_sensitivity}, count)

    def compute(self) -> torch.Tensor:
        """Mean sensitivity over every example seen."""
        return sensitivity_compute(self.sum_sensitivity, self.total)
