"""HEAT-LR (Thm 4): S from a randomized eigendecomposition of the Hessian, k = ``rank`` directions
(:func:`heat_module.heat.lowrank.curvature_lowrank`); its cost is the HVPs of the sketch."""

from __future__ import annotations

from dataclasses import dataclass

from heat_module.config import HVP_MODES, HVPMode, SEstimator, check_choice, positive_int, register_s_estimator
from heat_module.heat.cost import FE_HVP
from heat_module.heat.curvature import offload_hvp_mode
from heat_module.heat.lowrank import curvature_lowrank
from heat_module.heat.part import Example, PartOutput, on_residual_stream
from heat_module.result import Cost


@register_s_estimator("lowrank")
@dataclass(frozen=True)
class LowRankS(SEstimator):
    """S from a rank-k randomized eigendecomposition of H (HEAT-LR).

    Attributes:
        probes: m, the Rademacher probes of the block norms (eq. 3). ≥ 1.
        rank: k, the number of eigen-directions kept. ≥ 1.
        oversample: extra random directions of the randomized eigendecomposition. ≥ 0.
        chunk: HVPs vmapped at once. ≥ 1.
        hvp_mode: how the HVPs are formed (as :class:`heat_module.heat.s_exact.ExactS`).
        layers: HEAT-LS: if set, differentiate w.r.t. the residual stream entering layer L-k (k = layers).
    """

    probes: int = 1
    rank: int = 16
    oversample: int = 8
    chunk: int = 8
    hvp_mode: HVPMode = "auto"
    layers: int | None = None

    def __post_init__(self) -> None:
        for name in ("probes", "rank", "chunk"):
            positive_int(name, getattr(self, name))
        if not isinstance(self.oversample, int) or isinstance(self.oversample, bool) or self.oversample < 0:
            raise ValueError(f"Expected oversample to be an integer >= 0, got {self.oversample!r}")
        check_choice("hvp_mode", self.hvp_mode, HVP_MODES)
        if self.layers is not None:
            positive_int("layers", self.layers)

    def estimate(self, example: Example) -> PartOutput:
        return on_residual_stream(self._estimate, self.layers, example)

    def _estimate(self, ex: Example) -> PartOutput:
        mode = offload_hvp_mode(ex.model, self.hvp_mode, ex.x.device)
        s, lr = curvature_lowrank(ex.model, ex.x, ex.target, ex.probes(self.probes), self.rank, self.oversample,
                                  self.chunk, ex.seed, ex.backend, mode=mode)
        cost = Cost(hvps=lr.hvps, forward_equivalents=lr.hvps * FE_HVP,
                    details={"lowrank_k": int(lr.eigenvalues.numel())})
        return PartOutput(s.float(), cost)
