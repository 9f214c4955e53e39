"""The paper's evaluation (Tables 1, 2, 5, 7; §5.1 DSA) on any model: :class:`Evaluator` and :func:`run`.

Methods × datasets, every metric from :mod:`heat_module.metrics`, seeded, with bootstrap 95 % intervals:

- datasets: :mod:`heat_module.evaluation.datasets` (paths from :class:`EvalConfig` or ``$HEAT_DATA_DIR``).
- metrics: from the metric registry — the model-based ones of ``EvalConfig.metrics`` (default Soft-NC / Soft-NS
  with ReAGent's definition, reported as raw means and ln(mean / mean of the metric's own random scores), AOPC
  (ERASER), ABPC), every gold-token metric (DSA, F1 of the top-|gold| tokens) where an example has gold tokens, and
  on LongRA the share of attribution mass on the distractor sentence ("distractor mass", lower is better).
- methods: the baselines of the method registry (the rows its entries declare, with the model-free priors
  ``last_token`` and ``recency``), and HEAT, whose components M, S, I are computed once per example and
  recombined for every row (:mod:`heat_module.evaluation.variants`). Rows whose scores are equal up to a positive
  factor share one metric evaluation (:func:`score_signature`).

Resumable (:mod:`heat_module.evaluation.cache`): a re-run computes only what the cache lacks; raising ``limit``
extends the run, because examples are taken in a fixed seeded order; a new HEAT row is recombined from the stored
components without running HEAT again. Examples of the datasets are interleaved so a partial run covers all of them.
The report (:mod:`heat_module.evaluation.report`) and the figures (:mod:`heat_module.evaluation.figures`) are
rebuilt from the cache at the end of every run (``report_only`` rebuilds them without computing anything).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from heat_module.attribution.registry import build, get_method
from heat_module.config import SINKS, HEATConfig
from heat_module.evaluation.cache import Cache, rounded
from heat_module.evaluation.config import EvalConfig
from heat_module.evaluation.datasets import EvalExample, interleave, load_dataset, select_examples, usable
from heat_module.evaluation.figures import draw_figures
from heat_module.evaluation.report import write_report
from heat_module.evaluation.stats import best_sink, summarize
from heat_module.evaluation.variants import Variant, gate_options, recombine, sink_transitions, variants
from heat_module.heat.combine import Components
from heat_module.heat.estimator import HEAT
from heat_module.lm.forward import embed, make_forward_fn, next_token_logits
from heat_module.lm.loading import load_model
from heat_module.lm.offload import input_device
from heat_module.metrics.functional import dsa
from heat_module.metrics.registry import metric_entries, metric_entry
from heat_module.result import Cost

#: friendlier report names of the models ``load_model`` knows by a short name
MODEL_NAMES = {"smollm2": "SmolLM2-135M-Instruct"}


class Scorer:
    """The metrics of one example (model-based ones through ``forward_fn``)."""

    def __init__(self, model: nn.Module, cfg: EvalConfig) -> None:
        self.model, self.cfg = model, cfg
        self.forward_fn = make_forward_fn(model)

    def embeds(self, ids: torch.Tensor) -> torch.Tensor:
        """(n,) ids -> (1, n, d) embeddings, detached."""
        with torch.no_grad():
            return embed(self.model, ids[None]).detach()

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
        s = scores[None].float()
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


def score_signature(scores: torch.Tensor) -> tuple:
    """Scores up to a positive factor (every metric here is invariant to it: they normalise or rank), rounded.

    Two variants with the same signature get the same metric values (the metric draws are per example), so they
    are computed once — e.g. ``sink="auto"`` when it flags exactly position 0 equals ``sink="first"``, and the
    uniform gate equals no gate up to the factor 1/n.
    """
    s = scores.detach().double().cpu()
    top = float(s.abs().max())
    return tuple(round(float(v), 6) for v in (s / top if top > 0 else s))


class Evaluator:
    """Runs the variants of :func:`heat_module.evaluation.variants.variants` on examples, writing each result to
    the cache as it finishes.

    Args:
        cfg: the run's settings.
        model, tokenizer: the model to evaluate (``None``: ``load_model(cfg.model)``).

    Example:
        >>> import tempfile
        >>> from heat_module.testing import tiny_eval_config
        >>> cfg = tiny_eval_config(tempfile.mkdtemp())  # the tiny model on two prompts, the random baseline
        >>> from heat_module.evaluation import Evaluator, load_dataset
        >>> evaluator = Evaluator(cfg, *cfg.model)
        >>> example = load_dataset("wikibio", cfg, evaluator.tokenizer)[0]
        >>> [v.key for v in evaluator.todo(example)]
        ['random']
        >>> _ = evaluator.run_example(example)
        >>> evaluator.todo(example)  # the row is in the cache now
        []
    """

    def __init__(self, cfg: EvalConfig, model: nn.Module | None = None, tokenizer: Any = None) -> None:
        self.cfg = cfg
        if model is None:
            model, tokenizer = load_model(cfg.model)
        self.model, self.tokenizer = model, tokenizer
        self.scorer = Scorer(model, cfg)
        self.cache = Cache(cfg.cache_path, cfg.fingerprint())
        self.variants = variants(cfg)
        self._methods: dict[str, Any] = {}
        self._heat: HEAT | None = None

    def method(self, label: str) -> Any:
        """The attributor of baseline row ``label`` (built once through the registry; a method with a ``seed``
        option gets the run's seed unless the row sets one)."""
        if label not in self._methods:
            name, options = self.cfg.baselines[label]
            options = dict(options)
            if "seed" in inspect.signature(get_method(name)).parameters:
                options.setdefault("seed", self.cfg.seed)
            self._methods[label] = build(name, self.model, self.tokenizer, **options)
        return self._methods[label]

    @property
    def heat(self) -> HEAT:
        """HEAT eq. 5 with exact S (``HEATConfig.preset("exact")``: β = γ = 0.5, what RESULTS-eval.md measured;
        ``HEATConfig()`` is the Fisher S with ``normalize="sum"``) with the run's probes and seed (built once)."""
        if self._heat is None:
            self._heat = HEAT(self.model, self.tokenizer,
                              HEATConfig.preset("exact", curvature={"name": "exact", "probes": self.cfg.probes},
                                                seed=self.cfg.seed))
        return self._heat

    def todo(self, example: EvalExample) -> list[Variant]:
        """The rows of ``example`` the cache lacks."""
        return [v for v in self.variants if not self.cache.has(Cache.key(example.dataset, example.id, v.key))]

    def missing_metrics(self, example: EvalExample) -> dict[str, list[str]]:
        """Cached row key -> the run's model-based metrics its record lacks (a metric added to ``metrics`` after the
        row was computed); they are computed from the row's cached scores."""
        out = {}
        for v in self.variants:
            rec = self.cache.records.get(Cache.key(example.dataset, example.id, v.key))
            if rec is None or not v.model_metrics or "scores" not in rec:
                continue
            names = [n for n in self.cfg.metrics if not set(metric_entry(n).keys) <= set(rec["metrics"])]
            if names:
                out[v.key] = names
        return out

    def run_example(self, example: EvalExample) -> int:
        """Compute every missing variant (and every missing metric of a cached one) of one example; returns how
        many variants were computed."""
        todo = self.todo(example)
        need_ref = not self.cache.has(Cache.key(example.dataset, example.id, "__reference__"))
        missing = self.missing_metrics(example)
        if not todo and not need_ref and not missing:
            return 0
        t_example = time.perf_counter()
        ids = torch.tensor(example.input_ids, dtype=torch.long, device=input_device(self.model))
        x = self.scorer.embeds(ids)
        target = example.target_id
        with torch.no_grad():
            logits = next_token_logits(self.model, x)[0]
        greedy = int(logits.argmax())
        if target < 0:
            target = greedy
        base = {"dataset": example.dataset, "example": example.id, "n": int(ids.numel()), "target_id": target,
                "greedy_match": target == greedy, "target_logprob": float(torch.log_softmax(logits, -1)[target])}
        if need_ref:  # the metric's own random scores (ReAGent's ln-ratio denominator) + example facts
            t0 = time.perf_counter()
            ref = self.scorer.model_metrics(torch.ones_like(ids, dtype=torch.float32), x, target, random_baseline=True)
            rec = {**base, "key": Cache.key(example.dataset, example.id, "__reference__"), "method": "__reference__",
                   "metrics": {(k if k.endswith("_random") else f"{k}_uniform"): v for k, v in ref.items()},
                   "tokens": self.heat.token_strings(ids) if self.tokenizer is not None else None,
                   "gold": example.gold, "distractor": example.distractor, "seconds": time.perf_counter() - t0}
            self.cache.add(rec)
        scores: dict[str, torch.Tensor] = {}
        attr_seconds: dict[str, float] = {}
        extras: dict[str, dict] = {}
        for v in todo:
            if v.family == "baseline":
                t0 = time.perf_counter()
                res = self.method(v.key).attribute(ids, target=target)
                scores[v.key] = res.scores.float()
                attr_seconds[v.key] = time.perf_counter() - t0
                extras[v.key] = {k: val for k, val in res.extra.items() if isinstance(val, (int, float))}
        heat_todo = [v for v in todo if v.family != "baseline"]
        comp_key = Cache.key(example.dataset, example.id, "__components__")
        cached = self.cache.records.get(comp_key)
        need_fisher = any(v.family == "extra" for v in heat_todo)
        fisher = None
        if heat_todo and cached is not None:  # recombine the stored M, S, I: no recomputation
            t0 = time.perf_counter()
            keep = torch.tensor(cached["transition"], dtype=torch.float32)
            transitions = gate_options(keep, cached["auto_sinks"])
            parts = Components(transitions["keep"], torch.tensor(cached["curvature"], dtype=torch.float32),
                               torch.tensor(cached["information"], dtype=torch.float32), None)
            if need_fisher:
                _, captures = self.heat.forward_with_captures(ids[None], torch.ones_like(ids)[None])
                fisher = self.fisher_curvature(ids, target, captures)
            shared, diag = time.perf_counter() - t0, {"components": "cached"}
        elif heat_todo:
            t0 = time.perf_counter()
            heat = self.heat
            logits_h, captures = heat.forward_with_captures(ids[None], torch.ones_like(ids)[None])
            transitions, diag = sink_transitions(captures)
            parts = heat.components(ids, target, captures, logits_h[0], transition=transitions["keep"])
            if need_fisher:
                fisher = self.fisher_curvature(ids, target, captures)
            shared = time.perf_counter() - t0
            # M (sink kept, normalised), S, I: other gates can be scored later without HEAT
            self.cache.add({**base, "key": comp_key, "method": "__components__",
                            "transition": rounded(transitions["keep"]), "curvature": rounded(parts.curvature),
                            "information": rounded(parts.information), "auto_sinks": diag["auto_sinks"]})
        if heat_todo:
            diag = {**diag, "components_seconds": dict(parts.cost.seconds)}
            scores.update(recombine(parts, transitions, [v for v in heat_todo if v.family != "extra" or
                                                         fisher is not None], fisher))
            for v in heat_todo:
                attr_seconds[v.key] = shared
                extras[v.key] = dict(diag)
        computed: dict[tuple, dict[str, float]] = {}  # identical scores up to a positive factor -> same metrics
        for v in todo:
            if v.key not in scores:
                continue
            t0 = time.perf_counter()
            metrics = self.scorer.free_metrics(scores[v.key], example)
            if v.model_metrics:
                sig = score_signature(scores[v.key])
                if sig not in computed:
                    computed[sig] = self.scorer.model_metrics(scores[v.key], x, target)
                metrics.update(computed[sig])
            self.cache.add({**base, "key": Cache.key(example.dataset, example.id, v.key), "method": v.key,
                            "metrics": metrics, "scores": rounded(scores[v.key]), "extra": extras.get(v.key, {}),
                            "attr_seconds": attr_seconds[v.key], "metric_seconds": time.perf_counter() - t0})
        for key, names in missing.items():  # metrics added since the row was cached: from its cached scores
            rec = self.cache.records[Cache.key(example.dataset, example.id, key)]
            added = self.scorer.model_metrics(torch.tensor(rec["scores"]), x, target, names=names)
            self.cache.add({**rec, "metrics": {**rec["metrics"], **added}})
        self.cache.add({**base, "key": Cache.key(example.dataset, example.id, f"__time__{time.time():.0f}"),
                        "method": "__time__", "seconds": time.perf_counter() - t_example, "computed": len(todo)})
        return len(todo)

    def fisher_curvature(self, ids: torch.Tensor, target: int, captures: list) -> torch.Tensor:
        """(n,) S with ``curvature="fisher"`` (the run's HEAT settings otherwise)."""
        fisher = {"name": "fisher", "probes": self.heat.config.curvature.probes}
        heat = HEAT(self.model, self.tokenizer, self.heat.config.replace(curvature=fisher))
        s = heat.curvature(self.scorer.embeds(ids), target, captures, Cost())
        return s.detach().float().cpu()


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
    if model is None and isinstance(cfg.model, tuple):
        model, tokenizer = cfg.model
    ev = Evaluator(cfg, model, tokenizer)
    groups, n_usable, greedy = [], {}, {}
    for name in cfg.datasets:
        all_examples = load_dataset(name, cfg, ev.tokenizer)
        n_usable[name] = len(usable(all_examples, cfg.max_tokens))
        groups.append(select_examples(all_examples, cfg.limit, cfg.max_tokens, cfg.seed))
    examples = interleave(groups)
    if cfg.report_only:  # every example that has started; rows missing on some are listed in the report
        examples = [e for e in examples if ev.cache.has(Cache.key(e.dataset, e.id, "__reference__"))]
    bar = None
    if cfg.progress and not cfg.report_only:
        bar = tqdm(total=len(examples), desc="heat eval", unit="example")
    for e in examples:
        if not cfg.report_only:
            ev.run_example(e)
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"{e.dataset}/{e.id}")
    if bar is not None:
        bar.close()
    rows = ev.variants
    wanted = {(e.dataset, e.id) for e in examples}
    records = [r for r in ev.cache.records.values() if (r["dataset"], r["example"]) in wanted]
    for name in cfg.datasets:
        refs = [r for r in records if r["dataset"] == name and r["method"] == "__reference__"]
        greedy[name] = f"{sum(1 for r in refs if r.get('greedy_match'))}/{len(refs)}"
    summary = summarize(records, cfg, rows)
    sink, _ = best_sink(summary, cfg)
    figure_sink = sink if sink in SINKS else "auto"  # a proposed option is not a HEATConfig choice
    figures = (draw_figures(ev.model, ev.tokenizer, Path(cfg.out_dir), figure_sink, cfg.probes, cfg.seed)
               if cfg.figures else [])
    model_name = cfg.model if isinstance(cfg.model, str) else type(ev.model).__name__
    param = next(ev.model.parameters())
    meta = {"model_name": MODEL_NAMES.get(model_name, model_name), "dtype": str(param.dtype).removeprefix("torch."),
            "device": param.device.type, "threads": torch.get_num_threads(), "machine": machine,
            "usable": n_usable, "greedy_match": greedy, "data_paths": data_paths,
            "wall_seconds": time.perf_counter() - t_start, "figures": figures, "figure_sink": figure_sink,
            "command": command or "heat eval"}
    write_report(summary, cfg, rows, cfg.report_path, meta)
    return cfg.report_path
