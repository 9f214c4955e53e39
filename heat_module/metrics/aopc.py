"""AOPC comprehensiveness as a torchmetrics class; the definition and the functional form are in
:mod:`heat_module.metrics.functional.aopc`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from heat_module.metrics.base import RankedRemovalMetric
from heat_module.metrics.functional.aopc import AOPC_PERCENTS, AOPCOptions, aopc, aopc_compute, aopc_update
from heat_module.metrics.functional.common import ForwardFn
from heat_module.metrics.functional.context import Perturbation
from heat_module.metrics.registry import register_metric


@register_metric("aopc", title="AOPC", inputs="model", functional=aopc, default=True)
class AOPC(RankedRemovalMetric):
    """AOPC comprehensiveness accumulated over batches (sum and count states).

    Args:
        forward_fn: ``f(inputs_embeds (rows, n, d), attention_mask (rows, n)) -> logits (rows, V)``.
        percents: the k values in percent.
        batch_size: rows per forward call.
        exclude_last: how many final real tokens are never removed nor ranked (0: the standard AOPC).
        perturbation: ``"zero"`` (embeddings zeroed) or ``"deletion"`` (tokens taken out of the sequence).
        kwargs: torchmetrics ``Metric`` options.

    ``update(scores (batch, n), inputs_embeds (batch, n, d), attention_mask (batch, n) | None,
    target_ids (batch,), protected=None)`` (shapes as in :func:`heat_module.metrics.functional.aopc.aopc`) calls
    ``aopc_update``; ``compute()`` returns the mean AOPC (scalar tensor) by ``aopc_compute``.

    Example:
        >>> from heat_module.testing import tiny_metric_example
        >>> forward_fn, x, scores, target = tiny_metric_example()  # "the cat sat on the" -> "road", fixed scores
        >>> from heat_module.metrics import AOPC
        >>> from heat_module.metrics.functional import aopc
        >>> metric = AOPC(forward_fn)
        >>> metric.update(scores, x, None, target)
        >>> bool(metric.compute() == aopc(scores, x, None, target, forward_fn))  # the class = the function
        True
    """

    def __init__(
        self,
        forward_fn: ForwardFn,
        percents: Sequence[float] = AOPC_PERCENTS,
        batch_size: int = 64,
        exclude_last: int = 0,
        perturbation: Perturbation = "zero",
        **kwargs: Any,
    ) -> None:
        options = AOPCOptions(percents, batch_size, exclude_last, perturbation)
        super().__init__("aopc", aopc_update, aopc_compute, forward_fn, options, **kwargs)
