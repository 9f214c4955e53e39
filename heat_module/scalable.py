"""Dispatch of the scalable HEAT variants, and the cost accounting every result carries (DESIGN.md "S", "Variants").

:class:`heat_module.heat.HEAT` calls

- :func:`curvature` when ``config.curvature != "exact"`` or ``config.layers`` is set: ``fisher``
  (:mod:`heat_module.fisher`), ``lowrank`` (:mod:`heat_module.lowrank`), each optionally w.r.t. the residual stream
  entering layer L-k (HEAT-LS, :mod:`heat_module.layer_sampling`; composes with every mode);
- :func:`attribute_windowed` when ``config.window`` < n (HEAT-WIN, :mod:`heat_module.windowing`).

Cost model — forward-pass equivalents (FE)
------------------------------------------
``result.cost["forward_equivalents"]`` counts compute in units of one forward pass of the model over the full context
of n tokens (at the context lengths HEAT is used for, the linear layers dominate, so a pass over s tokens costs s/n;
the attention part grows as s·(prefix + s), which this neglects). Per unit of work (parameters frozen throughout):

- forward pass over s tokens: ``s/n``;
- input-gradient backward pass: ``FE_BACKWARD = 1`` (one matmul per linear layer, like the forward: weights are frozen
  so no weight gradients), so a gradient (forward + backward) is ``FE_GRADIENT = 2``;
- Hessian-vector product (forward-over-reverse): ``FE_HVP = 4`` (the tangent forward and tangent backward double
  the gradient's cost: Pearlmutter 1994; Griewank & Walther's "HVP ≤ 4–5 × function" bound) — times s/n when only
  a suffix of s positions is recomputed on a frozen prefix cache;
- HEAT-LS: every pass above only runs k of the L decoder layers: × k/L (plus one full forward to read h^{L-k}).

These are nominal weights; ``benchmarks/bench_variants.py`` measures the actual seconds of a forward, a gradient and a
vmapped HVP on the same machine and prints the measured ratios next to them. Counts of passes are kept too:
``forward_passes``, ``hvps``, ``gradients``; ``seconds`` holds wall time per component.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from heat_module.capture import LayerCapture
from heat_module.information import chunks

if TYPE_CHECKING:  # pragma: no cover
    from heat_module.heat import HEAT
    from heat_module.result import AttributionResult

FE_FORWARD = 1.0
FE_BACKWARD = 1.0
FE_GRADIENT = FE_FORWARD + FE_BACKWARD
FE_HVP = 4.0


def exact_fe(n: int, probes: int, chunk_size: int, share: bool) -> float:
    """FE of :func:`heat_module.curvature.curvature_exact`: n·m HVPs; a run from i0 recomputes n - i0 positions."""
    total = 0.0
    for run in chunks(list(range(n)), max(1, chunk_size // probes)):
        start = run[0] if share else 0
        total += len(run) * probes * FE_HVP * (n - start) / n
    return total


def information_fe(n: int, batch_size: int, share: bool) -> float:
    """FE of :func:`heat_module.information.information`: n masked forwards, a run starting at i0 recomputes n - i0."""
    total = 0.0
    for run in chunks(list(range(n)), max(1, batch_size)):
        start = run[0] if share else 0
        total += len(run) * FE_FORWARD * (n - start) / n
    return total


def add_cost(total: dict, part: dict, scale: float = 1.0) -> dict:
    """Accumulate ``part`` into ``total`` (numbers summed; ``forward_equivalents`` × ``scale``; ``seconds`` per key)."""
    for key, value in part.items():
        if key == "seconds":
            sec = total.setdefault("seconds", {})
            for name, t in value.items():
                sec[name] = sec.get(name, 0.0) + float(t)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            total.setdefault(key, value)
        else:
            factor = scale if key == "forward_equivalents" else 1.0
            total[key] = total.get(key, 0) + value * factor
    return total


def curvature(
    heat: HEAT,
    x: torch.Tensor,
    target: int,
    captures: Sequence[LayerCapture],
    logits: torch.Tensor,
    probes: torch.Tensor,
    cost: dict,
) -> torch.Tensor:
    """(n,) S of one unpadded example with the configured scalable estimator (called by :meth:`HEAT.curvature`).

    Args:
        x: (1, n, d) input embeddings X.
        target: the target id y.
        captures: the unperturbed run's captures (their keys/values are the frozen prefix cache of the exact mode).
        logits: (V,) unperturbed next-token logits (unused: Fisher re-derives P in its own forward, for exactness).
        probes: (m, n, d) Rademacher probes (eq. 3).
        cost: updated in place (``hvps``, ``gradients``, ``forward_passes``, ``forward_equivalents``, details).
    """
    from contextlib import nullcontext

    from heat_module.curvature import curvature_exact
    from heat_module.information import can_share_prefix
    from heat_module.layer_sampling import num_layers, residual_input, residual_stream, start_layer

    cfg = heat.config
    model = heat.model
    _, n, _ = x.shape
    m = probes.shape[0]
    cost.setdefault("forward_equivalents", 0.0)
    z, caps, context, frac = x, list(captures), nullcontext(), 1.0
    if cfg.layers is not None:
        start = start_layer(model, cfg.layers)
        z = residual_input(model, x, start)
        caps = caps[start:]
        context = residual_stream(model, start)
        frac = cfg.layers / num_layers(model)
        cost["forward_passes"] = cost.get("forward_passes", 0) + 1
        cost["forward_equivalents"] += FE_FORWARD
        cost["curvature_layers"] = [start, num_layers(model)]
    with context:
        if cfg.curvature == "exact":
            share = bool(caps) and can_share_prefix(caps)
            s = curvature_exact(model, z, target, probes, None, caps if share else None, cfg.hvp_chunk_size,
                                mode=cfg.hvp_mode)
            cost["hvps"] = cost.get("hvps", 0) + n * m
            cost["forward_equivalents"] += frac * exact_fe(n, m, cfg.hvp_chunk_size, share)
            return s
        if cfg.curvature == "fisher":
            from heat_module.fisher import curvature_fisher

            s, factors = curvature_fisher(model, z, probes, cfg.fisher_topk, cfg.fisher_mass, cfg.hvp_chunk_size,
                                          cfg.backend)
            K = int(factors.u.shape[0])
            cost["forward_passes"] = cost.get("forward_passes", 0) + 1
            cost["gradients"] = cost.get("gradients", 0) + K
            cost["forward_equivalents"] += frac * (FE_FORWARD + K * FE_BACKWARD)
            cost["fisher_k"] = K
            cost["fisher_mass"] = factors.mass
            return s.float()
        if cfg.curvature == "lowrank":
            from heat_module.lowrank import curvature_lowrank

            s, lr = curvature_lowrank(model, z, target, probes, cfg.rank, cfg.oversample, cfg.hvp_chunk_size, cfg.seed,
                                      cfg.backend, mode=cfg.hvp_mode)
            cost["hvps"] = cost.get("hvps", 0) + lr.hvps
            cost["forward_equivalents"] += frac * lr.hvps * FE_HVP
            cost["lowrank_k"] = int(lr.eigenvalues.numel())
            return s.float()
    raise ValueError(f"Expected curvature to be one of ['exact', 'fisher', 'lowrank'], got {cfg.curvature!r}")


def attribute_windowed(heat: HEAT, ids: torch.Tensor, target: int | str | None) -> AttributionResult:
    """HEAT-WIN (Algorithm 1) of one context; see :func:`heat_module.windowing.attribute_windowed`."""
    from heat_module.windowing import attribute_windowed as _windowed

    return _windowed(heat, ids, target)
