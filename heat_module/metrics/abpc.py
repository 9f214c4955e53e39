"""ABPC (area between the deletion and insertion curves) as a torchmetrics class; the definition and the functional
form are in :mod:`heat_module.metrics.functional.abpc`."""

from __future__ import annotations

from typing import Any

from heat_module.metrics.base import RankedRemovalMetric
from heat_module.metrics.functional.abpc import ABPCOptions, abpc, abpc_compute, abpc_update
from heat_module.metrics.functional.common import ForwardFn
from heat_module.metrics.functional.context import Perturbation
from heat_module.metrics.registry import register_metric


@register_metric("abpc", title="ABPC", inputs="model", functional=abpc, default=True)
class ABPC(RankedRemovalMetric):
    """ABPC accumulated over batches (sum and count states).

    Args:
        forward_fn: ``f(inputs_embeds (rows, n, d), attention_mask (rows, n)) -> logits (rows, V)``.
        steps: T, the number of intervals of [0, 1].
        batch_size: rows per forward call.
        exclude_last: how many final real tokens are never removed nor ranked (0: the standard ABPC).
        perturbation: ``"zero"`` (embeddings zeroed) or ``"deletion"`` (tokens taken out of the sequence).
        kwargs: torchmetrics ``Metric`` options.

    ``update(scores (batch, n), inputs_embeds (batch, n, d), attention_mask (batch, n) | None,
    target_ids (batch,), protected=None)`` (shapes as in :func:`heat_module.metrics.functional.abpc.abpc`) calls
    ``abpc_update``; ``compute()`` returns the mean ABPC (scalar tensor) by ``abpc_compute``.

    Example:
        >>> from heat_module.testing import tiny_metric_example
        >>> forward_fn, x, scores, target = tiny_metric_example()  # "the cat sat on the" -> "road", fixed scores
        >>> from heat_module.metrics import ABPC
        >>> metric = ABPC(forward_fn, steps=5)  # deletion and insertion curves at 0, 20, ..., 100 % removed
        >>> metric.update(scores, x, None, target)
        >>> metric.update(scores.flip(-1), x, None, target)  # the mean over every example added
        >>> metric.compute().shape
        torch.Size([])
    """

    def __init__(
        self,
        forward_fn: ForwardFn,
        steps: int = 10,
        batch_size: int = 64,
        exclude_last: int = 0,
        perturbation: Perturbation = "zero",
        **kwargs: Any,
    ) -> None:
        options = ABPCOptions(steps, batch_size, exclude_last, perturbation)
        super().__init__("abpc", abpc_update, abpc_compute, forward_fn, options, **kwargs)
