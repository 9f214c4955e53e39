"""The exact S (eq. 3): block Hessian-vector products, batched over (token, probe) tangents on the prefix cache.

S_i = (1/m) Σ_k ‖(H Π_i r_k)_i‖₁ by :func:`heat_module.heat.curvature.curvature_exact`; its cost is n·m HVPs and one
gradient per run of consecutive positions (:func:`heat_module.heat.cost.exact_fe`).
"""

from __future__ import annotations

from dataclasses import dataclass

from heat_module.config import HVP_MODES, HVPMode, SEstimator, check_choice, positive_int, register_s_estimator
from heat_module.heat.cost import exact_fe, hvp_runs
from heat_module.heat.curvature import curvature_exact, offload_hvp_mode
from heat_module.heat.part import Example, PartOutput, on_residual_stream
from heat_module.lm.capture import can_share_prefix
from heat_module.result import Cost


@register_s_estimator("exact")
@dataclass(frozen=True)
class ExactS(SEstimator):
    """Exact block HVPs (eq. 3), the paper's S.

    Attributes:
        probes: m, the number of Rademacher probes per token block (eq. 3). ≥ 1.
        hvp_chunk_size: how many (token, probe) HVPs are vmapped at once when ``hvp_memory_mb`` is ``None``. ≥ 1.
        hvp_mode: how the HVPs are formed: ``"forward_over_reverse"`` (``jvp`` of ``grad``, vmapped),
            ``"reverse_over_reverse"`` (one ``create_graph`` gradient per run, batched double backwards) or
            ``"auto"`` (default: reverse-over-reverse on the CPU, where it measured faster; forward-over-reverse on
            other devices — see :func:`heat_module.heat.objective.resolve_hvp_mode`); identical values.
        hvp_memory_mb: activation budget (MB) of one batched HVP call; the (token, probe) tangents per call follow
            from it and the recomputed length (:func:`heat_module.heat.curvature.hvp_chunk`). ``None``: use
            ``hvp_chunk_size`` instead. > 0.
        layers: HEAT-LS: if set, differentiate w.r.t. the residual stream entering layer L-k (k = layers).
    """

    probes: int = 1
    hvp_chunk_size: int = 8
    hvp_mode: HVPMode = "auto"
    hvp_memory_mb: float | None = 2048.0
    layers: int | None = None

    grows_with_n = True
    contrastive = True

    def __post_init__(self) -> None:
        positive_int("probes", self.probes)
        positive_int("hvp_chunk_size", self.hvp_chunk_size)
        check_choice("hvp_mode", self.hvp_mode, HVP_MODES)
        if self.hvp_memory_mb is not None and not (
                isinstance(self.hvp_memory_mb, (int, float)) and not isinstance(self.hvp_memory_mb, bool)
                and 0 < self.hvp_memory_mb < float("inf")):
            raise ValueError(
                f"Expected hvp_memory_mb to be a positive finite number or None, got {self.hvp_memory_mb!r}"
            )
        if self.layers is not None:
            positive_int("layers", self.layers)

    def estimate(self, example: Example) -> PartOutput:
        return on_residual_stream(self._estimate, self.layers, example)

    def _estimate(self, ex: Example) -> PartOutput:
        n, m = ex.n, self.probes
        caps = list(ex.captures)
        share = bool(caps) and can_share_prefix(caps)
        s = curvature_exact(
            ex.model, ex.x, ex.target, ex.probes(m), None, caps if share else None,
            None if self.hvp_memory_mb is not None else self.hvp_chunk_size,
            mode=offload_hvp_mode(ex.model, self.hvp_mode, ex.x.device), memory_mb=self.hvp_memory_mb, foil=ex.foil,
            progress=ex.progress,
        )
        runs = len(hvp_runs(list(range(n)), m, n, share))
        return PartOutput(s, Cost(forward_passes=n * m, hvps=n * m, gradients=runs,
                                  forward_equivalents=exact_fe(n, m, self.hvp_chunk_size, share)))
