"""The rows of the paper-table configuration: the baselines, and HEAT's family recombined from one attribution.

HEAT runs **once** per example (``HEAT(config).attribute``, exact S); every HEAT row (each sink option of M, the
Table 5 ablations, the Table 7 β/γ sweep) is :func:`heat_module.heat.combine.combine` of that attribution's
components under its own configuration (:class:`heat_module.evaluation.pipeline.Row` with ``recombine`` and
``gate``). :func:`sink_transitions` gives the facts of the attention sink the report describes (position 0's
share of M and of the rollout, its value–output norm, what ``auto`` flags); they are example facts, not scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from heat_module.config import ABLATIONS as HEAT_ABLATIONS
from heat_module.config import SINKS, HEATConfig
from heat_module.evaluation.config import EvalConfig, baseline_title
from heat_module.evaluation.pipeline import HEAT_METHOD, Row
from heat_module.heat.transition import GATE_OPTIONS, sink_options, transition_from_captures
from heat_module.lm.capture import LayerCapture

#: the paper-table configuration's name in the cache
PAPER_STUDY = "paper"
ABLATIONS = tuple(a for a in HEAT_ABLATIONS if a != "full")
ABLATION_TITLES = {"full": "HEAT (full)", "transition": "Transition only", "curvature": "Hessian only",
                   "information": "KL only", "no_gate": "No transition gating", "uniform_gate": "Uniform transition"}


def heat_key(sink: str, beta: float = 0.5) -> str:
    """The row label of the HEAT row with this sink option and β (γ = 1 − β)."""
    return f"heat[{sink}]" if beta == 0.5 else f"heat[{sink},b={beta:g}]"


def heat_config(cfg: EvalConfig) -> HEATConfig:
    """The configuration of the shared HEAT attribution: eq. 5 with exact S (``HEATConfig.preset("exact")``, what
    RESULTS-eval.md measured) with the run's probes and seed."""
    return HEATConfig.preset("exact", curvature={"name": "exact", "probes": cfg.probes}, seed=cfg.seed)


def heat_row(label: str, title: str, group: str, family: HEATConfig, sink: str | None = None, beta: float = 0.5,
             ablation: str = "full", model_metrics: bool = True) -> Row:
    """A HEAT row: M under ``sink`` (``None``: the sink-kept M) · (β S + (1 − β) I) of the family's attribution,
    or the ablation's formula (Table 5), unnormalised."""
    recombine = HEATConfig(beta=beta, gamma=round(1.0 - beta, 10), ablation=ablation, normalize="none")
    return Row(label, title, HEAT_METHOD, {"config": family}, recombine=recombine, gate=sink or "keep",
               model_metrics=model_metrics, group=group)


def paper_rows(cfg: EvalConfig) -> list[Row]:
    """Every row of the paper-table configuration, in report order.

    Example:
        >>> import tempfile
        >>> from heat_module.testing import tiny_eval_config
        >>> cfg = tiny_eval_config(tempfile.mkdtemp())  # the tiny model on two prompts, the random baseline
        >>> from heat_module.evaluation import paper_rows
        >>> [r.label for r in paper_rows(cfg)]
        ['random']
        >>> len(paper_rows(cfg.__class__(**{**vars(cfg), "heat": True}))) > 10  # HEAT's sinks, ablations and sweep
        True
    """
    out = [Row(label, baseline_title(label, spec), spec[0], dict(spec[1])) for label, spec in cfg.baselines.items()]
    if not cfg.heat:
        return out
    family = heat_config(cfg)
    out += [heat_row(heat_key(s), f"HEAT (sink={s})" + (" [proposed]" if s not in SINKS else ""), "heat", family, s)
            for s in GATE_OPTIONS]
    out += [heat_row(f"heat-transition[{s}]", f"Transition only (sink={s})", "ablation", family, s,
                     ablation="transition") for s in SINKS]
    out += [heat_row(f"heat-{a}", ABLATION_TITLES[a], "ablation", family, ablation=a)
            for a in ABLATIONS if a != "transition"]
    for s in SINKS:
        for b in cfg.betas:
            if float(b) != 0.5:
                out.append(heat_row(heat_key(s, float(b)), f"β={b:g}, γ={1 - b:g} (sink={s})", "sweep", family, s,
                                    beta=float(b), model_metrics=s in cfg.sweep_sinks))
    if cfg.fisher:  # the recommended sink only (the other options behave as with exact curvature)
        fisher = family.replace(curvature={"name": "fisher", "probes": cfg.probes})
        out.append(heat_row("heat-fisher[auto]", "HEAT, Fisher curvature (sink=auto) [extra]", "extra", fisher,
                            "auto"))
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
