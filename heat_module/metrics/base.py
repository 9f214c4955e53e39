"""The base class of the metric classes whose states are sums of per-example values and an example count."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
