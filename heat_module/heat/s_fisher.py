"""The Fisher S: eq. 3 with the Hessian replaced by the Gauss–Newton/Fisher matrix over the K most probable next
tokens (:mod:`heat_module.heat.fisher`): one forward and one K-cotangent backward at any n.

With the Fisher I (:mod:`heat_module.heat.i_fisher`) on the same factors, :func:`shared_fisher` computes both from
ONE forward and ONE backward (what ``HEATConfig.preset("fast")`` costs).
"""

from __future__ import annotations

from dataclasses import dataclass

from heat_module.config import IEstimator, SEstimator, positive_int, register_s_estimator
from heat_module.heat.fisher import FisherFactors, fisher_block_norms, fisher_factors
from heat_module.heat.i_fisher import FisherI, check_fisher, fisher_cost
from heat_module.heat.part import Example, PartOutput, on_residual_stream


@register_s_estimator("fisher")
@dataclass(frozen=True)
class FisherS(SEstimator):
    """S from the Fisher surrogate F = Σ_y P_y u_y u_yᵀ of the Hessian (eq. 3 with H → F).

    Attributes:
        probes: m, the Rademacher probes of the block norms (eq. 3). ≥ 1.
        topk: K, the number of most probable next tokens summed. ≥ 1.
        mass: if set, the sum stops once the kept tokens cover this probability mass, (0, 1].
        chunk: cotangents per vmapped backward call. ≥ 1.
        layers: HEAT-LS: if set, differentiate w.r.t. the residual stream entering layer L-k (k = layers).
    """

    probes: int = 1
    topk: int = 16
    mass: float | None = None
    chunk: int = 8
    layers: int | None = None

    def __post_init__(self) -> None:
        positive_int("probes", self.probes)
        check_fisher(self.topk, self.mass, self.chunk)
        if self.layers is not None:
            positive_int("layers", self.layers)

    def from_factors(self, ex: Example, factors: FisherFactors) -> PartOutput:
        """S from given factors of ``ex.x`` (their cost counted by whoever computed them)."""
        return PartOutput(fisher_block_norms(factors, ex.probes(self.probes), ex.backend).float())

    def estimate(self, example: Example) -> PartOutput:
        return on_residual_stream(self._estimate, self.layers, example)

    def _estimate(self, ex: Example) -> PartOutput:
        factors = fisher_factors(ex.model, ex.x, self.topk, self.mass, self.chunk)
        return PartOutput(self.from_factors(ex, factors).values, fisher_cost(factors, ex.model))


def shares_factors(s: SEstimator | None, i: IEstimator | None) -> bool:
    """Whether S and I can come from one set of Fisher factors: both Fisher, the same K, mass and chunk, and S
    w.r.t. X (not HEAT-LS)."""
    return (isinstance(s, FisherS) and isinstance(i, FisherI) and s.layers is None
            and (s.topk, s.mass, s.chunk) == (i.topk, i.mass, i.chunk))


def shared_fisher(s: FisherS, i: FisherI, ex: Example) -> tuple[PartOutput, PartOutput]:
    """S and I from ONE set of Fisher factors (:func:`shares_factors` must hold): (S with an empty cost, I with the
    cost of the factors)."""
    if not shares_factors(s, i):
        raise ValueError(f"Expected a Fisher S and a Fisher I on the same factors, got {s!r} and {i!r}")
    factors = i.factors(ex)
    cost = fisher_cost(factors, ex.model)
    return s.from_factors(ex, factors), PartOutput(i.from_factors(ex, factors).values, cost)
