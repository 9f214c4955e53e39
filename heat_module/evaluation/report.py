"""The markdown report of an evaluation: tables shaped like the paper's (Tables 1, 2, 5, 7; §5.1 DSA), every
number with its bootstrap 95 % interval, and plain statements of whether each claim held.

The report says nothing about a machine of its own: facts of the run (model, dtype, device, threads, a machine
description, wall time, command) are data its caller passes in ``meta``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from heat_module.config import SINKS
from heat_module.evaluation.config import EvalConfig, baseline_title
from heat_module.evaluation.datasets import dataset_names
from heat_module.evaluation.datasets import title as dataset_title
from heat_module.evaluation.pipeline import Row
from heat_module.evaluation.stats import Summary, best_sink, mean_over, tied_options
from heat_module.evaluation.variants import ABLATION_TITLES, ABLATIONS, heat_key
from heat_module.heat.transition import GATE_OPTIONS
from heat_module.metrics.registry import metric_entry

#: the metrics the paper-shaped tables show (Table 2: Soft-NC, Soft-NS; AOPC); every other metric of the run gets a
#: table of its own
PAPER_COLUMNS = ("soft_nc", "soft_ns", "aopc")


def _fmt(cell: tuple[float, float, float] | None, digits: int = 3, ci: bool = True) -> str:
    if cell is None or not math.isfinite(cell[0]):
        return "–"
    est, lo, hi = cell
    if not ci or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{est:.{digits}f}"
    return f"{est:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _num(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "–"


def write_report(summary: Summary, cfg: EvalConfig, rows: Sequence[Row], path: Path, meta: dict) -> str:
    """Write the markdown report to ``path`` and return its text (tables shaped like the paper's; every number with
    its bootstrap 95 % interval).

    Args:
        summary: from :func:`heat_module.evaluation.stats.summarize`.
        cfg: the run's settings.
        rows: the report's rows (:func:`heat_module.evaluation.variants.paper_rows`).
        path: where the report goes (figure links are made relative to it).
        meta: facts of the run, all optional: ``model_name``, ``dtype``, ``device``, ``threads``, ``machine`` (a
            description of the machine, given by the caller), ``usable`` and ``greedy_match`` per dataset,
            ``data_paths`` per dataset, ``wall_seconds``, ``figures`` (from :func:`heat_module.evaluation.figures.
            draw_figures`), ``figure_sink``, ``command``.

    Example:
        >>> import tempfile
        >>> from heat_module.testing import tiny_eval_config
        >>> cfg = tiny_eval_config(tempfile.mkdtemp())  # the tiny model on two prompts, the random baseline
        >>> from pathlib import Path
        >>> from heat_module.evaluation import Cache, paper_rows, paper_study, run_study, summarize, write_report
        >>> cache = Cache(cfg.cache_path, cfg.fingerprint())
        >>> _ = run_study(paper_study(cfg), *cfg.model, cache)
        >>> summary = summarize(cache.records.values(), cfg, paper_rows(cfg))
        >>> path = Path(cfg.out_dir) / "report.md"
        >>> text = write_report(summary, cfg, paper_rows(cfg), path, meta={"model_name": "tiny"})
        >>> text.splitlines()[0]
        '# HEAT evaluation on tiny'
    """
    c = summary.cells
    datasets = list(cfg.datasets)
    bench = [d for d in datasets if d in dataset_names("benchmark")]
    sink, sink_table = best_sink(summary, cfg)
    paths = {d: meta.get("data_paths", {}).get(d) or cfg.paths.get(d) or "?" for d in dataset_names()}
    main_rows = [v for v in rows if v.group in ("baseline", "heat", "extra")]
    n_of = {d: summary.counts.get((d, "__metric_random__"), 0) for d in datasets}
    out = [f"# HEAT evaluation on {meta.get('model_name', cfg.model)}", ""]
    out += [
        "Reproduction of the paper's evaluation (Tables 1, 2, 5, 7; §5.1 DSA) with `heat eval` "
        "(`heat_module/evaluation`). Numbers are means over examples with "
        "percentile bootstrap 95 % intervals in brackets "
        f"({cfg.bootstrap} resamples, seed {cfg.seed}).", "",
        "## Setup", "",
        f"- **Model:** {meta.get('model_name', cfg.model)} ({meta.get('dtype', '?')}, {meta.get('device', '?')}), "
        f"{meta.get('threads', '?')} torch thread(s)" + (f"; machine: {meta['machine']}" if meta.get("machine") else "")
        + ".",
        "- **Data** (examples used / usable after the length cap): " + "; ".join(
            f"{dataset_title(d)} {n_of[d]} / {meta.get('usable', {}).get(d, '?')}" for d in datasets) + ".",
        f"  Context cap {cfg.max_tokens} tokens; examples taken in a seeded random order (seed {cfg.seed}).",
        f"  LongRA: `{paths['longra']}` merged and de-duplicated, target = the given analogy word "
        "(single-token targets for this tokenizer only); the model's greedy token equals it on "
        f"{meta.get('greedy_match', {}).get('longra', '?')} of the LongRA examples. "
        f"TellMeWhy `{paths['tellmewhy']}` and WikiBio `{paths['wikibio']}`: target = greedy next token. "
        f"Curated `{paths['curated']}`: target = first answer token, "
        "gold = important-word tokens of the SciQ support, distractor = narrative tokens "
        "(mapping of `heat_module.data.curated`).",
        f"- **Metrics:** Soft-NC / Soft-NS (ReAGent definition, {cfg.num_masks} Bernoulli masks per example; "
        "`ln ratio` = ln(mean method / mean of the metric's own random scores on the same examples and masks, "
        "ReAGent's summary), AOPC (k ∈ {1, 5, 10, 20, 50} %, zero embedding), DSA and F1 (curated), "
        "distractor mass on LongRA (share of normalised attribution on the distractor sentence; lower is better). "
        "Scores are clipped at 0 and normalised by the metrics, so signed methods (Input×Gradient, IG) count only "
        "their positive part.",
        f"- **HEAT:** exact block-HVP curvature, {cfg.probes} Rademacher probe(s), I with the zero mask, β = γ = 0.5; "
        "M, S, I computed once per example and recombined for every sink option, ablation and β/γ (so these rows "
        "differ only in the recombination, not in noise).",
        "- **Baselines:** " + ", ".join(f"{baseline_title(k, (n, o))} (`{n}` {o or ''})".replace(" {}", "")
                                          for k, (n, o) in cfg.baselines.items()) + ".",
        f"- **Compute:** {summary.facts['compute_seconds'] / 60:.1f} min of example time in total "
        f"(over all resumed runs; this run's wall time {meta.get('wall_seconds', 0) / 60:.1f} min).", "",
    ]
    short = [f"{v.title} on {dataset_title(d)} ({summary.counts.get((d, v.label), 0)} of {n_of[d]})"
             for d in datasets for v in rows if summary.counts.get((d, v.label), 0) < n_of[d]]
    if short:
        out += ["**Incomplete rows** (computed on fewer examples than the others): " + "; ".join(short) + ".", ""]
    if cfg.notes:
        out += [cfg.notes.strip(), ""]
    # ---- Table 2 shape
    out += ["## Faithfulness on the benchmarks (Table 2 shape)", "",
            "Soft-NC and Soft-NS raw means, higher is better. The paper's numbers (GPT-J 6B etc.) are on another "
            "scale and other models; compare rankings, not values.", ""]
    header = ["Method"] + [f"{dataset_title(d)} {m}" for d in bench for m in ("Soft-NC", "Soft-NS")]
    table_rows = []
    for v in main_rows:
        table_rows.append([v.title] + [_fmt(c.get((d, v.label, m))) for d in bench for m in ("soft_nc", "soft_ns")])
    table_rows.append(["(metric's own random scores)"] + [
        _fmt(c.get((d, "__metric_random__", m))) for d in bench for m in ("soft_nc", "soft_ns")])
    out += [_table(header, table_rows), ""]
    out += ["ln(method / random) — ReAGent's summary (0 = random, higher is better):", ""]
    header = ["Method"] + [f"{dataset_title(d)} {m}" for d in bench for m in ("ln NC", "ln NS")]
    out += [_table(header, [[v.title] + [_fmt(c.get((d, v.label, f"soft_{m}_log_ratio"))) for d in bench
                                         for m in ("nc", "ns")] for v in main_rows]), ""]
    out += ["AOPC (ERASER comprehensiveness, P(y) drop; higher is better):", ""]
    header = ["Method"] + [dataset_title(d) for d in datasets]
    out += [_table(header, [[v.title] + [_fmt(c.get((d, v.label, "aopc"))) for d in datasets] for v in main_rows]), ""]
    for metric in (m for m in cfg.metrics if m not in PAPER_COLUMNS):  # the run's other metrics, from the registry
        entry = metric_entry(metric)
        for key, title in entry.keys.items():
            better = "higher" if entry.higher_is_better else "lower"
            out += [f"{title} ({better} is better):", "",
                    _table(header, [[v.title] + [_fmt(c.get((d, v.label, key))) for d in datasets] for v in main_rows]),
                    ""]
    # ---- Table 1 shape
    if "curated" in datasets:
        out += ["## Alignment on the curated set (Table 1 shape)", "",
                "DSA = Σ gold share − Σ distractor share ∈ [−1, 1] (the paper's Table 1 is on another scale), "
                "F1 of the top-|gold| tokens.", ""]
        out += [_table(["Method", "DSA", "F1", "Soft-NC", "Soft-NS"],
                       [[v.title] + [_fmt(c.get(("curated", v.label, m))) for m in ("dsa", "f1", "soft_nc", "soft_ns")]
                        for v in main_rows]), ""]
    if "longra" in datasets:
        out += ["LongRA distractor mass (lower is better):", "",
                _table(["Method", "Distractor mass"], [[v.title, _fmt(c.get(("longra", v.label, "distractor_mass")))]
                                                        for v in main_rows]), ""]
    scale = scale_note(summary)
    if scale:
        out += [scale, ""]
    ig_note = completeness_note(summary, rows)
    if ig_note:
        out += [ig_note, ""]
    # ---- sink
    out += ["## The attention sink and the gate M", ""]
    diag = sink_diagnostics(summary)
    out += [diag["text"], ""]
    out += [_table(["Sink option", "Soft-NC (bench. mean)", "Soft-NS", "AOPC", "DSA (curated)"],
                   [[s] + [_num(sink_table[s][m]) for m in ("soft_nc", "soft_ns", "aopc", "dsa")]
                    for s in GATE_OPTIONS]),
            ""]
    ties = tied_options(sink, sink_table)
    tie_text = (" — tied with " + ", ".join(f"`{t}`" for t in ties if t != sink) + " (identical M on every example)"
                if len(ties) > 1 else "")
    out += [f"**Best sink option on this run: `{sink}`**{tie_text} (best mean rank over the four columns).", ""]
    # ---- Table 5 shape
    out += ["## Ablations (Table 5 shape)", "",
            "Soft-NC / Soft-NS / AOPC averaged over the benchmark datasets, DSA on the curated set. Rows that use M "
            "are shown for every sink option.", ""]
    abl_rows = [v for v in rows if v.group in ("heat", "ablation")]
    out += [_table(["Configuration", "Soft-NC", "Soft-NS", "AOPC", "DSA", "F1"],
                   [[v.title] + [_num(mean_over(summary, bench, v.label, m)) for m in ("soft_nc", "soft_ns", "aopc")]
                    + [_fmt(c.get(("curated", v.label, m))) for m in ("dsa", "f1")] for v in abl_rows]), ""]
    # ---- Table 7 shape
    out += ["## β/γ sweep (Table 7 shape)", "",
            "β weights the Hessian term, γ = 1 − β the KL term. The paper's Table 7 reports faithfulness loss, "
            "sensitivity and active/passive robustness, which this run does not compute; its F1 column is here, "
            "with Soft-NC/NS/AOPC (benchmark means) and DSA. Model-based metrics only for sinks "
            f"{cfg.sweep_sinks}.", ""]
    sweep_rows = []
    for s in SINKS:
        for b in cfg.betas:
            key = heat_key(s, float(b))
            sweep_rows.append([f"{b:g}", f"{1 - b:g}", s] + [
                _num(mean_over(summary, bench, key, m)) for m in ("soft_nc", "soft_ns", "aopc")] +
                [_fmt(c.get(("curated", key, m))) for m in ("dsa", "f1")])
    out += [_table(["β", "γ", "sink", "Soft-NC", "Soft-NS", "AOPC", "DSA", "F1"], sweep_rows), ""]
    # ---- claims
    out += ["## Did the paper's claims hold on this model?", "", *claims(summary, cfg, rows, sink), ""]
    if meta.get("figures"):
        out += ["## Figures (paper Figures 4–6 style)", "",
                f"HEAT (sink=`{meta.get('figure_sink', sink)}`) on three prompts written for this evaluation; each "
                "token shaded by its score, the target at the end.", ""]
        for k, fig in enumerate(meta["figures"], 1):
            rel = os.path.relpath(fig["path"], path.parent)
            out += [f"![HEAT figure {k}]({rel})", "", f"`{rel}` — target {fig['target']!r}; top tokens: {fig['top']}",
                    ""]
    out += ["## Command that wrote this report", "", "```", meta.get("command", "heat eval ..."), "```", ""]
    text = "\n".join(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text


def scale_note(summary: Summary) -> str:
    """How the raw scales of S and I compare (β and γ weigh raw values, so the larger term decides the ranking)."""
    comps = summary.facts.get("components") or []
    ratios, same_top = [], 0
    for rec in comps:
        s, i = np.asarray(rec["curvature"], float), np.asarray(rec["information"], float)
        if i.sum() > 0:
            ratios.append(s.sum() / i.sum())
        same_top += int(np.argmax(s) == np.argmax(0.5 * s + 0.5 * i))
    if not ratios:
        return ""
    return (f"Component scales — over {len(comps)} examples, ΣS / ΣI has median {np.median(ratios):.3g} "
            f"(range {np.min(ratios):.3g}–{np.max(ratios):.3g}); the top token of βS + γI (β = γ = 0.5) is the top "
            f"token of S alone on {same_top} of {len(comps)} examples. S and I enter eq. 5 unnormalised, so the "
            "larger one decides the ranking whatever β and γ are, within a wide range.")


def completeness_note(summary: Summary, rows: Sequence[Row]) -> str:
    """IG's completeness gap |Σ_i IG_i − (g(X) − g(X'))| relative to |g(X) − g(X')|, per baseline row with it."""
    ex = summary.facts["extras"]
    parts = []
    for v in rows:
        deltas, gaps = [], []
        for (dataset, method, k), vals in ex.items():
            if method != v.label:
                continue
            if k == "convergence_delta":
                deltas += vals
            elif k in ("g_input", "g_baseline"):
                gaps.append((dataset, k, vals))
        if not deltas:
            continue
        g_in = [x for d, k, vals in gaps if k == "g_input" for x in vals]
        g_base = [x for d, k, vals in gaps if k == "g_baseline" for x in vals]
        rel = [abs(d) / max(abs(a - b), 1e-6) for d, a, b in zip(deltas, g_in, g_base)]
        parts.append(f"{v.title}: median |completeness gap| / |g(X) − g(X')| = {np.median(rel):.2f} over "
                     f"{len(rel)} examples (0 = exact integration)")
    return ("Completeness check — " + "; ".join(parts) + ".") if parts else ""


def sink_diagnostics(summary: Summary) -> dict:
    """The facts of the attention sink over the examples (position 0's share of M and of Φ, its ν, what `auto`
    flags; the reference records' ``sink`` facts) as ``{"text": ...}``."""
    facts = [ref["sink"] for by_example in summary.facts["refs"].values() for ref in by_example.values()
             if ref.get("sink")]
    shares = [f["first_share"] for f in facts]
    phi = [f["phi_share_first"] for f in facts]
    nu = [f["norm_ratio_first"] for f in facts]
    auto_first = sum(1 for f in facts if 0 in f["auto_sinks"])
    auto_count = [len(f["auto_sinks"]) for f in facts]
    if not shares:
        return {"text": "No HEAT results yet."}
    text = (
        f"Over {len(shares)} examples the first token takes on average {100 * np.mean(shares):.1f} % of M "
        f"(median {100 * np.median(shares):.1f} %, range {100 * np.min(shares):.1f}–{100 * np.max(shares):.1f} %) "
        f"and {100 * np.mean(phi):.1f} % of the rollout's attention mass Σ_{{l,h}} Φ; its mean value–output norm is "
        f"{np.mean(nu):.2f}× the context mean (ν₀). The `auto` rule (α ≥ 0.2 and ν < 0.5) flags position 0 on "
        f"{auto_first} of {len(auto_count)} examples and {np.mean(auto_count):.2f} positions on average. "
        "With `keep`, M·(βS+γI) is dominated by position 0 whenever S₀ or I₀ is non-negligible."
    )
    return {"text": text}


def claims(summary: Summary, cfg: EvalConfig, rows: Sequence[Row], sink: str) -> list[str]:
    """Plain statements of whether each claim held (HEAT = the best sink option's row)."""
    c = summary.cells
    bench = [d for d in cfg.datasets if d in dataset_names("benchmark")]
    heat = heat_key(sink)
    base = [v.label for v in rows if v.group == "baseline" and v.label != "random"]
    lines = []
    contenders = [(heat, f"HEAT (sink={sink})")] + [(v.label, v.title) for v in rows if v.group == "extra"]
    checks = [(key, name, metric, title, d) for key, name in contenders
              for metric, title, where in (("soft_nc", "Soft-NC", bench), ("soft_ns", "Soft-NS", bench),
                                           ("dsa", "DSA", ["curated"] if "curated" in cfg.datasets else []))
              for d in where]
    for key, name, metric, title, d in checks:
        h = c.get((d, key, metric), (math.nan,))[0]
        vals = [(c.get((d, k, metric), (math.nan,))[0], k) for k in base]
        vals = [(x, k) for x, k in vals if math.isfinite(x)]
        if not vals or not math.isfinite(h):
            continue
        best, who = max(vals)
        who = baseline_title(who, cfg.baselines.get(who))
        if best > 0:
            verdict = "held" if h >= 2 * best else "did not hold"
            lines.append(f"- {title} on {dataset_title(d)}: {name} {h:.3f} vs best baseline {best:.3f} ({who}); "
                         f"ratio {h / best:.2f} → **≥ 2× {verdict}**"
                         f"{'' if h >= best else ' (not even the best)'}.")
        else:
            lines.append(f"- {title} on {dataset_title(d)}: {name} {h:.3f} vs best baseline {best:.3f} ({who}); "
                         f"a ratio is undefined (best baseline ≤ 0); best: **{'yes' if h > best else 'no'}**.")
    for metric, title in (("soft_nc", "Soft-NC"), ("soft_ns", "Soft-NS"), ("dsa", "DSA")):
        where = bench if metric != "dsa" else ["curated"]
        full = mean_over(summary, where, heat, metric)
        abl = {a: mean_over(summary, where, f"heat-transition[{sink}]" if a == "transition" else f"heat-{a}", metric)
               for a in ABLATIONS}
        abl = {a: v for a, v in abl.items() if math.isfinite(v)}
        if not abl or not math.isfinite(full):
            continue
        beaten = [ABLATION_TITLES[a] for a, v in abl.items() if v > full]
        order = " > ".join(f"{ABLATION_TITLES[a]} {v:.3f}" for a, v in sorted(abl.items(), key=lambda t: -t[1]))
        lines.append(f"- Ablations, {title}: full HEAT {full:.3f}; {order}. Full HEAT best: "
                     f"**{'yes' if not beaten else 'no'}**" + (f" (beaten by {', '.join(beaten)})" if beaten else "")
                     + ".")
    free_sink = sink if sink in SINKS else "auto"
    model_sink = free_sink if free_sink in cfg.sweep_sinks else (cfg.sweep_sinks or [free_sink])[0]
    for metric, title, where, sweep_sink in (("f1", "F1 on the curated set", ["curated"], free_sink),
                                             ("soft_nc", "Soft-NC, benchmarks", bench, model_sink)):
        sweep = {float(b): mean_over(summary, where, heat_key(sweep_sink, float(b)), metric) for b in cfg.betas}
        sweep = {b: v for b, v in sweep.items() if math.isfinite(v)}
        if not sweep:
            continue
        top = max(sweep.values())
        best_betas = [b for b, v in sweep.items() if abs(v - top) <= 1e-6]
        if best_betas == [0.5]:
            verdict = "held"
        elif 0.5 in best_betas:
            verdict = "held only as a tie"
        else:
            verdict = "did not hold"
        lines.append(f"- β/γ sweep ({title}, sink={sweep_sink}): best β ∈ {{{', '.join(f'{b:g}' for b in best_betas)}}}"
                     f" ({top:.3f}); paper: β = γ = 0.5 best → **{verdict}**.")
    return lines or ["- Not enough results yet."]
