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

from heat_module.evaluation.cache import Cache
from heat_module.evaluation.choice import (
    ALIGNMENT,
    BENCHMARKS,
    CANDIDATES,
    CHOICE_STUDY,
    COMPARED,
    CONTEXT_CANDIDATES,
    CONTEXT_METRICS,
    CONTEXT_RULE,
    CONTEXT_STUDY,
    HEAT_CANDIDATES,
    MAX_COST_RATIO,
    METRIC_DATASETS,
    MIN_EXAMPLES,
    RULE,
    RULE_DATASETS,
    RULE_METRICS,
    TRIVIAL,
    ChoiceConfig,
    choice_rows,
    context_rows,
)
from heat_module.evaluation.choice_metrics import EVIDENCE_METRICS
from heat_module.evaluation.datasets import title as dataset_title
from heat_module.evaluation.pipeline import Row
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
        if r.get("study") != CHOICE_STUDY or r.get("kind") != "row":
            continue
        vals = {k: v for k, v in r["metrics"].items() if isinstance(v, (int, float))}
        vals["seconds"] = r["seconds"]
        out[(r["dataset"], r["row"])][r["example"]] = vals
    return out


def row_titles(table: dict, rows: dict[str, Row] | None = None, present: bool = False) -> dict[str, str]:
    """Row label -> title, in report order: the study's rows (default :func:`~heat_module.evaluation.choice.
    choice_rows`; with ``present`` only those the table holds), then any other row the table holds (titled by its
    label)."""
    held = {row for _, row in table}
    titles = {label: r.title for label, r in (choice_rows() if rows is None else rows).items()
              if not present or label in held}
    titles.update({row: row for row in sorted(held) if row not in titles})
    return titles


def short_text(short: dict[str, dict[str, int]]) -> str:
    """``row -> dataset -> examples`` of the rows with too few examples, as text."""
    return ", ".join(f"`{r}` ({', '.join(f'{dataset_title(d)} {n}' for d, n in c.items())})" for r, c in short.items())


