"""Eq. 5 and the Table 5 ablations: Attr_i = M[i]·(β S_i + γ I_i), and HEAT+FO (appendix eq. 22).

HEAT+FO adds the first-order term ‖∇_{x_i} g‖₁ with weight α inside the gate, as the paper's eq. 22 does:
Attr_i = M[i]·(α‖∇_{x_i} g‖₁ + β S_i + γ I_i); with α = 0 this is eq. 5. Under ``HEATConfig.normalize`` the
gradient term is normalised like S and I. The ablations of Table 5 act on the gate: ``"no_gate"`` drops M
(α‖∇g‖₁ + βS + γI), ``"uniform_gate"`` replaces M by 1/n.

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
    """The per-token components of one example (all (n,), n = real tokens only; fp64 for an fp64 model, else fp32).

    Attributes:
        transition: M, the gate (sums to one).
        curvature: S (eq. 3) or ``None`` when not computed.
        information: I (eq. 4) or ``None``.
        first_order: ‖∇_{x_i} g‖₁ (HEAT+FO) or ``None``.
        cost: what computing them spent.

    Example:
        >>> import torch
        >>> from heat_module import HEATConfig
        >>> from heat_module.heat import Components, combine
        >>> parts = Components(transition=torch.tensor([0.5, 0.5]), curvature=None,
        ...                    information=torch.tensor([1.0, 3.0]), first_order=None)
        >>> combine(parts, HEATConfig.preset("mi"))  # M·I (β = 0, γ = 1)
        tensor([0.5000, 1.5000])
    """

    transition: torch.Tensor
    curvature: torch.Tensor | None
    information: torch.Tensor | None
    first_order: torch.Tensor | None
    cost: Cost = field(default_factory=Cost)


def normalize_component(values: torch.Tensor, mode: str) -> torch.Tensor:
    """One component (S, I or ‖∇_{x_i} g‖₁), (n,), put on a scale-free footing before its weight applies
    (``HEATConfig.normalize``).

    - ``"none"``: unchanged (eq. 5 as written).
    - ``"sum"``: values / Σ_i values (non-negative components; all zero stays zero).
    - ``"rank"``: the normalised rank r_i / n in [1/n, 1] (the smallest value gets 1/n, the largest 1; tied values
      share the mean of their ranks). A constant component carries no order and gives zeros (like ``"sum"`` on
      an all-zero one), so e.g. foil = target still gives all-zero scores.

    Example: S = (4, 1, 0), I = (0.01, 0.03, 0.02) → ``"sum"``: (0.8, 0.2, 0) and (1/6, 1/2, 1/3);
    ``"rank"``: (1, 2/3, 1/3) and (1/3, 1, 2/3).
    """
    if mode == "none":
        return values
    v = values.to(torch.promote_types(values.dtype, torch.float32))
    if mode == "sum":
        z = v.sum()
        return v / z if float(z) != 0.0 else torch.zeros_like(v)
    if mode == "rank":
        n = v.shape[-1]
        if bool((v == v[..., :1]).all()):
            return torch.zeros_like(v)
        less = (v[None, :] < v[:, None]).sum(-1).to(v.dtype)  # how many values are smaller
        equal = (v[None, :] == v[:, None]).sum(-1).to(v.dtype)
        return (less + (equal + 1.0) / 2.0) / n  # mean rank of the tie group, 1-based, over n
    raise ValueError(f"Expected normalize to be one of ['none', 'sum', 'rank'], got {mode!r}")


def combine(parts: Components, config: HEATConfig) -> torch.Tensor:
    """(n,) Attr from the components: eq. 5, HEAT+FO (eq. 22) and the Table 5 ablations,
    with S, I and the first-order term ‖∇_{x_i} g‖₁ each first normalised as ``config.normalize`` says
    (:func:`normalize_component`), so that α, β and γ weigh terms on one scale (a raw gradient norm beside
    normalised S and I would let the gradient's magnitude, not α, decide how much it counts).

    A component that is ``None`` counts as zero (under every ``normalize``).

    Example:
        >>> import torch
        >>> from heat_module import HEATConfig
        >>> from heat_module.heat import Components, combine
        >>> parts = Components(torch.tensor([0.5, 0.5]), torch.tensor([2.0, 0.0]), torch.tensor([1.0, 3.0]), None)
        >>> combine(parts, HEATConfig.preset("exact"))  # eq. 5: M·(0.5·S + 0.5·I)
        tensor([0.7500, 0.7500])
    """
    n = parts.transition.shape[0]
    zero = torch.zeros(n, dtype=parts.transition.dtype, device=parts.transition.device)

    def term(values: torch.Tensor | None) -> torch.Tensor:  # normalised; absent = 0 (also under "rank")
        return zero if values is None else normalize_component(values, config.normalize)

    s, info, fo = term(parts.curvature), term(parts.information), term(parts.first_order)
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
    return gate * (config.alpha * fo + inner)  # eq. 22
