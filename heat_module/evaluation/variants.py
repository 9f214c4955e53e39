"""The rows of the evaluation: the baselines, and HEAT recombined from one set of components per example.

HEAT's per-token components M, S, I are computed **once** per example; every HEAT row (each sink option of M, the
Table 5 ablations, the Table 7 β/γ sweep) is :func:`heat_module.heat.combine.combine` of them under its own
configuration. M under every sink option comes from one rollout (:func:`sink_transitions`) through the sink rules
of :mod:`heat_module.heat.transition`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from heat_module.config import ABLATIONS as HEAT_ABLATIONS
from heat_module.config import SINKS, HEATConfig
from heat_module.evaluation.config import EvalConfig, baseline_title
from heat_module.heat.combine import Components, combine
from heat_module.heat.transition import GATE_OPTIONS, sink_options, transition_from_captures
from heat_module.lm.capture import LayerCapture

ABLATIONS = tuple(a for a in HEAT_ABLATIONS if a != "full")
ABLATION_TITLES = {"full": "HEAT (full)", "transition": "Transition only", "curvature": "Hessian only",
                   "information": "KL only", "no_gate": "No transition gating", "uniform_gate": "Uniform transition"}


@dataclass(frozen=True)
class Variant:
    """One row of the report: a baseline, or HEAT recombined from its components.

    ``key`` is the cache key; ``family`` is ``"baseline"``, ``"heat"``, ``"ablation"``, ``"sweep"`` or ``"extra"``;
    ``model_metrics`` says whether the model-based metrics (Soft-NC/NS, AOPC) are computed for it.

    Example:
        >>> from heat_module.evaluation import Variant
        >>> Variant(key="heat[first]", family="heat", title="HEAT, sink first", sink="first").ablation
        'full'
    """

    key: str
    family: str
    title: str
    model_metrics: bool = True
    sink: str | None = None
    beta: float = 0.5
    ablation: str = "full"


def heat_key(sink: str, beta: float = 0.5) -> str:
    """The cache key of the HEAT row with this sink option and β (γ = 1 − β)."""
    return f"heat[{sink}]" if beta == 0.5 else f"heat[{sink},b={beta:g}]"


def variants(cfg: EvalConfig) -> list[Variant]:
    """Every row of the run, in report order.

    Example:
        >>> import tempfile
        >>> from heat_module.testing import tiny_eval_config
        >>> cfg = tiny_eval_config(tempfile.mkdtemp())  # the tiny model on two prompts, the random baseline
        >>> from heat_module.evaluation import variants
        >>> [v.key for v in variants(cfg)]
        ['random']
        >>> len(variants(cfg.__class__(**{**vars(cfg), "heat": True}))) > 10  # HEAT's sinks, ablations and sweep
        True
    """
    out = [Variant(label, "baseline", baseline_title(label, spec)) for label, spec in cfg.baselines.items()]
    if not cfg.heat:
        return out
    out += [Variant(heat_key(s), "heat", f"HEAT (sink={s})" + (" [proposed]" if s not in SINKS else ""), sink=s)
            for s in GATE_OPTIONS]
    out += [Variant(f"heat-transition[{s}]", "ablation", f"Transition only (sink={s})", sink=s,
                    ablation="transition") for s in SINKS]
    out += [Variant(f"heat-{a}", "ablation", ABLATION_TITLES[a], ablation=a) for a in ABLATIONS if a != "transition"]
    for s in SINKS:
        for b in cfg.betas:
            if float(b) != 0.5:
                out.append(Variant(heat_key(s, float(b)), "sweep", f"β={b:g}, γ={1 - b:g} (sink={s})",
                                   model_metrics=s in cfg.sweep_sinks, sink=s, beta=float(b)))
    if cfg.fisher:  # the recommended sink only (the other options behave as with exact curvature)
        out += [Variant("heat-fisher[auto]", "extra", "HEAT, Fisher curvature (sink=auto) [extra]", sink="auto")]
    return out


def gate_options(keep: torch.Tensor, auto_sinks: Sequence[int]) -> dict[str, torch.Tensor]:
    """M (n,) under every option of :data:`heat_module.heat.transition.GATE_OPTIONS`, from the sink-kept M (n,)
    of one unpadded example and the positions the ``auto`` rule flags
    (:func:`heat_module.heat.transition.sink_options`)."""
    flagged = torch.zeros(keep.shape, dtype=torch.bool, device=keep.device)
    flagged[[int(i) for i in auto_sinks]] = True
    return sink_options(keep, flagged)


def sink_transitions(captures: Sequence[LayerCapture],
                     attention_mask: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """M under every gate option of :func:`gate_options` from ONE rollout, and diagnostics.

    Returns:
        ``({"keep": (n,), "first": (n,), "auto": (n,), "auto-median": (n,)}, {"first_share": share of the
        sink-kept M on position 0, "auto_sinks": positions flagged by the auto rule, "phi_share_first": share of the
        rollout's attention mass on position 0, "norm_ratio_first": position 0's mean value–output norm over the
        context mean})`` for a batch of one.
    """
    _, parts = transition_from_captures(captures, attention_mask, sink="auto", return_parts=True)
    raw = parts["raw"][0].float()
    keep = raw / raw.sum().clamp_min(1e-30)
    phi = parts["phi_mass"][0]
    auto_sinks = parts["sinks"][0].nonzero().flatten().tolist()
    diag = {
        "first_share": float(keep[0]),
        "auto_sinks": auto_sinks,
        "phi_share_first": float(phi[0] / phi.sum().clamp_min(1e-30)),
        "norm_ratio_first": float(parts["norm_mass"][0][0] / parts["norm_mass"][0].mean().clamp_min(1e-30)),
    }
    return gate_options(keep, auto_sinks), diag


def recombine(parts: Components, transitions: dict[str, torch.Tensor], wanted: Sequence[Variant],
              fisher_curvature: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Scores (n,) of every HEAT variant in ``wanted`` from one set of components (eq. 5 and Table 5 / 7).

    Args:
        parts: the example's components (its ``transition`` is not used: each row takes its sink's M).
        transitions: M (n,) per gate option, from :func:`sink_transitions` or :func:`gate_options`.
        wanted: the rows to score.
        fisher_curvature: (n,) S with ``curvature="fisher"`` for the ``"extra"`` rows.
    """
    out = {}
    for v in wanted:
        sink = v.sink or "keep"
        curv = fisher_curvature if v.family == "extra" else parts.curvature
        p = Components(transitions[sink], curv, parts.information, None)
        cfg = HEATConfig(beta=v.beta, gamma=round(1.0 - v.beta, 10), ablation=v.ablation, normalize="none")
        out[v.key] = combine(p, cfg).detach().float().cpu()
    return out
