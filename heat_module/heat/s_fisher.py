"""The Fisher S: eq. 3 with the Hessian replaced by the Gauss–Newton/Fisher matrix over the K most probable next
tokens (:mod:`heat_module.heat.fisher`): one forward and one K-cotangent backward at any n.

With the Fisher I (:mod:`heat_module.heat.i_fisher`) on the same factors, :func:`shared_fisher` computes both from
ONE forward and ONE backward (what ``HEATConfig.preset("fast")`` costs). With ``max_forward_equivalents`` K is the
largest K ≤ ``topk`` whose factors the cost model prices within that budget at the example's n
(:func:`heat_module.heat.i_fisher.budgeted_topk`); S and I on shared factors have the same budget, hence the same K.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from heat_module.config import IEstimator, SEstimator, positive_int, register_s_estimator
from heat_module.heat.fisher import FisherFactors, fisher_block_norms, fisher_factors
from heat_module.heat.i_fisher import FisherI, budgeted_topk, check_fisher, fisher_cost, without_unset_budget
from heat_module.heat.part import Example, PartOutput, on_residual_stream


@register_s_estimator("fisher")
@dataclass(frozen=True)
class FisherS(SEstimator):
    """S from the Fisher surrogate F = Σ_y P_y u_y u_yᵀ of the Hessian (eq. 3 with H → F).

    Attributes:
        probes: m, the Rademacher probes of the block norms (eq. 3). ≥ 1.
        topk: K, the number of most probable next tokens summed. ≥ 1.
        mass: if set, the sum stops once the kept tokens cover this probability mass, (0, 1].
        chunk: cotangents per vmapped backward call. ≥ 1. With checkpointed layers (long n) each call recomputes
            one forward; yet 16 per call was slower than 8 at n = 1024 and no faster at 2048 (SmolLM2, one CPU thread).
        layers: HEAT-LS: if set, differentiate w.r.t. the residual stream entering layer L-k (k = layers).
        max_forward_equivalents: a budget in forward-pass equivalents: if set, K is the largest K ≤ ``topk`` whose
            factors the cost model prices within it at the example's n
            (:func:`heat_module.heat.i_fisher.budgeted_topk`); ``None``: K = ``topk``. Not with ``layers``.
    """

    probes: int = 1
    topk: int = 16
    mass: float | None = None
    chunk: int = 8
    layers: int | None = None
    max_forward_equivalents: float | None = None

    def __post_init__(self) -> None:
        positive_int("probes", self.probes)
        check_fisher(self.topk, self.mass, self.chunk, self.max_forward_equivalents)
        if self.layers is not None:
            positive_int("layers", self.layers)
            if self.max_forward_equivalents is not None:
                raise ValueError(
                    "Expected layers=None with max_forward_equivalents (the budget prices the factors w.r.t. X, "
                    f"not HEAT-LS's last layers), got layers={self.layers}"
                )

    def to_dict(self) -> dict:
        return without_unset_budget(super().to_dict())

    def topk_at(self, model: torch.nn.Module, n: int) -> int:
        """K at n tokens on ``model``: ``topk``, or the largest K within the budget (:func:`budgeted_topk`)."""
        return budgeted_topk(model, n, self.topk, self.chunk, self.max_forward_equivalents)

    def from_factors(self, ex: Example, factors: FisherFactors) -> PartOutput:
        """S from given factors of ``ex.x`` (their cost counted by whoever computed them)."""
        return PartOutput(fisher_block_norms(factors, ex.probes(self.probes), ex.backend).float())

    def estimate(self, example: Example) -> PartOutput:
        return on_residual_stream(self._estimate, self.layers, example)

    def _estimate(self, ex: Example) -> PartOutput:
        factors = fisher_factors(ex.model, ex.x, self.topk_at(ex.model, ex.n), self.mass, self.chunk)
        return PartOutput(self.from_factors(ex, factors).values,
                          fisher_cost(factors, ex.model, self.max_forward_equivalents))


def shares_factors(s: SEstimator | None, i: IEstimator | None) -> bool:
    """Whether S and I can come from one set of Fisher factors: both Fisher, the same K, mass, chunk and budget (so
    both would choose the same K at any n), and S w.r.t. X (not HEAT-LS)."""
    return (isinstance(s, FisherS) and isinstance(i, FisherI) and s.layers is None
            and (s.topk, s.mass, s.chunk, s.max_forward_equivalents)
            == (i.topk, i.mass, i.chunk, i.max_forward_equivalents))


def shared_fisher(s: FisherS, i: FisherI, ex: Example) -> tuple[PartOutput, PartOutput]:
    """S and I from ONE set of Fisher factors (:func:`shares_factors` must hold): (S with an empty cost, I with the
    cost of the factors)."""
    if not shares_factors(s, i):
        raise ValueError(f"Expected a Fisher S and a Fisher I on the same factors, got {s!r} and {i!r}")
    factors = i.factors(ex)
    cost = fisher_cost(factors, ex.model, i.max_forward_equivalents)
    return s.from_factors(ex, factors), PartOutput(i.from_factors(ex, factors).values, cost)


def budget_summary(s: SEstimator | None, i: IEstimator | None, model: torch.nn.Module, n: int) -> str:
    """What the progress bar says about the Fisher parts whose K a budget chooses, e.g. ``"Fisher K = 9 of 16
    (≤ 24 FE)"`` (once when S and I share the factors); ``""`` when no part has a budget."""
    notes = []
    for part in (s, i):
        if isinstance(part, (FisherS, FisherI)) and part.max_forward_equivalents is not None:
            note = (f"Fisher K = {part.topk_at(model, n)} of {part.topk} "
                    f"(≤ {part.max_forward_equivalents:g} FE)")
            if note not in notes:
                notes.append(note)
    return "; ".join(notes)
