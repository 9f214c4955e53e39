"""Progress bars of HEAT (tqdm): when to show one, and the bar the estimator updates per chunk.

``HEATConfig.progress`` is ``None`` (auto), ``True`` or ``False``. Auto shows a bar when the expected work of one
attribution exceeds :data:`AUTO_SECONDS`: n·m HVPs (each ≈ :data:`~heat_module.heat.cost.FE_HVP` forward passes over
the recomputed suffix, about half the context on average) plus n masked runs (one forward pass each), each forward
costing ≈ 2·(parameters)·(tokens) FLOPs, at :data:`CPU_FLOPS` on CPU or :data:`GPU_FLOPS` on an accelerator — a
rough estimate, only meant to tell "instant" from "several seconds". Under a Lightning ``Trainer`` the estimator's
``show_progress`` is switched off in auto mode (Lightning's own bar is there); bars never stay on screen after
their attribution (``leave=False``) so they do not clash with an outer bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from heat_module.heat.cost import FE_HVP
from heat_module.lm.offload import input_device
from heat_module.result import Cost

AUTO_SECONDS = 3.0
CPU_FLOPS = 5e10
GPU_FLOPS = 5e12


def expected_seconds(model: nn.Module, n: int, m: int, hvps: bool = True, masked_runs: bool = True) -> float:
    """Rough wall time of one attribution of n tokens with m probes (see the module docstring)."""
    params = sum(p.numel() for p in model.parameters())
    device = input_device(model)  # not the first parameter's: on an offloaded model that is on meta
    flops_per_forward = 2.0 * params * max(n, 1) / 2  # the suffix recomputed after a frozen prefix: ~n/2 tokens
    forwards = (n * m * FE_HVP if hvps else 0) + (n if masked_runs else 0)
    return forwards * flops_per_forward / (CPU_FLOPS if device.type == "cpu" else GPU_FLOPS)


def progress_bar(total: int, enabled: bool, desc: str = "HEAT") -> Any:
    """A tqdm bar over ``total`` units (disabled: a bar that prints nothing); ``leave=False``, on stderr."""
    from tqdm.auto import tqdm  # lazy: only imported when attributing

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, file=sys.stderr, unit="op",
                dynamic_ncols=True)


class Meter:
    """The progress bar and the :class:`~heat_module.result.Cost` of one attribution, in one place.

    ``with meter.part("curvature", units) as progress:`` times the block into ``cost.seconds["curvature"]``, lets
    the part report its units through ``progress`` (a callable taking a count) and completes the part's ``units`` on
    the bar when the block ends (estimators that report no per-chunk progress); :meth:`add` sums a part's cost.
    """

    def __init__(self, total: int, enabled: bool, cost: Cost | None = None) -> None:
        self.bar = progress_bar(total, enabled)
        self.cost = cost if cost is not None else Cost()

    @contextlib.contextmanager
    def part(self, name: str, units: int = 0, desc: str | None = None) -> Iterator[Callable[[int], object]]:
        done = 0

        def update(k: int) -> None:
            nonlocal done
            done += k
            self.bar.update(k)

        if desc is not None:
            self.bar.set_description(desc)
        t0 = time.perf_counter()
        yield update
        self.cost.seconds[name] = self.cost.seconds.get(name, 0.0) + time.perf_counter() - t0
        if units > done:
            self.bar.update(units - done)

    def add(self, cost: Cost, scale: float = 1.0) -> None:
        """Add a part's cost: counters and seconds summed (its FE × ``scale``); its details (``fisher_k``, ...)
        describe how that part ran, so they are set, not summed (S and I with separate Fisher factors each report
        their own K)."""
        self.cost.add(dataclasses.replace(cost, details={}), scale)
        self.cost.details.update(cost.details)

    def close(self) -> None:
        self.bar.close()
