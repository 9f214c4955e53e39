"""Eq. 5 and the Table 5 ablations: Attr_i = M[i]·(β S_i + γ I_i) (+ α ‖∇_{x_i} g‖₁ for HEAT+FO).

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
    """Eq. 5 and the Table 5 ablations: (n,) Attr from the components."""
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
    return gate * inner + config.alpha * fo
