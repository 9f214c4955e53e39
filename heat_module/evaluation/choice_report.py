"""The report of :mod:`heat_module.evaluation.choice`: per-dataset tables with bootstrap 95 % intervals, paired
differences of the default HEAT against the methods that matter, seconds per example, and the decision rule's outcome
(:func:`apply_rule`)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heat_module.evaluation.choice import (
    ALIGNMENT,
    BENCHMARKS,
    CANDIDATES,
    COMPARED,
    MAX_COST_RATIO,
    MIN_EXAMPLES,
    PRIOR_ROWS,
    ROWS,
    RULE,
    RULE_METRICS,
    TITLES,
    ChoiceConfig,
    JsonCache,
)
from heat_module.evaluation.stats import bootstrap_ci
from heat_module.metrics.functional.common import mid_ranks
from heat_module.metrics.registry import metric_entry, metric_title

#: the benchmark columns: the rule's metrics, and on ranks those that take ``scores_transform`` (``model_metrics``)
BENCH_METRICS = RULE_METRICS + tuple(f"{m}_rank" for m in RULE_METRICS
                                     if "scores_transform" in metric_entry(m).option_names())
ALIGN_METRICS = ("dsa", "f1")


def metric_table(records: Iterable[dict]) -> dict[tuple[str, str], dict[str, dict[str, float]]]:
    """(dataset, row) -> example id -> metric -> value (plus ``seconds``)."""
    out: dict[tuple[str, str], dict[str, dict[str, float]]] = defaultdict(dict)
    for r in records:
        if "/metrics/" not in r["key"]:
            continue
        vals = {k: v for k, v in r["metrics"].items() if isinstance(v, (int, float))}
        vals["seconds"] = r["seconds"]
        out[(r["dataset"], r["row"])][r["example"]] = vals
    return out


def cell(values: list[float], resamples: int, seed: int = 0) -> tuple[float, float, float]:
    return bootstrap_ci(values, resamples, seed) if values else (math.nan, math.nan, math.nan)


def fmt(ci: tuple[float, float, float]) -> str:
    est, lo, hi = ci
    if not math.isfinite(est):
        return "–"
    return f"{est:.3f} [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) else f"{est:.3f}"


def seconds_per_row(table: dict, datasets: Iterable[str]) -> dict[str, float]:
    """Mean seconds per example of each row over the examples of ``datasets``."""
    out = {}
    for row in ROWS:
        vals = [v["seconds"] for d in datasets for v in table.get((d, row), {}).values()
                if math.isfinite(v.get("seconds", math.nan))]
        out[row] = float(np.mean(vals)) if vals else math.nan
    return out


def apply_rule(table: dict, resamples: int = 0) -> dict[str, Any]:
    """The outcome of :data:`heat_module.evaluation.choice.RULE` on the metric table.

    Returns:
        ``{"applicable": bool, "reason": str, "eligible": [...], "mean_rank": {row: float}, "winner": row | None,
        "cost_ratio": {row: float}, "counts": {row: {dataset: n}}}``.
    """
    sec = seconds_per_row(table, BENCHMARKS)
    base = sec["attnlrp"]
    ratio = {r: sec[r] / base if base and math.isfinite(base) else math.nan for r in CANDIDATES}
    eligible = [r for r in CANDIDATES if math.isfinite(ratio[r]) and ratio[r] <= MAX_COST_RATIO]
    counts = {r: {d: sum(1 for v in table.get((d, r), {}).values() if all(m in v for m in RULE_METRICS))
                  for d in BENCHMARKS} for r in CANDIDATES}
    short = {r: c for r, c in counts.items() if r in eligible and min(c.values()) < MIN_EXAMPLES}
    ranks: dict[str, list[float]] = {r: [] for r in eligible}
    for d in BENCHMARKS:
        for m in RULE_METRICS:
            means = {r: float(np.mean([v[m] for v in table.get((d, r), {}).values() if m in v]))
                     for r in eligible if table.get((d, r))}
            mid = mid_ranks(-torch.tensor(list(means.values()), dtype=torch.float64))  # 1 = best; ties share
            for r, rank in zip(means, mid.tolist()):
                ranks[r].append(rank)
    mean_rank = {r: float(np.mean(v)) if v else math.nan for r, v in ranks.items()}
    finite = [r for r in eligible if math.isfinite(mean_rank[r])]
    winner = min(finite, key=lambda r: (mean_rank[r], sec[r])) if finite else None
    applicable = not short and winner is not None and all(len(ranks[r]) == 9 for r in eligible)
    if applicable:
        reason = f"every eligible candidate has ≥ {MIN_EXAMPLES} examples on each benchmark"
    else:
        missing = ", ".join(f"`{r}` ({', '.join(f'{TITLES[d]} {n}' for d, n in c.items())})" for r, c in short.items())
        reason = f"not enough examples: {missing}" if missing else "no eligible candidate with all nine ranks"
    return {"applicable": applicable, "reason": reason, "eligible": eligible, "mean_rank": mean_rank,
            "winner": winner, "cost_ratio": ratio, "counts": counts, "seconds": sec}


def paired(table: dict, dataset: str, a: str, b: str, metric: str, resamples: int) -> tuple[tuple, int]:
    """Mean of (a − b) over the examples both rows have, with its bootstrap interval, and the count."""
    xa, xb = table.get((dataset, a), {}), table.get((dataset, b), {})
    common = sorted(set(xa) & set(xb))
    diffs = [xa[e][metric] - xb[e][metric] for e in common if metric in xa[e] and metric in xb[e]]
    return cell(diffs, resamples), len(diffs)


def benchmark_means(table: dict) -> dict[str, dict[str, float]]:
    """row -> metric -> the mean over the benchmarks of the row's per-benchmark mean (each benchmark weighs the same)
    for Soft-NC, Soft-NS and ABPC; NaN unless the row has the metric on every benchmark."""
    out: dict[str, dict[str, float]] = {}
    for r in ROWS:
        out[r] = {}
        for m in RULE_METRICS:
            per = [np.mean([v[m] for v in table[(d, r)].values() if m in v]) for d in BENCHMARKS if table.get((d, r))]
            out[r][m] = float(np.mean(per)) if len(per) == len(BENCHMARKS) else math.nan
    return out


def summary_lines(table: dict, seconds: dict[str, float]) -> list[str]:
    """The compact table: each row's per-benchmark means of Soft-NC, Soft-NS, ABPC averaged over the benchmarks
    (each benchmark weighs the same), its DSA/F1 on the alignment sets, and its cost relative to AttnLRP."""
    out = ["## Summary (means of the per-benchmark means; cost on the benchmarks)", "",
           "| method | Soft-NC | Soft-NS | ABPC | DSA curated | F1 curated | DSA LAMBADA | F1 LAMBADA | × AttnLRP |",
           "|---|---|---|---|---|---|---|---|---|"]
    means = benchmark_means(table)
    for r in ROWS:
        cells = [f"{means[r][m]:.3f}" if math.isfinite(means[r][m]) else "–" for m in RULE_METRICS]
        for d in ALIGNMENT:
            for m in ALIGN_METRICS:
                vals = [v[m] for v in table.get((d, r), {}).values() if m in v]
                cells.append(f"{np.mean(vals):.3f}" if vals else "–")
        ratio = seconds[r] / seconds["attnlrp"] if seconds.get("attnlrp") else math.nan
        out.append(f"| {ROWS[r][0]} | " + " | ".join(cells) + f" | {ratio:.1f} |")
    return out + [""]


def draw_cost_figure(table: dict, seconds: dict[str, float], path: Path, winner: str | None = None) -> Path | None:
    """A PNG of what each method buys for its time: one panel per rule metric (Soft-NC, Soft-NS, ABPC; benchmark
    means, :func:`benchmark_means`) against seconds per example relative to AttnLRP (log scale), the rule's cost
    bound as a dashed line, ``winner`` ringed. Rows without a finite cost ratio or metric (random: no time) are left
    out. Returns ``path``, or None when nothing can be drawn."""
    import matplotlib  # lazy: only for the report

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = benchmark_means(table)
    base = seconds.get("attnlrp", math.nan)
    ratio = {r: seconds[r] / base for r in ROWS if math.isfinite(seconds.get(r, math.nan)) and base and seconds[r] > 0}
    rows = [r for r in ratio if all(math.isfinite(means[r][m]) for m in RULE_METRICS)]
    if not rows:
        return None
    fig, axes = plt.subplots(1, len(RULE_METRICS), figsize=(5.2 * len(RULE_METRICS), 4.4))
    colors = {r: ("tab:red" if r.startswith("heat_") or r == "m_i" else "tab:blue") for r in rows}
    for ax, m in zip(axes, RULE_METRICS):
        for r in rows:
            ax.scatter(ratio[r], means[r][m], color=colors[r], s=36, zorder=3)
            if r == winner:
                ax.scatter(ratio[r], means[r][m], facecolors="none", edgecolors="black", s=160, zorder=4)
            ax.annotate(r, (ratio[r], means[r][m]), textcoords="offset points", xytext=(5, 3), fontsize=7)
        ax.axvline(MAX_COST_RATIO, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlim(min(ratio[r] for r in rows) / 1.6, max(ratio[r] for r in rows) * 3.5)  # room for the labels
        ax.set_xlabel("seconds per example / AttnLRP's")
        ax.set_title(f"{metric_title(m)} (mean of {len(BENCHMARKS)} benchmarks)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("higher is better")
    fig.suptitle("HEAT configurations (red) and other methods (blue): faithfulness against cost (means; intervals "
                 f"in the tables); dashed: the rule's {MAX_COST_RATIO:g}× bound", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def paired_lines(table: dict, ref: str, compared: Iterable[str], resamples: int, title: str) -> list[str]:
    """Markdown of the paired differences ``ref`` − each of ``compared`` per dataset (benchmarks: the soft and rank
    metrics; alignment sets: DSA and F1), with bootstrap intervals over the examples both have."""
    lines = [f"## Paired differences: {title} minus each method", "",
             "Same examples for both (n); an interval that excludes 0 is a difference the data resolve.", ""]
    for group, metrics in ((BENCHMARKS, ("soft_nc", "soft_ns", "abpc", "soft_nc_rank", "soft_ns_rank")),
                           (ALIGNMENT, ALIGN_METRICS)):
        for d in group:
            if not table.get((d, ref)):
                continue
            lines += [f"**{TITLES[d]}**", "", f"| {ROWS[ref][0]} − | n | "
                      + " | ".join(metric_title(m) for m in metrics) + " |", "|---|---|" + "---|" * len(metrics)]
            for b in compared:
                cells, n = [], 0
                for m in metrics:
                    ci, k = paired(table, d, ref, b, m, resamples)
                    cells.append(fmt(ci))
                    n = max(n, k)
                lines.append(f"| {ROWS[b][0]} | {n} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def write_choice_report(cfg: ChoiceConfig, path: Path, command: str = "", notes: str = "",
                        records: Iterable[dict] | None = None) -> Path:
    """Write the markdown report of what the cache holds to ``path``; returns it."""
    if records is None:
        records = JsonCache(cfg.cache_path).records.values()
    records = list(records)
    table = metric_table(records)
    R = cfg.bootstrap
    lines = ["# Is HEAT worth choosing?", "",
             "HEAT's configurations against AttnLRP, occlusion-KL and the gate M applied to cheap methods "
             "(`heat_module/evaluation/choice.py`, `benchmarks/eval_choice.py`). Means over examples with "
             f"percentile bootstrap 95 % intervals ({R} resamples) in brackets; n = examples.", ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += ["## Decision rule", "", RULE, ""]
    outcome = apply_rule(table)
    lines += ["## Outcome of the rule", ""]
    lines += ["| candidate | mean rank (9 = 3 metrics × 3 benchmarks) | s/example (benchmarks) | × AttnLRP | "
              "n (LongRA, TellMeWhy, WikiBio) |", "|---|---|---|---|---|"]
    for r in CANDIDATES:
        mr = outcome["mean_rank"].get(r, math.nan)
        c = outcome["counts"][r]
        lines.append(f"| `{r}` {ROWS[r][0]} | {mr:.2f} | {outcome['seconds'][r]:.2f} | "
                     f"{outcome['cost_ratio'][r]:.1f} | {c['longra']}, {c['tellmewhy']}, {c['wikibio']} |"
                     if math.isfinite(mr) else
                     f"| `{r}` {ROWS[r][0]} | – (not eligible or no data) | {outcome['seconds'][r]:.2f} | "
                     f"{outcome['cost_ratio'][r]:.1f} | {c['longra']}, {c['tellmewhy']}, {c['wikibio']} |")
    lines += ["", (f"**Rule applied:** winner `{outcome['winner']}` ({ROWS[outcome['winner']][0]})."
                   if outcome["applicable"] else
                   f"**Rule not applied** ({outcome['reason']}); best so far: `{outcome['winner']}`."), ""]
    lines += summary_lines(table, outcome["seconds"])
    figure = draw_cost_figure(table, outcome["seconds"], path.with_suffix(".png"),
                              outcome["winner"] if outcome["applicable"] else None)
    if figure is not None:
        lines += [f"![Faithfulness against cost]({figure.name})", ""]
    for group, metrics in ((BENCHMARKS, BENCH_METRICS), (ALIGNMENT, ALIGN_METRICS)):
        for d in group:
            rows = [r for r in ROWS if table.get((d, r))]
            if not rows:
                continue
            lines += [f"## {TITLES[d]}", "",
                      "| method | n | " + " | ".join(metric_title(m) for m in metrics) + " | s/example |",
                      "|---|---|" + "---|" * (len(metrics) + 1)]
            for r in rows:
                vals = table[(d, r)]
                cells = [fmt(cell([v[m] for v in vals.values() if m in v], R)) for m in metrics]
                secs = np.mean([v["seconds"] for v in vals.values()])
                lines.append(f"| {ROWS[r][0]} | {len(vals)} | " + " | ".join(cells) + f" | {secs:.2f} |")
            lines.append("")
    lines += paired_lines(table, "heat_exact", COMPARED, R, "HEAT eq. 5 (exact S; the default before the rule)")
    if outcome["applicable"] and outcome["winner"] != "heat_exact":
        others = tuple(r for r in CANDIDATES + COMPARED if r != outcome["winner"])  # is the win resolved?
        lines += paired_lines(table, outcome["winner"], others, R, f"the rule's winner `{outcome['winner']}`")
    sec_all = seconds_per_row(table, BENCHMARKS + ALIGNMENT)
    lines += ["## Seconds per example (attribution only, 1 torch thread, shared 2-core CPU)", "",
              "| method | s/example (all datasets) | × AttnLRP |", "|---|---|---|"]
    for r in ROWS:
        ratio = sec_all[r] / sec_all["attnlrp"] if sec_all["attnlrp"] else math.nan
        lines.append(f"| {ROWS[r][0]} | {sec_all[r]:.2f} | {ratio:.1f} |")
    lines += ["", "## Configurations compared", ""]
    for r, (title, need, conf) in ROWS.items():
        how = {"attnlrp": "`build('attnlrp', model)` (one forward, one backward; relevance of the target logit)",
               "occlusion_kl": "`build('occlusion', model, measure='kl')` ≡ I of eq. 4 (zero mask; computed with "
                               "HEAT's prefix-shared `information`)",
               "m_attnlrp": "`build('gated:attnlrp', model)` (M with `sink='auto'` × AttnLRP)",
               "random": "seeded U[0, 1) scores"}.get(r)
        if r in PRIOR_ROWS:
            name, options = PRIOR_ROWS[r]
            how = f"`build({name!r}, model, **{options!r}).attribute(ids, target)` (a prior: no model)"
        if how is None:
            fields = ", ".join(f"{k}={v!r}" for k, v in conf.items())
            how = f"`HEAT(model, tok, HEATConfig({fields}))`"
        lines.append(f"- `{r}` — {title}: {how}; components {', '.join(need) or '–'}.")
    lines += ["", f"Run settings: model {cfg.model if isinstance(cfg.model, str) else 'given'}, contexts ≤ "
              f"{cfg.max_tokens} tokens, Soft-NC/NS mask seeds {list(cfg.seeds)} (one mask each), rank-transformed "
              f"Soft-NC/NS seeds {list(cfg.rank_seeds)}, ABPC T = {cfg.abpc_steps}.", ""]
    if command:
        lines += ["Report command:", "", f"    {command}", ""]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