def describe(row: Row) -> str:
    """How a row's scores are made, in code."""
    config = row.options.get("config")
    if config is None:
        options = "".join(f", {k}={v!r}" for k, v in row.options.items())
        return f"`build({row.method!r}, model, tok{options}).attribute(ids, target)`"
    fields = ", ".join(f"{k}={v!r}" for k, v in {"beta": row.recombine.beta, "gamma": row.recombine.gamma,
                                                "normalize": row.recombine.normalize}.items()) if row.recombine else ""
    curvature = config.curvature.name if config.curvature is not None else "none"
    return (f"`HEAT(model, tok, config)` (sink={config.sink!r}, S={curvature}) once per example, "
            + (f"recombined by `combine(components, HEATConfig({fields}))`" if fields else "its own scores"))


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
    for row in row_titles(table):
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
        missing = short_text(short)
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
    for r in row_titles(table):
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
    titles = row_titles(table, present=True)
    for r in titles:
        cells = [f"{means[r][m]:.3f}" if math.isfinite(means[r][m]) else "–" for m in RULE_METRICS]
        for d in ALIGNMENT:
            for m in ALIGN_METRICS:
                vals = [v[m] for v in table.get((d, r), {}).values() if m in v]
                cells.append(f"{np.mean(vals):.3f}" if vals else "–")
        ratio = seconds.get(r, math.nan) / seconds["attnlrp"] if seconds.get("attnlrp") else math.nan
        out.append(f"| {titles[r]} | " + " | ".join(cells) + f" | {ratio:.1f} |")
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
    ratio = {r: seconds[r] / base for r in row_titles(table)
             if math.isfinite(seconds.get(r, math.nan)) and base and seconds[r] > 0}
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
    titles = row_titles(table)
    lines = [f"## Paired differences: {title} minus each method", "",
             "Same examples for both (n); an interval that excludes 0 is a difference the data resolve.", ""]
    for group, metrics in ((BENCHMARKS, ("soft_nc", "soft_ns", "abpc", "soft_nc_rank", "soft_ns_rank")),
                           (ALIGNMENT, ALIGN_METRICS)):
        for d in group:
            if not table.get((d, ref)):
                continue
            lines += [f"**{dataset_title(d)}**", "", f"| {titles[ref]} − | n | "
                      + " | ".join(metric_title(m) for m in metrics) + " |", "|---|---|" + "---|" * len(metrics)]
            for b in compared:
                cells, n = [], 0
                for m in metrics:
                    ci, k = paired(table, d, ref, b, m, resamples)
                    cells.append(fmt(ci))
                    n = max(n, k)
                lines.append(f"| {titles[b]} | {n} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def write_choice_report(cfg: ChoiceConfig, path: Path, command: str = "", notes: str = "",
                        records: Iterable[dict] | None = None) -> Path:
    """Write the markdown report of what the cache holds to ``path``; returns it."""
    if records is None:
        records = Cache(cfg.cache_path).records.values()
    records = list(records)
    table = metric_table(records)
    rows = choice_rows(cfg.methods)
    titles = row_titles(table, rows)
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
        lines.append(f"| `{r}` {titles[r]} | {mr:.2f} | {outcome['seconds'][r]:.2f} | "
                     f"{outcome['cost_ratio'][r]:.1f} | {c['longra']}, {c['tellmewhy']}, {c['wikibio']} |"
                     if math.isfinite(mr) else
                     f"| `{r}` {titles[r]} | – (not eligible or no data) | {outcome['seconds'][r]:.2f} | "
                     f"{outcome['cost_ratio'][r]:.1f} | {c['longra']}, {c['tellmewhy']}, {c['wikibio']} |")
    lines += ["", (f"**Rule applied:** winner `{outcome['winner']}` ({titles[outcome['winner']]})."
                   if outcome["applicable"] else
                   f"**Rule not applied** ({outcome['reason']}); best so far: `{outcome['winner']}`."), ""]
    lines += summary_lines(table, outcome["seconds"])
    figure = draw_cost_figure(table, outcome["seconds"], path.with_suffix(".png"),
                              outcome["winner"] if outcome["applicable"] else None)
    if figure is not None:
        lines += [f"![Faithfulness against cost]({figure.name})", ""]
    for group, metrics in ((BENCHMARKS, BENCH_METRICS), (ALIGNMENT, ALIGN_METRICS)):
        for d in group:
            present = [r for r in titles if table.get((d, r))]
            if not present:
                continue
            lines += [f"## {dataset_title(d)}", "",
                      "| method | n | " + " | ".join(metric_title(m) for m in metrics) + " | s/example |",
                      "|---|---|" + "---|" * (len(metrics) + 1)]
            for r in present:
                vals = table[(d, r)]
                cells = [fmt(cell([v[m] for v in vals.values() if m in v], R)) for m in metrics]
                secs = np.mean([v["seconds"] for v in vals.values()])
                lines.append(f"| {titles[r]} | {len(vals)} | " + " | ".join(cells) + f" | {secs:.2f} |")
            lines.append("")
    lines += paired_lines(table, "heat_exact", COMPARED, R, "HEAT eq. 5 (exact S; the default before the rule)")
    if outcome["applicable"] and outcome["winner"] != "heat_exact":
        others = tuple(r for r in CANDIDATES + COMPARED if r != outcome["winner"])  # is the win resolved?
        lines += paired_lines(table, outcome["winner"], others, R, f"the rule's winner `{outcome['winner']}`")
    sec_all = seconds_per_row(table, BENCHMARKS + ALIGNMENT)
    lines += ["## Seconds per example (attribution only, 1 torch thread, shared 2-core CPU)", "",
              "| method | s/example (all datasets) | × AttnLRP |", "|---|---|---|"]
    for r in row_titles(table, rows, present=True):
        ratio = sec_all[r] / sec_all["attnlrp"] if sec_all["attnlrp"] else math.nan
        lines.append(f"| {titles[r]} | {sec_all[r]:.2f} | {ratio:.1f} |")
    lines += ["", "## Configurations compared", ""]
    for r, row in rows.items():
        lines.append(f"- `{r}` — {row.title}: {describe(row)}.")
    lines += ["", f"Run settings: model {cfg.model if isinstance(cfg.model, str) else 'given'}, contexts ≤ "
              f"{cfg.max_tokens} tokens, Soft-NC/NS mask seeds {list(cfg.seeds)} (one mask each), rank-transformed "
              f"Soft-NC/NS seeds {list(cfg.rank_seeds)}, ABPC T = {cfg.abpc_steps}.", ""]
    if command:
        lines += ["Report command:", "", f"    {command}", ""]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------------ context
