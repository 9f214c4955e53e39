"""The gate M as a part: the target-conditioned transition gate (:mod:`heat_module.heat.transition`) with its settings,
read from the :class:`~heat_module.config.HEATConfig` fields that shape it (``rollout_layers``, ``sink``, ``gate``,
``backend``: M is computed by every configuration, so its settings always apply and stay fields of the config).

It reads the captures of the unperturbed forward only, so it costs no pass of its own (its cost is empty; its seconds
are timed where HEAT composes the parts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from heat_module.config import HEATConfig
from heat_module.heat.part import Example, PartOutput
from heat_module.heat.transition import transition_from_captures
from heat_module.lm.capture import LayerCapture


@dataclass(frozen=True)
class GateM:
    """M of one example or of a left-padded batch.

    Attributes:
        rollout_layers: the layers M sums over (``None``: all), as ``HEATConfig.rollout_layers``.
        sink: attention-sink handling, as ``HEATConfig.sink``.
        gate: ``"full"`` or ``"attention_only"``, as ``HEATConfig.gate``.
        backend: the kernel backend of the rollout.
        block: query rows per block of the rollout's torch path (the memory plan's ``rollout_block``; ``None``:
            :data:`heat_module.heat.transition.ROLLOUT_BLOCK`).
    """

    rollout_layers: tuple[int, ...] | None = None
    sink: str = "auto"
    gate: str = "full"
    backend: str = "auto"
    block: int | None = None

    @classmethod
    def from_config(cls, config: HEATConfig, block: int | None = None) -> GateM:
        layers = None if config.rollout_layers is None else tuple(config.rollout_layers)
        return cls(layers, config.sink, config.gate, config.backend, block)

    def batch(self, captures: Sequence[LayerCapture], attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n) M of a left-padded batch (0 on padding)."""
        layers = None if self.rollout_layers is None else list(self.rollout_layers)
        return transition_from_captures(captures, attention_mask, layers, self.sink, self.backend, gate=self.gate,
                                        block=self.block)

    def estimate(self, example: Example) -> PartOutput:
        """(n,) M of one unpadded example, no cost of its own."""
        return PartOutput(self.batch(example.captures)[0])
