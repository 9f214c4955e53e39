"""The Fisher I: the quadratic form I_i ≈ ½ Σ_y P_y (u_{y,i}·(mask − x_i))² over the K most probable tokens
(:mod:`heat_module.heat.fisher_information`): one forward and one K-cotangent backward at any n.

:func:`fisher_cost` is the cost of one set of Fisher factors, shared with the Fisher S
(:mod:`heat_module.heat.s_fisher`), which can take S from the same factors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from heat_module.config import IEstimator, MaskKind, check_mask, positive_int, register_i_estimator
from heat_module.heat.cost import attention_share, fisher_fe
from heat_module.heat.fisher import FisherFactors, fisher_factors
from heat_module.heat.fisher_information import information_from_factors
from heat_module.heat.part import Example, PartOutput
from heat_module.lm.flops import attention_flops, linear_flops_per_token
from heat_module.lm.forward import mask_vector
from heat_module.result import Cost


def check_fisher(topk: object, mass: object, chunk: object) -> None:
    """Validate the settings every Fisher part shares: K, the probability mass, the cotangents per call."""
    positive_int("topk", topk)
    positive_int("chunk", chunk)
    if mass is not None and not (isinstance(mass, (int, float)) and not isinstance(mass, bool) and 0.0 < mass <= 1.0):
        raise ValueError(f"Expected mass in (0, 1] or None, got {mass!r}")


def fisher_cost(factors: FisherFactors, model: torch.nn.Module) -> Cost:
    """One forward and K input-gradient backwards with attention's n² part counted, plus the forwards recomputed by
    checkpointed layers (:func:`heat_module.heat.cost.fisher_fe`); K, the mass covered and the recomputed forwards
    in ``details``.

    Args:
        factors: the factors whose cost is counted (u (K, n, d)).
        model: the model they came from (its FLOPs give attention's share a(n), :mod:`heat_module.lm.flops`).
    """
    K, n = int(factors.u.shape[0]), int(factors.u.shape[1])
    share = attention_share(linear_flops_per_token(model) * n, attention_flops(model, n))
    recomputed = factors.recomputed_forwards
    return Cost(forward_passes=1 + recomputed, gradients=K, forward_equivalents=fisher_fe(K, share, recomputed),
                details={"fisher_k": K, "fisher_mass": factors.mass, "fisher_recomputed_forwards": recomputed})


@register_i_estimator("fisher")
@dataclass(frozen=True)
class FisherI(IEstimator):
    """I from the Fisher factors (a second-order approximation of eq. 4; no contrastive form).

    Attributes:
        mask: what replaces x_i's embedding (as :class:`heat_module.heat.i_exact.ExactI`).
        mask_token_id: the token id whose embedding is used when ``mask == "token"``.
        topk: K, the number of most probable next tokens summed. ≥ 1.
        mass: if set, the sum stops once the kept tokens cover this probability mass, (0, 1].
        chunk: cotangents per vmapped backward call. ≥ 1.
    """

    mask: MaskKind = "zero"
    mask_token_id: int | None = None
    topk: int = 16
    mass: float | None = None
    chunk: int = 8

    def __post_init__(self) -> None:
        check_mask(self.mask, self.mask_token_id)
        check_fisher(self.topk, self.mass, self.chunk)

    def factors(self, ex: Example) -> FisherFactors:
        """The Fisher factors of ``ex`` with this I's K, mass and chunk."""
        return fisher_factors(ex.model, ex.x, self.topk, self.mass, self.chunk)

    def from_factors(self, ex: Example, factors: FisherFactors) -> PartOutput:
        """I from given factors (their cost counted by whoever computed them)."""
        return PartOutput(information_from_factors(factors, ex.x, mask_vector(ex.model, self.mask, self.mask_token_id)))

    def estimate(self, ex: Example) -> PartOutput:
        factors = self.factors(ex)
        return PartOutput(self.from_factors(ex, factors).values, fisher_cost(factors, ex.model))
