"""Statistics of an evaluation: means with percentile bootstrap 95 % intervals, ReAGent's log ratio with a paired
bootstrap interval, the per-(dataset, method, metric) summary of the cache records, and the choice of the best sink
option."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from heat_module.evaluation.config import EvalConfig
from heat_module.evaluation.datasets import dataset_names
from heat_module.evaluation.pipeline import Row
from heat_module.evaluation.variants import PAPER_STUDY, heat_key
from heat_module.heat.transition import GATE_OPTIONS


def bootstrap_ci(values: Sequence[float], resamples: int, seed: int,
                 statistic: Callable[[np.ndarray], float] | None = None) -> tuple[float, float, float]:
    """(estimate, low, high): the statistic (default: mean) and its percentile 95 % bootstrap interval.

    Example:
        >>> from heat_module.evaluation import bootstrap_ci
        >>> mean, low, high = bootstrap_ci([0.1, 0.2, 0.3, 0.4], resamples=200, seed=0)
        >>> round(mean, 6), low <= mean <= high
        (0.25, True)
    """
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return (math.nan, math.nan, math.nan)
    stat = statistic or (lambda v: float(np.mean(v, axis=-1)) if v.ndim == 1 else np.mean(v, axis=-1))
    est = float(stat(a))
    if a.shape[0] < 2:
        return (est, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.shape[0], size=(resamples, a.shape[0]))
    boots = np.array([stat(a[i]) for i in idx], dtype=np.float64)
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return (est, math.nan, math.nan)
    return (est, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)))


def log_ratio_ci(method: Sequence[float], random: Sequence[float], resamples: int, seed: int
                 ) -> tuple[float, float, float]:
    """ln(mean(method) / mean(random)) with a paired bootstrap interval (NaN when a mean is ≤ 0).

    Example:
        >>> import math
        >>> from heat_module.evaluation import log_ratio_ci
        >>> estimate, low, high = log_ratio_ci([0.4, 0.6], [0.2, 0.3], resamples=100, seed=0)
        >>> math.isclose(estimate, math.log(0.5 / 0.25)), low <= estimate <= high  # ln(mean method / mean random)
        (True, True)
    """
    pairs = np.stack([np.asarray(method, float), np.asarray(random, float)], axis=1)

    def stat(p: np.ndarray) -> float:
        m, r = p[:, 0].mean(), p[:, 1].mean()
        return math.log(m / r) if m > 0 and r > 0 else math.nan

    return bootstrap_ci(pairs, resamples, seed, stat)


@dataclass
class Summary:
    """Per (dataset, method, metric): (estimate, low, high) and the example count.

    Example:
        >>> from heat_module.evaluation import Summary
        >>> summary = Summary(cells={("wikibio", "random", "aopc"): (0.1, 0.05, 0.15)},
        ...                   counts={("wikibio", "random"): 2}, facts={})
        >>> summary.cells[("wikibio", "random", "aopc")][0]  # (estimate, low, high)
        0.1
    """

    cells: dict[tuple[str, str, str], tuple[float, float, float]]
    counts: dict[tuple[str, str], int]
    facts: dict[str, Any]


def summarize(records: Iterable[dict], cfg: EvalConfig, rows: Sequence[Row]) -> Summary:
    """Means and bootstrap intervals from cache records (only examples where every listed row is present).

    Example:
        >>> import tempfile
        >>> from heat_module.testing import tiny_eval_config
        >>> cfg = tiny_eval_config(tempfile.mkdtemp())  # the tiny model on two prompts, the random baseline
        >>> from heat_module.evaluation import Cache, paper_rows, paper_study, run_study, summarize
        >>> cache = Cache(cfg.cache_path, cfg.fingerprint())
        >>> _ = run_study(paper_study(cfg), *cfg.model, cache)
        >>> summary = summarize(cache.records.values(), cfg, paper_rows(cfg))
        >>> summary.counts[("wikibio", "random")]
        2
    """
    by: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)  # (dataset, method) -> example -> metrics
    refs: dict[str, dict[str, dict]] = defaultdict(dict)
    seconds, extras, components = [], defaultdict(list), []
    for rec in records:  # the paper study's records and the shared attributions (HEAT's components)
        kind = rec.get("kind")
        if kind == "attribution":
            if rec.get("curvature") is not None and rec.get("information") is not None:
                components.append(rec)
            continue
        if rec.get("study") != PAPER_STUDY:
            continue
        if kind == "reference":
            refs[rec["dataset"]][rec["example"]] = rec
        elif kind == "time":
            seconds.append(rec["seconds"])
        elif kind == "row":
            by[(rec["dataset"], rec["method"])][rec["example"]] = rec
            for k, v in (rec.get("extra") or {}).items():
                extras[(rec["dataset"], rec["method"], k)].append(v)
    cells: dict[tuple[str, str, str], tuple[float, float, float]] = {}
    counts: dict[tuple[str, str], int] = {}
    for dataset in cfg.datasets:
        for v in rows:
            recs = by.get((dataset, v.label), {})
            ex_ids = sorted(e for e in recs if e in refs[dataset])
            counts[(dataset, v.label)] = len(ex_ids)
            if not ex_ids:
                continue
            names = sorted({k for e in ex_ids for k in recs[e]["metrics"]})
            for metric in names:
                vals = [recs[e]["metrics"].get(metric, math.nan) for e in ex_ids]
                vals_f = [x for x in vals if x is not None and math.isfinite(x)]
                cells[(dataset, v.label, metric)] = bootstrap_ci(vals_f, cfg.bootstrap, cfg.seed)
            for metric in names:  # a metric with a random-scores reference (Soft-NC/NS): ReAGent's log ratio
                if all(f"{metric}_random" in refs[dataset][e]["metrics"] for e in ex_ids):
                    m = [recs[e]["metrics"][metric] for e in ex_ids]
                    r = [refs[dataset][e]["metrics"][f"{metric}_random"] for e in ex_ids]
                    cells[(dataset, v.label, f"{metric}_log_ratio")] = log_ratio_ci(m, r, cfg.bootstrap, cfg.seed)
    for dataset in cfg.datasets:
        rr = list(refs[dataset].values())
        random_keys = sorted({k for r in rr for k in r["metrics"] if k.endswith("_random")})
        for key in random_keys:  # the metric's own random scores, as a row of its own
            cells[(dataset, "__metric_random__", key.removesuffix("_random"))] = bootstrap_ci(
                [r["metrics"][key] for r in rr if key in r["metrics"]], cfg.bootstrap, cfg.seed)
        counts[(dataset, "__metric_random__")] = len(rr)
    facts = {"compute_seconds": float(sum(seconds)), "extras": extras, "refs": refs, "components": components}
    return Summary(cells, counts, facts)


def mean_over(summary: Summary, datasets: Sequence[str], key: str, metric: str) -> float:
    """Mean over ``datasets`` of the per-dataset means (NaN when none has the metric)."""
    vals = [summary.cells.get((d, key, metric), (math.nan,))[0] for d in datasets]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def best_sink(summary: Summary, cfg: EvalConfig) -> tuple[str, dict[str, dict[str, float]]]:
    """The sink option with the best mean rank over Soft-NC, Soft-NS, AOPC (benchmarks) and DSA (curated)."""
    bench = [d for d in cfg.datasets if d in dataset_names("benchmark")]
    table: dict[str, dict[str, float]] = {}
    for s in GATE_OPTIONS:
        key = heat_key(s)
        table[s] = {"soft_nc": mean_over(summary, bench, key, "soft_nc"),
                    "soft_ns": mean_over(summary, bench, key, "soft_ns"),
                    "aopc": mean_over(summary, bench, key, "aopc"),
                    "dsa": mean_over(summary, ["curated"], key, "dsa")}
    ranks = defaultdict(list)
    for metric in ("soft_nc", "soft_ns", "aopc", "dsa"):
        vals = {s: table[s][metric] for s in GATE_OPTIONS if math.isfinite(table[s][metric])}
        for s, v in vals.items():  # equal values share a rank
            ranks[s].append(sum(1 for other in vals.values() if other > v))
    # ties (options that give identical M on every example, e.g. auto = first on SmolLM2) resolve to the option
    # that adapts to the model (auto), then to the simpler one
    order = ("auto", "first", "auto-median", "keep")
    best = min(GATE_OPTIONS, key=lambda s: (np.mean(ranks[s]) if ranks[s] else 9, order.index(s)))
    return best, table


def tied_options(best: str, table: dict[str, dict[str, float]]) -> list[str]:
    """The gate options whose row equals the best one's in every column."""
    return [s for s in GATE_OPTIONS if all(
        (math.isnan(table[s][m]) and math.isnan(table[best][m])) or table[s][m] == table[best][m]
        for m in table[best])]
