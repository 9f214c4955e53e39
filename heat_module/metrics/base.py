"""The base classes of the metric classes whose states are sums of per-example values and an example count."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torchmetrics import Metric


class SumCountMetric(Metric):
    """A torchmetrics ``Metric`` whose states are sums of per-example values and an example count.

    Each name in ``sum_names`` gets a float state ``sum_<name>``; ``total`` counts the examples. All are summed
    across processes, so ``compute`` (sum / total) gives the same value on one process or under DDP. Subclasses
    add a batch with :meth:`accumulate`.

    Args:
        sum_names: the names of the sums.
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ...).
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, sum_names: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sum_names = tuple(sum_names)
        for name in self.sum_names:
            self.add_state(f"sum_{name}", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def accumulate(self, sums: Mapping[str, torch.Tensor], count: int) -> None:
        """Add ``sums[name]`` (scalar) to each ``sum_<name>`` state and ``count`` examples to ``total``."""
        for name, value in sums.items():
            state = getattr(self, f"sum_{name}")
            state += value.to(state.device)
        self.total += count

    def sums(self) -> dict[str, torch.Tensor]:
        """``{name: sum_<name> state}`` for each name in ``sum_names``."""
        return {name: getattr(self, f"sum_{name}") for name in self.sum_names}


class RankedRemovalMetric(SumCountMetric):
    """The base of AOPC and ABPC: the mean over examples of a value of P(y) on copies of the embeddings with tokens
    removed in score-rank order (:func:`heat_module.metrics.functional.context.context_removal_probs`).

    ``update(scores (batch, n), inputs_embeds (batch, n, d), attention_mask (batch, n) | None, target_ids (batch,),
    protected=None)`` adds ``update_fn``'s totals to the one sum state ``sum_<name>``; ``compute()`` returns
    ``compute_fn`` of it.

    Args:
        name: the metric's name (``"aopc"``).
        update_fn: ``f(scores, inputs_embeds, attention_mask, target_ids, forward_fn, protected, **options) ->
            (sum, count)``,
            the functional ``<name>_update``.
        compute_fn: ``f(sum, total) -> mean``, the functional ``<name>_compute``.
        forward_fn: ``f(inputs_embeds (rows, n, d), attention_mask (rows, n)) -> logits (rows, V)``.
        options: the metric's options dataclass, handed to ``update_fn`` as keywords.
        kwargs: torchmetrics ``Metric`` options.
    """

    higher_is_better = True

    def __init__(
        self,
        name: str,
        update_fn: Callable[..., tuple[torch.Tensor, int]],
        compute_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        forward_fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
        options: Any,
        **kwargs: Any,
    ) -> None:
        super().__init__((name,), **kwargs)
        self.update_fn = update_fn
        self.compute_fn = compute_fn
        self.forward_fn = forward_fn
        self.options = options

    def update(
        self,
        scores: torch.Tensor,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        target_ids: torch.Tensor,
        protected: torch.Tensor | Sequence[Sequence[int]] | None = None,
    ) -> None:
        """Add a batch (shapes as in the functional form); ``protected``: positions never removed nor ranked (bool
        (batch, n) or per-example index lists counted from the first real token), or ``None``."""
        total, count = self.update_fn(scores, inputs_embeds, attention_mask, target_ids, self.forward_fn,
                                      protected, **asdict(self.options))
        self.accumulate({self.sum_names[0]: total}, count)

    def compute(self) -> torch.Tensor:
        """The mean over every example seen."""
        return self.compute_fn(getattr(self, f"sum_{self.sum_names[0]}"), self.total)
