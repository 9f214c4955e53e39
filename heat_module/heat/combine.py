"""Eq. 5 and the Table 5 ablations: Attr_i = M[i]·(β S_i + γ I_i), and HEAT+FO (appendix eq. 22).

HEAT+FO adds the first-order term ‖∇_{x_i} g‖₁ with weight α, in one of two named forms
(``HEATConfig.first_order``):

- ``"gated"`` (default, the paper's eq. 22): Attr_i = M[i]·(α‖∇_{x_i} g‖₁ + β S_i + γ I_i) — the gate scales the
  gradient term like the others;
- ``"outside"`` (kept for comparison with earlier runs of this library): Attr_i = M[i]·(β S_i + γ I_i) +
  α‖∇_{x_i} g‖₁ — the gradient term ungated.

With α = 0 both are eq. 5. The ablations of Table 5 act on the gate: ``"no_gate"`` drops M (both forms then give
α‖∇g‖₁ + βS + γI), ``"uniform_gate"`` replaces M by 1/n.

:class:`Components` holds the per-token parts of one example; :func:`combine` turns them into scores for a
configuration, so the components can be computed once and recombined (e.g. for every ablation or sink option).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from heat_module.config import HEATConfig
from heat_module.result import Cost


@dataclass
class Components:
    """The per-token components of one example (all (n,) fp32, n = real tokens only).

    Attributes:
        transition: M, the gate (sums to one).
        curvature: S (eq. 3) or ``None`` when not computed.
        information: I (eq. 4) or ``None``.
        first_order: ‖∇_{x_i} g‖₁ (HEAT+FO) or ``None``.
        cost: what computing them spent.
    """

    transition: torch.Tensor
    curvature: torch.Tensor | None
    information: torch.Tensor | None
    first_order: torch.Tensor | None
    cost: Cost = field(default_factory=Cost)


def combine(parts: Components, config: HEATConfig) -> torch.Tensor:
    """(n,) Attr from the components: eq. 5, HEAT+FO (eq. 22, or the ``"outside"`` form) and the Table 5 ablations.

    A component that is ``None`` counts as zero.
    """
    n = parts.transition.shape[0]
    zero = torch.zeros(n, dtype=torch.float32, device=parts.transition.device)
    s = parts.curvature if parts.curvature is not None else zero
    info = parts.information if parts.information is not None else zero
    fo = parts.first_order if parts.first_order is not None else zero
    inner = config.beta * s + config.gamma * info
    ablation = config.ablation
    if ablation == "transition":
        return parts.transition.clone()
    if ablation == "curvature":
        return s.clone()
    if ablation == "information":
        return info.clone()
    if ablation == "no_gate":
        return inner + config.alpha * fo
    gate = torch.full_like(parts.transition, 1.0 / n) if ablation == "uniform_gate" else parts.transition
    if config.first_order == "outside":
        return gate * inner + config.alpha * fo
    return gate * (config.alpha * fo + inner)  # eq. 22