def context_table(records: Iterable[dict]) -> dict[tuple[str, str], dict[str, dict[str, float]]]:
    """(dataset, row) -> example id -> metric -> value (plus ``seconds``) of the context study's records, on the
    examples that have every row the records hold on that dataset (an example an interrupted run left part-done is
    left out, so every row is measured on the same examples)."""
    out: dict[tuple[str, str], dict[str, dict[str, float]]] = defaultdict(dict)
    for r in records:
        if r.get("study") != CONTEXT_STUDY or r.get("kind") != "row":
            continue
        vals = {k: v for k, v in r["metrics"].items() if isinstance(v, (int, float))}
        vals["seconds"] = r["seconds"]
        out[(r["dataset"], r["row"])][r["example"]] = vals
    for d in {d for d, _ in out}:
        rows = [row for dd, row in out if dd == d]
        complete = set.intersection(*(set(out[(d, row)]) for row in rows))
        for row in rows:
            out[(d, row)] = {e: v for e, v in out[(d, row)].items() if e in complete}
    return out


def pooled_difference(table: dict, a: str, b: str, metric: str, datasets: Iterable[str], resamples: int,
                      seed: int = 0) -> tuple[tuple[float, float, float], dict[str, int]]:
    """The rule's comparison of row ``a`` with row ``b`` (``b`` may be ``None``: ``a``'s own values): the mean over
    ``datasets`` of the per-dataset mean of a − b on the examples both have, with its percentile 95 % bootstrap
    interval (``resamples`` resamples, examples resampled within each dataset). Datasets where the two share no
    example are left out; none left: NaN. Returns ((estimate, low, high), dataset -> examples)."""
    diffs: dict[str, np.ndarray] = {}
    for d in datasets:
        xa, xb = table.get((d, a), {}), table.get((d, b), {}) if b is not None else {}
        common = sorted(e for e in xa if metric in xa[e] and (b is None or (e in xb and metric in xb[e])))
        if common:
            diffs[d] = np.array([xa[e][metric] - (xb[e][metric] if b is not None else 0.0) for e in common])
    counts = {d: len(v) for d, v in diffs.items()}
    if not diffs:
        return (math.nan, math.nan, math.nan), counts
    est = float(np.mean([v.mean() for v in diffs.values()]))
    if resamples <= 0 or min(len(v) for v in diffs.values()) < 2:
        return (est, math.nan, math.nan), counts
    rng = np.random.default_rng(seed)
    boots = np.zeros(resamples)
    for v in diffs.values():
        boots += v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)
    boots /= len(diffs)
    return (est, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))), counts


