"""The parts HEAT composes (eq. 5): what an estimator of S or I receives and returns, and HEAT-LS for every S.

The gate M (:class:`heat_module.heat.m_gate.GateM`), an estimator of S (:class:`heat_module.config.SEstimator`:
``s_exact``, ``s_fisher``, ``s_lowrank``) or of I
(:class:`heat_module.config.IEstimator`: ``i_exact``, ``i_fisher``) is a frozen dataclass of its own settings whose
``estimate(example)`` takes one unpadded :class:`Example` and returns a :class:`PartOutput`: the (n,) values and the
:class:`~heat_module.result.Cost` of computing them, counted by the estimator itself (:mod:`heat_module.heat.cost`
holds the formulas). :class:`heat_module.heat.estimator.HEAT` composes the parts and sums their costs and progress in
one place (:class:`heat_module.heat.progress.Meter`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from heat_module.heat.cost import FE_FORWARD
from heat_module.heat.curvature import rademacher
from heat_module.heat.layer_sampling import num_layers, residual_input, residual_stream, start_layer
from heat_module.lm.capture import LayerCapture
from heat_module.result import Cost


@dataclass
class Example:
    """One unpadded example, as every part receives it.

    Attributes:
        model: the causal LM (on the ``"heat"`` attention implementation).
        x: (1, n, d) the variable: the input embeddings X (or h^{L-k} under HEAT-LS, :func:`on_residual_stream`).
        target: the target id y.
        captures: the unperturbed run's captures (their keys/values are the frozen prefix cache).
        logits: (V,) next-token logits of the unperturbed run.
        foil: a foil id (S and I of the contrast log P(target) − log P(foil)), or ``None``.
        backend: the kernel backend of the block-norm ops.
        seed: the seed of the probes (and of HEAT-LR's random sketch).
        progress: called with units of work done (a progress bar's ``update``), or ``None``.
    """

    model: nn.Module
    x: torch.Tensor
    target: int
    captures: Sequence[LayerCapture]
    logits: torch.Tensor | None = None
    foil: int | None = None
    backend: str = "auto"
    seed: int = 0
    progress: Callable[[int], object] | None = None

    @property
    def n(self) -> int:
        return int(self.x.shape[1])

    def probes(self, m: int) -> torch.Tensor:
        """(m, n, d) Rademacher probes (eq. 3) seeded with :attr:`seed`, in x's dtype and device."""
        return rademacher(m, self.n, int(self.x.shape[2]), seed=self.seed, device=self.x.device, dtype=self.x.dtype)


@dataclass
class PartOutput:
    """What a part returns: (n,) values and the cost of computing them."""

    values: torch.Tensor
    cost: Cost = field(default_factory=Cost)


def on_residual_stream(estimate: Callable[[Example], PartOutput], layers: int | None, example: Example) -> PartOutput:
    """``estimate(example)``, or under HEAT-LS (``layers`` = k) w.r.t. the residual stream entering layer L-k: one
    extra full forward reads h^{L-k}, the estimator runs on the last k layers (its FE × k/L) and only the captures of
    those layers serve as prefix cache (:mod:`heat_module.heat.layer_sampling`)."""
    if layers is None:
        return estimate(example)
    model = example.model
    start = start_layer(model, layers)
    caps = list(example.captures)
    caps = [c for c in caps if c.decoder_layer >= start] if all(
        c.decoder_layer is not None for c in caps) else caps[start:]
    z = residual_input(model, example.x, start)
    with residual_stream(model, start):
        out = estimate(dataclasses.replace(example, x=z, captures=caps))
    cost = Cost(forward_passes=1, forward_equivalents=FE_FORWARD,
                details={"curvature_layers": [start, num_layers(model)]})
    return PartOutput(out.values, cost.add(out.cost, scale=layers / num_layers(model)))
