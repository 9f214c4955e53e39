"""The paper's evaluation (Tables 1, 2, 5, 7; §5.1 DSA) on any model: the paper-table configuration of the pipeline
(:func:`paper_study`) and :func:`run`.

Methods × datasets, every metric from :mod:`heat_module.metrics`, seeded, with bootstrap 95 % intervals:

- datasets: the table's datasets marked for the paper (:mod:`heat_module.evaluation.datasets`; paths from
  :class:`EvalConfig` or ``$HEAT_DATA_DIR``).
- metrics (:class:`PaperScorer`): from the metric registry — the model-based ones of ``EvalConfig.metrics``
  (default Soft-NC / Soft-NS with ReAGent's definition, reported as raw means and ln(mean / mean of the metric's own
  random scores), AOPC (ERASER), ABPC), every gold-token metric (DSA, F1 of the top-|gold| tokens) where an example
  has gold tokens, and on LongRA the share of attribution mass on the distractor sentence ("distractor mass", lower
  is better).
- methods: the baselines of the method registry (the rows its entries declare, with the model-free priors
  ``last_token`` and ``recency``), and HEAT, run once per example and recombined for every row
  (:mod:`heat_module.evaluation.variants`).

Resumable (:mod:`heat_module.evaluation.pipeline`): a re-run computes only what the cache lacks; raising ``limit``
extends the run, because examples are taken in a fixed seeded order; a new HEAT row is recombined from the cached
attribution without running HEAT again; a metric added to ``metrics`` is computed from the cached scores. The report
(:mod:`heat_module.evaluation.report`) and the figures (:mod:`heat_module.evaluation.figures`) are rebuilt from the
cache at the end of every run (``report_only`` rebuilds them without computing anything).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from heat_module.attribution.registry import build
from heat_module.config import SINKS
from heat_module.evaluation.cache import Cache
from heat_module.evaluation.config import EvalConfig
from heat_module.evaluation.datasets import EvalExample
from heat_module.evaluation.figures import draw_figures
from heat_module.evaluation.pipeline import HEAT_METHOD, Scorer, Study, run_study, study_records
from heat_module.evaluation.report import write_report
from heat_module.evaluation.stats import best_sink, summarize
from heat_module.evaluation.variants import PAPER_STUDY, heat_config, paper_rows, sink_transitions
from heat_module.lm.forward import make_forward_fn
from heat_module.lm.loading import load_model
from heat_module.metrics.functional import dsa
from heat_module.metrics.registry import metric_entries, metric_entry

#: friendlier report names of the models ``load_model`` knows by a short name
MODEL_NAMES = {"smollm2": "SmolLM2-135M-Instruct"}


class PaperScorer(Scorer):
    """The metrics of the paper-table configuration (model-based ones through the model's ``forward_fn``), each by
    its registry entry's functional form with the run's settings.

    Example:
        >>> import torch
        >>> from heat_module.evaluation import EvalExample, PaperScorer
        >>> example = EvalExample("curated", "c0", [4, 29, 65], 38, gold=[1], distractor=[0])
        >>> PaperScorer.free_metrics(torch.tensor([0.1, 0.8, 0.1]), example)  # the gold-token metrics
        {'dsa': 0.699999988079071, 'f1': 1.0}
    """

    def __init__(self, model: nn.Module, tokenizer: Any, cfg: EvalConfig) -> None:
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.forward_fn = make_forward_fn(model)
        self.heat: Any = None

    def model_metrics(self, scores: torch.Tensor, x: torch.Tensor, target: int, random_baseline: bool = False,
                      names: Sequence[str] | None = None) -> dict[str, float]:
        """The model-based metrics ``names`` (default the run's ``metrics``) of (n,) scores on x (1, n, d), each by
        its registry entry's functional form with the run's settings (masks, seed, batch size) where it takes them;
        ``random_baseline`` adds Soft-NC/NS's random-scores values. Log ratios are left to the summary."""
        cfg = self.cfg
        s = scores[None].to(x.device).float()
        settings = {"definition": "reagent", "num_masks": cfg.num_masks, "seed": cfg.seed,
                    "batch_size": cfg.metric_batch_size, "random_baseline": random_baseline}
        out: dict[str, float] = {}
        for name in cfg.metrics if names is None else names:
            entry = metric_entry(name)
            options = {k: v for k, v in settings.items() if k in entry.option_names()}
            args = [s, x, None]
            if "target_ids" in inspect.signature(entry.functional).parameters:
                args.append(torch.tensor([target], device=x.device))
            value = entry.functional(*args, self.forward_fn, **{**entry.options, **options})
            values = value if isinstance(value, dict) else {name: value}
            out.update({k: float(v) for k, v in values.items() if not k.endswith("log_ratio")})
        return out

    @staticmethod
    def free_metrics(scores: torch.Tensor, example: EvalExample) -> dict[str, float]:
        """The metrics without a model: every gold-token metric of the registry (DSA, F1; each its own value) where
        the example has gold tokens, else the distractor mass."""
        out: dict[str, float] = {}
        s = scores[None].float().cpu()
        if example.gold:
            for name, entry in metric_entries().items():
                if entry.inputs == "gold_distractor":
                    value = entry.functional(s, [example.gold], [example.distractor or []])
                elif entry.inputs == "gold":
                    value = entry.functional(s, [example.gold])
                else:
                    continue
                out[name] = float(value[name] if isinstance(value, dict) else value)
        elif example.distractor:
            out["distractor_mass"] = -float(dsa(s, [[]], [example.distractor]))
        return out

    def score(self, example: EvalExample, x: torch.Tensor, target: int, scores: torch.Tensor,
              model_metrics: Sequence[bool], names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        out = []
        for s, mm in zip(scores, model_metrics):
            values = {} if names is not None else self.free_metrics(s, example)
            if mm:
                values.update(self.model_metrics(s, x, target, names=names))
            out.append(values)
        return out

    def reference(self, example: EvalExample, x: torch.Tensor, target: int, ids: torch.Tensor) -> dict:
        """The metrics' own random scores (ReAGent's ln-ratio denominator), the tokens, and the attention sink's
        facts of the example (:func:`~heat_module.evaluation.variants.sink_transitions`; with HEAT rows)."""
        ref = self.model_metrics(torch.ones(x.shape[1]), x, target, random_baseline=True)
        facts: dict[str, Any] = {"metrics": {(k if k.endswith("_random") else f"{k}_uniform"): v
                                             for k, v in ref.items()}}
        if self.cfg.heat:
            if self.heat is None:
                self.heat = build(HEAT_METHOD, self.model, self.tokenizer, config=heat_config(self.cfg))
            facts["tokens"] = self.heat.token_strings(ids)
            _, captures = self.heat.forward_with_captures(ids[None], torch.ones_like(ids)[None])
            facts["sink"] = sink_transitions(captures)[1]
        return facts

    def missing(self, record: dict) -> list[str]:
        """The run's model-based metrics a cached row lacks (added to ``metrics`` after it was computed)."""
        return [n for n in self.cfg.metrics if not set(metric_entry(n).keys) <= set(record["metrics"])]

    def close(self) -> None:
        if self.heat is not None:
            self.heat.close()
            self.heat = None


def paper_study(cfg: EvalConfig, model: nn.Module | None = None, tokenizer: Any = None) -> Study:
    """The paper-table configuration of the pipeline for ``cfg`` (the model: ``cfg.model`` when not given).

    Example:
        >>> import tempfile
        >>> from heat_module.testing import tiny_eval_config
        >>> from heat_module.evaluation import paper_study
        >>> cfg = tiny_eval_config(tempfile.mkdtemp(), heat=True)  # the tiny model, HEAT's rows too
        >>> rows = paper_study(cfg).rows
        >>> len({r.family for r in rows if r.family}), len(rows) > 10  # every HEAT row shares one attribution
        (1, True)
    """
    if model is None:
        model, tokenizer = cfg.model if isinstance(cfg.model, tuple) else load_model(cfg.model)
    return Study(PAPER_STUDY, list(cfg.datasets), paper_rows(cfg), PaperScorer(model, tokenizer, cfg),
                 paths=dict(cfg.paths), default_limit=cfg.limit, max_tokens=cfg.max_tokens, order_seed=cfg.seed,
                 seed=cfg.seed, option="--{name}", progress=cfg.progress and not cfg.report_only)


def run(cfg: EvalConfig, model: nn.Module | None = None, tokenizer: Any = None, command: str | None = None,
        machine: str | None = None) -> Path:
    """Run (or resume) the evaluation and write the report; returns the report path.

    Args:
        cfg: the run's settings.
        model, tokenizer: the model (``None``: ``cfg.model`` as a ``(model, tokenizer)`` pair, or loaded by name).
        command: the command line recorded at the end of the report.
        machine: a description of the machine for the report's setup section (``None``: not mentioned).

    Example:
        >>> import tempfile
        >>> from heat_module.testing import tiny_eval_config
        >>> cfg = tiny_eval_config(tempfile.mkdtemp())  # the tiny model on two prompts, the random baseline
        >>> from heat_module.evaluation import run
        >>> report = run(cfg)  # a second call resumes from cfg.cache_path and computes nothing again
        >>> report.name, report.read_text().startswith("# HEAT evaluation")
        ('RESULTS-eval.md', True)
    """
    t_start = time.perf_counter()
    data_paths = {d: cfg.data_path(d) for d in cfg.datasets}  # a missing path fails before the model loads
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if model is None:
        model, tokenizer = cfg.model if isinstance(cfg.model, tuple) else load_model(cfg.model)
    study = paper_study(cfg, model, tokenizer)
    cache = Cache(cfg.cache_path, cfg.fingerprint())
    try:
        examples, n_usable = run_study(study, model, tokenizer, cache, compute=not cfg.report_only)
    finally:
        study.scorer.close()
    if cfg.report_only:  # every example that has started; rows missing on some are listed in the report
        examples = [e for e in examples if cache.has(study.key(e, "__reference__"))]
    rows = list(study.rows)
    records = study_records(cache, PAPER_STUDY, examples)
    greedy = {}
    for name in cfg.datasets:
        refs = [r for r in records if r["dataset"] == name and r.get("kind") == "reference"
                and r.get("study") == PAPER_STUDY]
        greedy[name] = f"{sum(1 for r in refs if r.get('greedy_match'))}/{len(refs)}"
    summary = summarize(records, cfg, rows)
    sink, _ = best_sink(summary, cfg)
    figure_sink = sink if sink in SINKS else "auto"  # a proposed option is not a HEATConfig choice
    figures = (draw_figures(model, tokenizer, Path(cfg.out_dir), figure_sink, cfg.probes, cfg.seed)
               if cfg.figures else [])
    model_name = cfg.model if isinstance(cfg.model, str) else type(model).__name__
    param = next(model.parameters())
    meta = {"model_name": MODEL_NAMES.get(model_name, model_name), "dtype": str(param.dtype).removeprefix("torch."),
            "device": param.device.type, "threads": torch.get_num_threads(), "machine": machine,
            "usable": n_usable, "greedy_match": greedy, "data_paths": data_paths,
            "wall_seconds": time.perf_counter() - t_start, "figures": figures, "figure_sink": figure_sink,
            "command": command or "heat eval"}
    write_report(summary, cfg, rows, cfg.report_path, meta)
    return cfg.report_path