def apply_context_rule(table: dict, resamples: int = 1000) -> dict[str, Any]:
    """The outcome of :data:`heat_module.evaluation.choice.CONTEXT_RULE` on the context table.

    Returns:
        ``{"applicable", "reason", "beats": {row: {baseline: [metrics]}}, "eligible": [...], "score": {row: float},
        "winner": row | None, "heat_winner": row | None, "heat_beats_attnlrp": bool, "cost_ratio": {row: float},
        "seconds": {row: float}, "counts": {row: {dataset: n}}, "diffs": {(row, baseline, metric): ci}}``.
    """
    seconds = {}
    for r in row_titles(table, context_rows()):
        vals = [v["seconds"] for d in RULE_DATASETS for v in table.get((d, r), {}).values()]
        seconds[r] = float(np.mean(vals)) if vals else math.nan
    base = seconds.get("attnlrp", math.nan)
    ratio = {r: seconds[r] / base if base and math.isfinite(base) else math.nan for r in CONTEXT_CANDIDATES}
    counts = {r: {d: sum(1 for v in table.get((d, r), {}).values()
                         if all(m in v for m in CONTEXT_METRICS if d in METRIC_DATASETS[m])) for d in RULE_DATASETS}
              for r in CONTEXT_CANDIDATES}
    beats: dict[str, dict[str, list[str]]] = {}
    diffs = {}
    for r in CONTEXT_CANDIDATES:
        beats[r] = {}
        for b in TRIVIAL:
            beats[r][b] = []
            for m in CONTEXT_METRICS:
                ci, _ = pooled_difference(table, r, b, m, METRIC_DATASETS[m], resamples)
                diffs[(r, b, m)] = ci
                if ci[0] > 0 and ci[1] > 0:
                    beats[r][b].append(m)
    both = {r: [m for m in CONTEXT_METRICS if all(m in beats[r][b] for b in TRIVIAL)] for r in CONTEXT_CANDIDATES}
    eligible = [r for r in CONTEXT_CANDIDATES if len(both[r]) >= 3 and math.isfinite(ratio[r])
                and ratio[r] <= MAX_COST_RATIO]
    per_metric: dict[str, dict[str, list[float]]] = {r: {m: [] for m in CONTEXT_METRICS} for r in eligible}
    for m in CONTEXT_METRICS:
        for d in METRIC_DATASETS[m]:
            means = {r: float(np.mean([v[m] for v in table[(d, r)].values() if m in v])) for r in eligible
                     if any(m in v for v in table.get((d, r), {}).values())}
            for r in means:  # 1 = best; ties share the mean of their ranks
                better = sum(1 for q in means if means[q] > means[r])
                tied = sum(1 for q in means if means[q] == means[r])
                per_metric[r][m].append(better + (tied + 1) / 2)
    score = {r: float(np.mean([np.mean(v) for v in per_metric[r].values()]))
             if all(len(per_metric[r][m]) == len(METRIC_DATASETS[m]) for m in CONTEXT_METRICS) else math.nan
             for r in eligible}
    ranked = sorted((r for r in eligible if math.isfinite(score[r])), key=lambda r: (score[r], seconds[r]))
    winner = ranked[0] if ranked else None
    heat = [r for r in ranked if r in HEAT_CANDIDATES]
    heat_winner = heat[0] if heat else None
    heat_beats_attnlrp = heat_winner is not None and ("attnlrp" not in score or score[heat_winner] < score["attnlrp"])
    short = {r: c for r, c in counts.items() if min(c.values()) < MIN_EXAMPLES}
    applicable = not short
    reason = (f"every candidate has ≥ {MIN_EXAMPLES} examples on each dataset" if applicable else
              "not enough examples: " + short_text(short))
    return {"applicable": applicable, "reason": reason, "beats": beats, "beats_both": both, "eligible": eligible,
            "score": score, "ranked": ranked, "winner": winner, "heat_winner": heat_winner,
            "heat_beats_attnlrp": heat_beats_attnlrp, "cost_ratio": ratio, "seconds": seconds, "counts": counts,
            "diffs": diffs}


CONTEXT_TITLES = {"soft_nc": "Soft-NC (context)", "soft_ns": "Soft-NS (context)",
                  "abpc_deletion": "ABPC deletion (context)", "recall_evidence": "evidence recall",
                  "recall_evidence_noquery": "evidence recall (query left out)", "recall_answer": "answer recall"}


def signed(ci: tuple[float, float, float]) -> str:
    est, lo, hi = ci
    if not math.isfinite(est):
        return "–"
    return f"{est:+.3f} [{lo:+.3f}, {hi:+.3f}]" if math.isfinite(lo) else f"{est:+.3f}"


