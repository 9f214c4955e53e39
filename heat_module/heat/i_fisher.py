"""The Fisher I: the quadratic form I_i ≈ ½ Σ_y P_y (u_{y,i}·(mask − x_i))² over the K most probable tokens
(:mod:`heat_module.heat.fisher_information`): one forward and one K-cotangent backward at any n.

:func:`fisher_cost` is the cost of one set of Fisher factors, shared with the Fisher S
(:mod:`heat_module.heat.s_fisher`), which can take S from the same factors. ``max_forward_equivalents`` turns K into
a budget: the largest K ≤ ``topk`` whose factors that cost model prices within it at the example's n
(:func:`budgeted_topk`), so the cost stays bounded at long n, where attention makes each backward cotangent dearer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from heat_module.config import IEstimator, MaskKind, check_mask, positive_int, register_i_estimator
from heat_module.heat.cost import fisher_calls, fisher_fe, fisher_topk_within, model_attention_share
from heat_module.heat.fisher import FisherFactors, checkpoints_layers, fisher_factors
from heat_module.heat.fisher_information import information_from_factors
from heat_module.heat.part import Example, PartOutput
from heat_module.lm.forward import mask_vector
from heat_module.result import Cost


def check_fisher(topk: object, mass: object, chunk: object, max_forward_equivalents: object = None) -> None:
    """Validate the settings every Fisher part shares: K, the probability mass, the cotangents per call, the budget."""
    positive_int("topk", topk)
    positive_int("chunk", chunk)
    if mass is not None and not (isinstance(mass, (int, float)) and not isinstance(mass, bool) and 0.0 < mass <= 1.0):
        raise ValueError(f"Expected mass in (0, 1] or None, got {mass!r}")
    budget = max_forward_equivalents
    if budget is not None and not (isinstance(budget, (int, float)) and not isinstance(budget, bool)
                                   and math.isfinite(budget) and budget > 0):
        raise ValueError(f"Expected max_forward_equivalents to be a positive number or None, got {budget!r}")


def without_unset_budget(settings: dict) -> dict:
    """An estimator's ``to_dict`` without ``max_forward_equivalents`` when it is ``None`` (the default), so configs
    that set no budget write, and hash, as before the setting existed."""
    if settings.get("max_forward_equivalents", 0) is None:
        settings.pop("max_forward_equivalents")
    return settings


def budgeted_topk(model: torch.nn.Module, n: int, topk: int, chunk: int, max_forward_equivalents: float | None) -> int:
    """K for the Fisher factors of n tokens: ``topk``, or with a budget the largest K ≤ ``topk`` whose factors cost at
    most ``max_forward_equivalents`` FE by the cost model :func:`fisher_cost` reports (one forward, K backward
    cotangents with attention's n² part, one recomputed forward per backward call of ``chunk`` cotangents when the
    layers are checkpointed: :func:`heat_module.heat.cost.fisher_topk_within`).

    Raises:
        ValueError: when even K = 1 costs more than the budget (the message says what K = 1 costs at this n).
    """
    if max_forward_equivalents is None:
        return int(topk)
    share, checkpointed = model_attention_share(model, n), checkpoints_layers(n)
    k = fisher_topk_within(max_forward_equivalents, topk, share, chunk, checkpointed)
    if k == 0:
        one = fisher_fe(1, share, fisher_calls(1, chunk) if checkpointed else 0)
        raise ValueError(
            f"Expected max_forward_equivalents of at least {one:.2f} FE, what the Fisher factors cost with K = 1 at "
            f"n = {n} on this model (one forward, one backward cotangent"
            f"{', one recomputed forward' if checkpointed else ''}), got {max_forward_equivalents!r}"
        )
    return k


def fisher_cost(factors: FisherFactors, model: torch.nn.Module, max_forward_equivalents: float | None = None) -> Cost:
    """One forward and K input-gradient backwards with attention's n² part counted, plus the forwards recomputed by
    checkpointed layers (:func:`heat_module.heat.cost.fisher_fe`); K, the mass covered and the recomputed forwards
    in ``details``, and with a budget also ``fisher_max_fe`` (the budget K was chosen under, :func:`budgeted_topk`).

    Args:
        factors: the factors whose cost is counted (u (K, n, d)).
        model: the model they came from (its FLOPs give attention's share a(n), :mod:`heat_module.lm.flops`).
        max_forward_equivalents: the budget the factors' K was chosen under, or ``None``.
    """
    K, n = int(factors.u.shape[0]), int(factors.u.shape[1])
    recomputed = factors.recomputed_forwards
    details = {"fisher_k": K, "fisher_mass": factors.mass, "fisher_recomputed_forwards": recomputed}
    if max_forward_equivalents is not None:
        details["fisher_max_fe"] = float(max_forward_equivalents)
    return Cost(forward_passes=1 + recomputed, gradients=K,
                forward_equivalents=fisher_fe(K, model_attention_share(model, n), recomputed), details=details)


@register_i_estimator("fisher")
@dataclass(frozen=True)
class FisherI(IEstimator):
    """I from the Fisher factors (a second-order approximation of eq. 4; no contrastive form).

    Attributes:
        mask: what replaces x_i's embedding (as :class:`heat_module.heat.i_exact.ExactI`).
        mask_token_id: the token id whose embedding is used when ``mask == "token"``.
        topk: K, the number of most probable next tokens summed. ≥ 1.
        mass: if set, the sum stops once the kept tokens cover this probability mass, (0, 1].
        chunk: cotangents per vmapped backward call. ≥ 1. With checkpointed layers (long n) each call recomputes
            one forward; yet 16 per call was slower than 8 at n = 1024 and no faster at 2048 (SmolLM2, one CPU thread).
        max_forward_equivalents: a budget in forward-pass equivalents: if set, K is the largest K ≤ ``topk`` whose
            factors the cost model prices within it at the example's n (:func:`budgeted_topk`; fewer tokens at long
            n, where attention makes each backward cotangent dearer); ``None``: K = ``topk``.
    """

    mask: MaskKind = "zero"
    mask_token_id: int | None = None
    topk: int = 16
    mass: float | None = None
    chunk: int = 8
    max_forward_equivalents: float | None = None

    def __post_init__(self) -> None:
        check_mask(self.mask, self.mask_token_id)
        check_fisher(self.topk, self.mass, self.chunk, self.max_forward_equivalents)

    def to_dict(self) -> dict:
        return without_unset_budget(super().to_dict())

    def topk_at(self, model: torch.nn.Module, n: int) -> int:
        """K at n tokens on ``model``: ``topk``, or the largest K within the budget (:func:`budgeted_topk`)."""
        return budgeted_topk(model, n, self.topk, self.chunk, self.max_forward_equivalents)

    def factors(self, ex: Example) -> FisherFactors:
        """The Fisher factors of ``ex`` with this I's K (:meth:`topk_at`), mass and chunk."""
        return fisher_factors(ex.model, ex.x, self.topk_at(ex.model, ex.n), self.mass, self.chunk)

    def from_factors(self, ex: Example, factors: FisherFactors) -> PartOutput:
        """I from given factors (their cost counted by whoever computed them)."""
        return PartOutput(information_from_factors(factors, ex.x, mask_vector(ex.model, self.mask, self.mask_token_id)))

    def estimate(self, ex: Example) -> PartOutput:
        factors = self.factors(ex)
        return PartOutput(self.from_factors(ex, factors).values,
                          fisher_cost(factors, ex.model, self.max_forward_equivalents))