def write_context_report(cfg: ChoiceConfig, path: Path, command: str = "", notes: str = "",
                         records: Iterable[dict] | None = None, previous: str = "") -> Path:
    """Write the context study's markdown report (what the cache holds) to ``path``, followed by ``previous`` (an
    earlier report's text, kept below: newest first); returns ``path``."""
    cache = Cache(cfg.cache_path) if records is None else None
    records = list(cache.records.values() if cache is not None else records)
    table = context_table(records)
    fit = next((r for r in records if r.get("key") == "fit/priors"), None)
    R = cfg.bootstrap
    out = apply_context_rule(table, R)
    rows = context_rows(cfg.methods, fit)
    title = row_titles(table, rows)
    shown = row_titles(table, rows, present=True)
    lines = ["# Is HEAT worth choosing? Over the context, beside trivial baselines", "",
             "Every faithfulness metric over the context (the final token never perturbed nor ranked; scores "
             "renormalised over the rest), ABPC with the tokens deleted, a generated benchmark whose evidence is "
             "known, and trivial baselines as rows (`heat_module/evaluation/choice.py` `run_context`, "
             "`benchmarks/eval_choice.py --stage context`). Means over examples with percentile bootstrap 95 % "
             f"intervals ({R} resamples) in brackets; n = examples.", ""]
    if notes:
        lines += [notes.strip(), ""]
    if fit is not None:
        lines += [f"Priors fitted on the held-apart split ({len(fit['held'])} examples: "
                  f"{', '.join(sorted({h.split('/')[0] for h in fit['held']}))}; AttnLRP's scores): recency rate "
                  f"{fit['rate']:g}; position profile (distance 0, 1, 2, … from the end) "
                  f"{', '.join(f'{p:.3f}' for p in fit['profile'][:8])}, ….", ""]
    lines += ["## Decision rule", "", CONTEXT_RULE, "", "## Outcome of the rule", "",
              "Beats: the metrics on which the pooled paired difference to the baseline is above 0 with its interval "
              "above 0 (NC = Soft-NC, NS = Soft-NS, AB = ABPC deletion, ER = evidence recall).", "",
              "| candidate | beats `last_token` on | beats `recency` on | × AttnLRP | eligible | score (mean rank) | "
              "n (" + ", ".join(dataset_title(d) for d in RULE_DATASETS) + ") |", "|---|---|---|---|---|---|---|"]
    short = {"soft_nc": "NC", "soft_ns": "NS", "abpc_deletion": "AB", "recall_evidence": "ER"}
    for r in CONTEXT_CANDIDATES:
        sc = out["score"].get(r, math.nan)
        lines.append(f"| `{r}` {title[r]} | " + " | ".join(", ".join(short[m] for m in out["beats"][r][b]) or "none"
                                                          for b in TRIVIAL)
                     + f" | {out['cost_ratio'][r]:.1f} | {'yes' if r in out['eligible'] else 'no'} | "
                     + (f"{sc:.2f}" if math.isfinite(sc) else "–") + " | "
                     + ", ".join(str(out["counts"][r][d]) for d in RULE_DATASETS) + " |")
    if out["applicable"]:
        lines += ["", f"**Rule applied.** Best method: `{out['winner']}`; best HEAT configuration: "
                      f"`{out['heat_winner']}`; a HEAT configuration ranks above AttnLRP: "
                      f"{'yes' if out['heat_beats_attnlrp'] else 'no'}.", ""]
    else:
        lines += ["", f"**Rule not applied** ({out['reason']}); by the data so far: best `{out['winner']}`, best HEAT "
                      f"`{out['heat_winner']}`.", ""]

    # summary over the rule's datasets
    metrics = CONTEXT_METRICS
    lines += ["## Summary: pooled means (mean of the per-dataset means) and the position-controlled score", "",
              "Position-controlled: the method's value minus `position_prior`'s on the same example, pooled the same "
              "way (0: no better than position alone).", "",
              "| method | " + " | ".join(CONTEXT_TITLES[m] for m in metrics) + " | "
              + " | ".join(f"{CONTEXT_TITLES[m]} − position" for m in metrics) + " | s/example |",
              "|---|" + "---|" * (2 * len(metrics) + 1)]
    for r in shown:
        cells = [fmt(pooled_difference(table, r, None, m, METRIC_DATASETS[m], R)[0]) for m in metrics]
        cells += [signed(pooled_difference(table, r, "position_prior", m, METRIC_DATASETS[m], R)[0])
                  if r != "position_prior" else "0" for m in metrics]
        lines.append(f"| {title[r]} | " + " | ".join(cells) + f" | {out['seconds'][r]:.2f} |")
    lines.append("")

    for b in TRIVIAL + ("position_prior",):
        lines += [f"## Paired differences: each method minus `{b}` (pooled over the datasets)", "",
                  "| method − " + b + " | " + " | ".join(CONTEXT_TITLES[m] for m in metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        for r in shown:
            if r != b:
                lines.append(f"| {title[r]} | " + " | ".join(
                    signed(pooled_difference(table, r, b, m, METRIC_DATASETS[m], R)[0]) for m in metrics) + " |")
        lines.append("")

    for d in RULE_DATASETS + ALIGNMENT:
        present = [r for r in title if table.get((d, r))]
        if not present:
            continue
        ms = (("soft_nc", "soft_ns", "abpc_deletion") + (EVIDENCE_METRICS if d == "evidence" else ())
              if d in RULE_DATASETS else ALIGN_METRICS)
        names = [CONTEXT_TITLES.get(m, metric_title(m) if m in ALIGN_METRICS else m) for m in ms]
        lines += [f"## {dataset_title(d)}", "", "| method | n | " + " | ".join(names) + " | s/example |",
                  "|---|---|" + "---|" * (len(ms) + 1)]
        for r in present:
            vals = table[(d, r)]
            cells = [fmt(cell([v[m] for v in vals.values() if m in v], R)) for m in ms]
            lines.append(f"| {title[r]} | {len(vals)} | " + " | ".join(cells)
                         + f" | {np.mean([v['seconds'] for v in vals.values()]):.2f} |")
        lines.append("")
        if d in ALIGNMENT:
            for b in TRIVIAL:
                lines += [f"Paired differences on {dataset_title(d)}: method − `{b}`", "",
                          "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(ms)]
                for r in present:
                    if r != b:
                        lines.append(f"| {title[r]} | " + " | ".join(
                            signed(pooled_difference(table, r, b, m, (d,), R)[0]) for m in ms) + " |")
                lines.append("")

    if out["heat_winner"] is not None:
        ref = out["heat_winner"]
        lines += [f"## Paired differences per dataset: the best HEAT configuration `{ref}` minus each method", ""]
        for d in RULE_DATASETS:
            ms = ("soft_nc", "soft_ns", "abpc_deletion") + (("recall_evidence",) if d == "evidence" else ())
            lines += [f"**{dataset_title(d)}**", "",
                      f"| `{ref}` − | " + " | ".join(CONTEXT_TITLES[m] for m in ms) + " |", "|---|" + "---|" * len(ms)]
            for r in shown:
                if r != ref:
                    lines.append(f"| {title[r]} | " + " | ".join(
                        signed(pooled_difference(table, ref, r, m, (d,), R)[0]) for m in ms) + " |")
            lines.append("")

    lines += ["## Rows", ""]
    for r, row in rows.items():
        fitted = " (fitted on the held-apart split)" if r in ("recency", "position_prior") else ""
        lines.append(f"- `{r}` — {row.title}: {describe(row)}{fitted}.")
    lines += ["", f"Run settings: contexts ≤ {cfg.max_tokens} tokens, Soft-NC/NS mask seeds {list(cfg.seeds)} (one "
              f"mask each), ABPC T = {cfg.abpc_steps} with deletion, `exclude_last=1` everywhere.", ""]
    if command:
        lines += ["Report command:", "", f"    {command}", ""]
    text = "\n".join(lines) + "\n"
    if previous:
        text += "\n---\n\n" + previous
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
