"""The paper's evaluation (Tables 1, 2, 5, 7; §5.1 DSA) reproduced on any model: ``heat eval`` / :func:`run`.

Methods × datasets, every metric from :mod:`heat_module.metrics`, seeded, with bootstrap 95 % intervals:

- datasets (paths are arguments; defaults are the shared copies): LongRA (ReAGent's long-range agreement prompts,
  all ``longra_*.jsonl`` merged and de-duplicated, given single-token target), TellMeWhy and WikiBio (ReAGent's
  benchmark prompts, greedy next token), the curated NarrativeQA ⊕ SciQ set (gold = the important-word tokens of
  the SciQ support, distractor = the narrative's tokens, target = the first answer token). Loaded through the
  data modules of :mod:`heat_module.data`, so token mapping is the same as in ``heat test``.
- metrics: Soft-NC / Soft-NS (ReAGent's definition; raw mean and ln(mean / mean of the metric's own random scores),
  ReAGent's summary), AOPC (ERASER), DSA and F1 of the top-|gold| tokens (curated set), and on LongRA the share of
  attribution mass on the distractor sentence ("distractor mass", lower is better).
- methods: the baselines of :mod:`heat_module.baselines`, and HEAT, whose per-token components M, S, I are
  computed **once** per example and recombined (:func:`heat_module.heat.combine`) for every attention-sink option
  of M (``keep`` / ``first`` / ``auto``, and the ``auto-median`` proposal of :func:`gate_options`), the Table 5
  ablations and the Table 7 β/γ sweep. Rows whose scores are equal up to a positive factor share one metric
  evaluation (:func:`score_signature`).

Resumable: every (dataset, example, method) result is one line of a JSON-lines cache; a re-run skips the lines it
finds (same model and metric settings) and computes only what is missing — raising ``limit`` extends the run,
because examples are taken in a fixed seeded order; a new HEAT row is recombined from the stored components
without running HEAT again. Examples of the four datasets are interleaved so a partial run covers all of them.
The report (markdown, tables shaped like the paper's) and PNG heatmaps of HEAT on three prompts written for this
evaluation (paper Figures 4–6 style) are rebuilt from the cache at the end of every run (``report_only`` rebuilds
them without computing anything).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

SHARED = Path(os.environ.get("HEAT_SHARED_DATA", "/work/shared/data"))
DEFAULT_LONGRA = str(SHARED / "reagent/derived/longra_*.jsonl")
DEFAULT_TELLMEWHY = str(SHARED / "reagent/data/benchmark/tellmewhy2.txt")
DEFAULT_WIKIBIO = str(SHARED / "reagent/data/benchmark/wikitext.txt")
DEFAULT_CURATED = str(SHARED / "heta/heta_qa_dataset_100_unique.json")
DATASETS = ("longra", "tellmewhy", "wikibio", "curated")
DATASET_TITLES = {"longra": "LongRA", "tellmewhy": "TellMeWhy", "wikibio": "WikiBio", "curated": "Curated"}
BENCHMARKS = ("longra", "tellmewhy", "wikibio")
SINKS = ("keep", "first", "auto")  # the sink options of heat_module.transition
GATE_OPTIONS = SINKS + ("auto-median",)  # plus a proposal evaluated here (see gate_options)

#: the baselines run by default: label -> (registry name, options)
DEFAULT_BASELINES: dict[str, tuple[str, dict]] = {
    "attention_rollout": ("attention_rollout", {}),
    "last_layer_attention": ("last_layer_attention", {}),
    "gradient_norm": ("gradient_norm", {"norm": 2}),
    "input_x_gradient": ("input_x_gradient", {}),
    "input_x_gradient_abs": ("input_x_gradient", {"absolute": True}),
    "integrated_gradients": ("integrated_gradients", {"steps": 16, "method": "gauss_legendre", "baseline": "zero"}),
    "integrated_gradients_mean": ("integrated_gradients", {"steps": 16, "method": "gauss_legendre",
                                                           "baseline": "mean"}),
    "occlusion": ("occlusion", {"measure": "prob"}),
    "random": ("random", {}),
}
BASELINE_TITLES = {
    "attention_rollout": "Attention rollout", "last_layer_attention": "Last-layer attention",
    "gradient_norm": "Gradient norm (L2)", "input_x_gradient": "Input×Gradient", "input_x_gradient_abs":
    "|Input×Gradient|", "integrated_gradients": "Integrated gradients (zero baseline)",
    "integrated_gradients_mean": "Integrated gradients (mean-embedding baseline)", "occlusion": "Occlusion (ΔP)",
    "random": "Random",
}
ABLATIONS = ("transition", "curvature", "information", "no_gate", "uniform_gate")
ABLATION_TITLES = {"full": "HEAT (full)", "transition": "Transition only", "curvature": "Hessian only",
                   "information": "KL only", "no_gate": "No transition gating", "uniform_gate": "Uniform transition"}

#: three prompts written for the figures (not from any data set): (prompt, expected target)
FIGURE_PROMPTS = (
    ("Maria checked the forecast: heavy rain all afternoon. Before leaving the house she grabbed her", "umbrella"),
    ("Tom baked a chocolate cake for his sister's birthday. He lit the candles and the whole family sang happy",
     "birthday"),
    ("The museum guard noticed that the famous painting had been stolen. The police arrested the", "thief"),
)


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class EvalConfig:
    """Settings of one evaluation run.

    Attributes:
        model: ``"smollm2"`` (offline default), an HF folder / id; or a ``(model, tokenizer)`` pair.
        datasets: which of :data:`DATASETS` to run.
        longra: glob of LongRA JSON-lines files (merged, de-duplicated by context and target).
        tellmewhy, wikibio: ReAGent prompt files (one prompt per line).
        curated: the curated JSON file.
        limit: examples per dataset (taken in a seeded random order, so a larger limit extends a run). ≥ 1.
        max_tokens: skip contexts longer than this many tokens (cost of exact HEAT grows with n). ≥ 2.
        seed: seeds example order, metric masks, random scores, HEAT probes and the bootstrap.
        num_masks: Soft-NC / Soft-NS Bernoulli masks per example. ≥ 1.
        bootstrap: bootstrap resamples for the 95 % intervals. ≥ 10.
        baselines: label -> (registry name, options) of the baselines to run.
        heat: run HEAT (all sink options, the ablations and the sweep).
        betas: β values of the Table 7 sweep (γ = 1 − β); 0.5 is the main HEAT row.
        sweep_sinks: sinks whose sweep rows get the model-based metrics (Soft-NC/NS, AOPC); DSA/F1 (free) are
            computed for every sink.
        probes: Rademacher probes m of HEAT's exact curvature.
        fisher: also report HEAT with ``curvature="fisher"`` (an extra, labelled row) when ``scalable`` has it.
        metric_batch_size: rows per forward pass of the model-based metrics.
        threads: ``torch.set_num_threads`` (None: leave as is).
        out_dir: where the cache, the report and the figures go.
        report: the markdown report path (default ``out_dir/RESULTS-eval.md``).
        figures: draw the three PNG heatmaps.
        progress: show a tqdm progress bar.
        report_only: compute nothing; write the report from what the cache holds for the selected examples.
        notes: markdown inserted after the setup section of the report (a discussion written by a person).
    """

    model: Any = "smollm2"
    datasets: list[str] = field(default_factory=lambda: list(DATASETS))
    longra: str = DEFAULT_LONGRA
    tellmewhy: str = DEFAULT_TELLMEWHY
    wikibio: str = DEFAULT_WIKIBIO
    curated: str = DEFAULT_CURATED
    limit: int = 20
    max_tokens: int = 96
    seed: int = 0
    num_masks: int = 8
    bootstrap: int = 1000
    baselines: dict[str, tuple[str, dict]] = field(default_factory=lambda: dict(DEFAULT_BASELINES))
    heat: bool = True
    betas: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.5, 0.8, 1.0])
    sweep_sinks: list[str] = field(default_factory=lambda: list(SINKS))
    probes: int = 1
    fisher: bool = False
    metric_batch_size: int = 64
    threads: int | None = None
    out_dir: str = "eval_out"
    report: str | None = None
    figures: bool = True
    progress: bool = True
    report_only: bool = False
    notes: str | None = None

    def __post_init__(self) -> None:
        bad = [d for d in self.datasets if d not in DATASETS]
        if bad or not self.datasets:
            raise ValueError(f"Expected datasets among {list(DATASETS)}, got {self.datasets!r}")
        for name, low in (("limit", 1), ("max_tokens", 2), ("num_masks", 1), ("bootstrap", 10), ("probes", 1),
                          ("metric_batch_size", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"Expected {name} to be an integer >= {low}, got {value!r}")
        if any(not 0.0 <= float(b) <= 1.0 for b in self.betas):
            raise ValueError(f"Expected betas in [0, 1], got {self.betas!r}")
        bad = [s for s in self.sweep_sinks if s not in SINKS]
        if bad:
            raise ValueError(f"Expected sweep_sinks among {list(SINKS)}, got {self.sweep_sinks!r}")
        for label, spec in self.baselines.items():
            if not (isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[1], dict)):
                raise ValueError(f"Expected baseline {label!r} as (registry name, options dict), got {spec!r}")

    @property
    def report_path(self) -> Path:
        return Path(self.report) if self.report else Path(self.out_dir) / "RESULTS-eval.md"

    @property
    def cache_path(self) -> Path:
        return Path(self.out_dir) / "cache.jsonl"

    def fingerprint(self) -> str:
        """What makes cached results comparable: model, seed, metric settings, HEAT probes, context cap."""
        model = self.model if isinstance(self.model, str) else type(self.model).__name__
        blob = json.dumps({"model": model, "seed": self.seed, "num_masks": self.num_masks, "probes": self.probes,
                           "max_tokens": self.max_tokens, "v": 1}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]


# ---------------------------------------------------------------------------------------------------- data
@dataclass
class EvalExample:
    """One example: context ids, target (-1 = greedy), optional gold / distractor positions."""

    dataset: str
    id: str
    input_ids: list[int]
    target_id: int
    gold: list[int] | None = None
    distractor: list[int] | None = None
    metadata: dict = field(default_factory=dict)


def _from_data_module(dataset: str, examples: Iterable, prefix: str = "") -> list[EvalExample]:
    return [EvalExample(dataset, prefix + e.id, list(e.input_ids), int(e.target_id), e.gold, e.distractor,
                        dict(e.metadata)) for e in examples]


def load_dataset(name: str, cfg: EvalConfig, tokenizer: Any) -> list[EvalExample]:
    """Every usable example of one dataset (before ``limit``), in file order."""
    from heat_module.data import CuratedDataModule, LongRADataModule, TextPromptsDataModule

    if name == "longra":
        files = sorted(glob.glob(cfg.longra)) if any(c in cfg.longra for c in "*?[") else [cfg.longra]
        if not files:
            raise FileNotFoundError(f"Expected LongRA files matching {cfg.longra!r}, got none")
        out, seen = [], set()
        for path in files:
            dm = LongRADataModule(path, tokenizer=tokenizer, skip_bad_examples=True)
            for e in _from_data_module("longra", dm.prepare_examples(), Path(path).stem + ":"):
                key = (tuple(e.input_ids), e.target_id)
                if key not in seen:
                    seen.add(key)
                    out.append(e)
        return out
    if name in ("tellmewhy", "wikibio"):
        dm = TextPromptsDataModule(getattr(cfg, name), tokenizer=tokenizer, skip_bad_examples=True)
        return _from_data_module(name, dm.prepare_examples())
    if name == "curated":
        dm = CuratedDataModule(cfg.curated, tokenizer=tokenizer, skip_bad_examples=True)
        return _from_data_module("curated", dm.prepare_examples())
    raise ValueError(f"Expected a dataset among {list(DATASETS)}, got {name!r}")


def select_examples(examples: Sequence[EvalExample], limit: int, max_tokens: int, seed: int) -> list[EvalExample]:
    """The first ``limit`` examples of at most ``max_tokens`` tokens, in a seeded random order (prefix-stable)."""
    usable = [e for e in examples if 2 <= len(e.input_ids) <= max_tokens]
    order = np.random.default_rng(seed).permutation(len(usable))
    return [usable[i] for i in order[:limit]]


def interleave(groups: Sequence[Sequence[EvalExample]]) -> list[EvalExample]:
    """Round-robin over the datasets so a partial run covers all of them."""
    out = []
    for k in range(max((len(g) for g in groups), default=0)):
        out.extend(g[k] for g in groups if k < len(g))
    return out


# ---------------------------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One row of the report: a baseline, or HEAT recombined from its components.

    ``key`` is the cache key; ``family`` is ``"baseline"``, ``"heat"``, ``"ablation"``, ``"sweep"`` or ``"extra"``;
    ``model_metrics`` says whether the model-based metrics (Soft-NC/NS, AOPC) are computed for it.
    """

    key: str
    family: str
    title: str
    model_metrics: bool = True
    sink: str | None = None
    beta: float = 0.5
    ablation: str = "full"


def heat_key(sink: str, beta: float = 0.5) -> str:
    return f"heat[{sink}]" if beta == 0.5 else f"heat[{sink},b={beta:g}]"


def variants(cfg: EvalConfig) -> list[Variant]:
    """Every row of the run, in report order."""
    out = [Variant(label, "baseline", BASELINE_TITLES.get(label, label)) for label in cfg.baselines]
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
    """M under every sink option from the sink-kept M (n,) and the positions the auto rule flags.

    ``keep``, ``first`` and ``auto`` are :func:`heat_module.transition.transition_from_captures`'s options;
    ``auto-median`` (a proposal evaluated here, not in ``transition.py``) gives the flagged positions the median M of
    the other positions instead of 0, so a sink position that carries content can still be attributed.
    """
    from heat_module.transition import renormalise

    n = keep.numel()
    flagged = sorted({int(i) for i in auto_sinks})
    first, auto, median = keep.clone(), keep.clone(), keep.clone()
    first[0] = 0.0
    auto[flagged] = 0.0
    others = [i for i in range(n) if i not in set(flagged)]
    if flagged and others:
        median[flagged] = keep[others].median()
    return {"keep": renormalise(keep), "first": renormalise(first), "auto": renormalise(auto),
            "auto-median": renormalise(median)}


def sink_transitions(captures: Sequence, attention_mask: torch.Tensor | None = None) -> tuple[dict, dict]:
    """M under every gate option of :func:`gate_options` from ONE rollout, and diagnostics.

    Returns:
        ``({"keep": (n,), "first": (n,), "auto": (n,), "auto-median": (n,)}, {"first_share": share of the
        sink-kept M on position 0, "auto_sinks": positions flagged by the auto rule, "phi_share_first": share of the
        rollout's attention mass on position 0, "norm_ratio_first": position 0's mean value–output norm over the
        context mean})`` for a batch of one.
    """
    from heat_module.transition import transition_from_captures

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


def recombine(parts, transitions: dict[str, torch.Tensor], wanted: Sequence[Variant], fisher_curvature=None
              ) -> dict[str, torch.Tensor]:
    """Scores of every HEAT variant in ``wanted`` from one set of components (eq. 5 and Table 5 / 7)."""
    from heat_module.config import HEATConfig
    from heat_module.heat import Components, combine

    out = {}
    for v in wanted:
        sink = v.sink or "keep"
        curv = fisher_curvature if v.family == "extra" else parts.curvature
        p = Components(transitions[sink], curv, parts.information, None)
        cfg = HEATConfig(beta=v.beta, gamma=round(1.0 - v.beta, 10), ablation=v.ablation)
        out[v.key] = combine(p, cfg).detach().float().cpu()
    return out


# ---------------------------------------------------------------------------------------------------- metrics
class Scorer:
    """The metrics of one example (model-based ones through ``forward_fn``)."""

    def __init__(self, model, cfg: EvalConfig) -> None:
        from heat_module.forward import make_forward_fn

        self.model, self.cfg = model, cfg
        self.forward_fn = make_forward_fn(model)

    def embeds(self, ids: torch.Tensor) -> torch.Tensor:
        from heat_module.forward import embed

        with torch.no_grad():
            return embed(self.model, ids[None]).detach()

    def model_metrics(self, scores: torch.Tensor, x: torch.Tensor, target: int, random_baseline: bool = False
                      ) -> dict[str, float]:
        from heat_module.metrics.functional import aopc, soft_faithfulness

        cfg = self.cfg
        s = scores[None].to(x.device).float()
        soft = soft_faithfulness(s, x, None, self.forward_fn, ("nc", "ns"), "reagent", cfg.num_masks, cfg.seed,
                                 cfg.metric_batch_size, random_baseline)
        out = {k: float(v) for k, v in soft.items() if not k.endswith("log_ratio")}
        out["aopc"] = float(aopc(s, x, None, torch.tensor([target], device=x.device), self.forward_fn,
                                 batch_size=cfg.metric_batch_size))
        return out

    @staticmethod
    def free_metrics(scores: torch.Tensor, example: EvalExample) -> dict[str, float]:
        from heat_module.metrics.functional import dsa, f1_alignment

        out: dict[str, float] = {}
        s = scores[None].float()
        if example.gold:
            out["dsa"] = float(dsa(s, [example.gold], [example.distractor or []]))
            out["f1"] = float(f1_alignment(s, [example.gold])["f1"])
        elif example.distractor:
            out["distractor_mass"] = -float(dsa(s, [[]], [example.distractor]))
        return out


# ---------------------------------------------------------------------------------------------------- cache
class Cache:
    """JSON-lines results keyed by ``dataset/example/method`` (records of another fingerprint are ignored)."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path, self.fingerprint = Path(path), fingerprint
        self.records: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by an interrupted run
                    continue
                if rec.get("fp") == fingerprint:
                    self.records[rec["key"]] = rec

    @staticmethod
    def key(dataset: str, example_id: str, method: str) -> str:
        return f"{dataset}/{example_id}/{method}"

    def has(self, key: str) -> bool:
        return key in self.records

    def add(self, rec: dict) -> None:
        rec = {**rec, "fp": self.fingerprint}
        self.records[rec["key"]] = rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()


def score_signature(scores: torch.Tensor) -> tuple:
    """Scores up to a positive factor (every metric here is invariant to it: they normalise or rank), rounded.

    Two variants with the same signature get the same metric values (the metric draws are per example), so they
    are computed once — e.g. ``sink="auto"`` when it flags exactly position 0 equals ``sink="first"``, and the
    uniform gate equals no gate up to the factor 1/n.
    """
    s = scores.detach().double().cpu()
    top = float(s.abs().max())
    return tuple(round(float(v), 6) for v in (s / top if top > 0 else s))


def _round(values: torch.Tensor) -> list[float]:
    return [float(f"{v:.6g}") for v in values.tolist()]


# ---------------------------------------------------------------------------------------------------- runner
class Evaluator:
    """Runs the variants of :func:`variants` on examples, writing each result to the cache as it finishes."""

    def __init__(self, cfg: EvalConfig, model=None, tokenizer=None) -> None:
        from heat_module.models import load_model

        self.cfg = cfg
        if model is None:
            model, tokenizer = load_model(cfg.model)
        self.model, self.tokenizer = model, tokenizer
        self.scorer = Scorer(model, cfg)
        self.cache = Cache(cfg.cache_path, cfg.fingerprint())
        self.variants = variants(cfg)
        self._methods: dict[str, Any] = {}
        self._heat = None

    def method(self, label: str):
        if label not in self._methods:
            from heat_module.baselines import get_method

            name, options = self.cfg.baselines[label]
            options = dict(options)
            if name == "random":
                options.setdefault("seed", self.cfg.seed)
            self._methods[label] = get_method(name)(self.model, self.tokenizer, **options)
        return self._methods[label]

    @property
    def heat(self):
        if self._heat is None:
            from heat_module.config import HEATConfig
            from heat_module.heat import HEAT

            self._heat = HEAT(self.model, self.tokenizer, HEATConfig(probes=self.cfg.probes, seed=self.cfg.seed))
        return self._heat

    def todo(self, example: EvalExample) -> list[Variant]:
        return [v for v in self.variants if not self.cache.has(Cache.key(example.dataset, example.id, v.key))]

    def run_example(self, example: EvalExample) -> int:
        """Compute every missing variant of one example; returns how many were computed."""
        todo = self.todo(example)
        need_ref = not self.cache.has(Cache.key(example.dataset, example.id, "__reference__"))
        if not todo and not need_ref:
            return 0
        t_example = time.perf_counter()
        ids = torch.tensor(example.input_ids, dtype=torch.long, device=next(self.model.parameters()).device)
        x = self.scorer.embeds(ids)
        target = example.target_id
        greedy = None
        with torch.no_grad():
            from heat_module.forward import next_token_logits

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
                   "metrics": {"soft_nc_random": ref["soft_nc_random"], "soft_ns_random": ref["soft_ns_random"],
                               "soft_nc_uniform": ref["soft_nc"], "soft_ns_uniform": ref["soft_ns"],
                               "aopc_uniform": ref["aopc"]},
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
            from heat_module.heat import Components

            t0 = time.perf_counter()
            keep = torch.tensor(cached["transition"], dtype=torch.float32)
            transitions = gate_options(keep, cached["auto_sinks"])
            parts = Components(transitions["keep"], torch.tensor(cached["curvature"], dtype=torch.float32),
                               torch.tensor(cached["information"], dtype=torch.float32), None)
            if need_fisher:
                logits_h, captures = self.heat._forward(ids[None], torch.ones_like(ids)[None])
                fisher = self._fisher_curvature(ids, target, captures, logits_h[0])
            shared, diag = time.perf_counter() - t0, {"components": "cached"}
        elif heat_todo:
            t0 = time.perf_counter()
            heat = self.heat
            logits_h, captures = heat._forward(ids[None], torch.ones_like(ids)[None])
            transitions, diag = sink_transitions(captures)
            parts = heat.components(ids, target, captures, logits_h[0], transition=transitions["keep"])
            if need_fisher:
                fisher = self._fisher_curvature(ids, target, captures, logits_h[0])
            shared = time.perf_counter() - t0
            if cached is None:  # M (sink kept, normalised), S, I: other gates can be scored later without HEAT
                self.cache.add({**base, "key": comp_key, "method": "__components__",
                                "transition": _round(transitions["keep"]), "curvature": _round(parts.curvature),
                                "information": _round(parts.information), "auto_sinks": diag["auto_sinks"]})
        if heat_todo:
            diag = {**diag, "components_seconds": parts.cost.get("seconds", {})}
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
                            "metrics": metrics, "scores": _round(scores[v.key]), "extra": extras.get(v.key, {}),
                            "attr_seconds": attr_seconds[v.key], "metric_seconds": time.perf_counter() - t0})
        self.cache.add({**base, "key": Cache.key(example.dataset, example.id, f"__time__{time.time():.0f}"),
                        "method": "__time__", "seconds": time.perf_counter() - t_example, "computed": len(todo)})
        return len(todo)

    def _fisher_curvature(self, ids, target, captures, logits) -> torch.Tensor | None:
        """(n,) S with ``curvature="fisher"`` (HEATConfig defaults otherwise), or None without ``scalable``."""
        try:
            from heat_module import scalable  # noqa: F401
            from heat_module.heat import HEAT
        except ImportError:
            log.warning("curvature='fisher' needs heat_module.scalable, which is not available: skipping the rows")
            return None
        heat = HEAT(self.model, self.tokenizer, self.heat.config.replace(curvature="fisher"))
        x = self.scorer.embeds(ids)
        s = heat.curvature(x, target, captures, logits, {"forward_passes": 0, "hvps": 0, "gradients": 0})
        return s.detach().float().cpu()


# ---------------------------------------------------------------------------------------------------- statistics
def bootstrap_ci(values: Sequence[float], resamples: int, seed: int,
                 statistic: Callable[[np.ndarray], float] | None = None) -> tuple[float, float, float]:
    """(estimate, low, high): the statistic (default: mean) and its percentile 95 % bootstrap interval."""
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
    """ln(mean(method) / mean(random)) with a paired bootstrap interval (NaN when a mean is ≤ 0)."""
    pairs = np.stack([np.asarray(method, float), np.asarray(random, float)], axis=1)

    def stat(p: np.ndarray) -> float:
        m, r = p[:, 0].mean(), p[:, 1].mean()
        return math.log(m / r) if m > 0 and r > 0 else math.nan

    return bootstrap_ci(pairs, resamples, seed, stat)


@dataclass
class Summary:
    """Per (dataset, method, metric): (estimate, low, high) and the example count."""

    cells: dict[tuple[str, str, str], tuple[float, float, float]]
    counts: dict[tuple[str, str], int]
    facts: dict[str, Any]


def summarize(records: Iterable[dict], cfg: EvalConfig, rows: Sequence[Variant]) -> Summary:
    """Means and bootstrap intervals from cache records (only examples where every listed row is present)."""
    by: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)  # (dataset, method) -> example -> metrics
    refs: dict[str, dict[str, dict]] = defaultdict(dict)
    seconds, extras, components = [], defaultdict(list), []
    for rec in records:
        if rec["method"] == "__reference__":
            refs[rec["dataset"]][rec["example"]] = rec
        elif rec["method"] == "__time__":
            seconds.append(rec["seconds"])
        elif rec["method"] == "__components__":
            components.append(rec)
        else:
            by[(rec["dataset"], rec["method"])][rec["example"]] = rec
            for k, v in (rec.get("extra") or {}).items():
                extras[(rec["dataset"], rec["method"], k)].append(v)
    cells: dict[tuple[str, str, str], tuple[float, float, float]] = {}
    counts: dict[tuple[str, str], int] = {}
    for dataset in cfg.datasets:
        for v in rows:
            recs = by.get((dataset, v.key), {})
            ex_ids = sorted(e for e in recs if e in refs[dataset])
            counts[(dataset, v.key)] = len(ex_ids)
            if not ex_ids:
                continue
            names = sorted({k for e in ex_ids for k in recs[e]["metrics"]})
            for metric in names:
                vals = [recs[e]["metrics"].get(metric, math.nan) for e in ex_ids]
                vals_f = [x for x in vals if x is not None and math.isfinite(x)]
                cells[(dataset, v.key, metric)] = bootstrap_ci(vals_f, cfg.bootstrap, cfg.seed)
            for kind in ("nc", "ns"):
                if f"soft_{kind}" in names:
                    m = [recs[e]["metrics"][f"soft_{kind}"] for e in ex_ids]
                    r = [refs[dataset][e]["metrics"][f"soft_{kind}_random"] for e in ex_ids]
                    cells[(dataset, v.key, f"soft_{kind}_log_ratio")] = log_ratio_ci(m, r, cfg.bootstrap, cfg.seed)
    for dataset in cfg.datasets:
        rr = list(refs[dataset].values())
        for kind in ("nc", "ns"):
            cells[(dataset, "__metric_random__", f"soft_{kind}")] = bootstrap_ci(
                [r["metrics"][f"soft_{kind}_random"] for r in rr], cfg.bootstrap, cfg.seed)
        counts[(dataset, "__metric_random__")] = len(rr)
    facts = {"compute_seconds": float(sum(seconds)), "extras": extras, "refs": refs, "components": components}
    return Summary(cells, counts, facts)


# ---------------------------------------------------------------------------------------------------- report
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


def _mean_over(summary: Summary, datasets: Sequence[str], key: str, metric: str) -> float:
    """Mean over ``datasets`` of the per-dataset means (NaN when none has the metric)."""
    vals = [summary.cells.get((d, key, metric), (math.nan,))[0] for d in datasets]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def _num(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "–"


def best_sink(summary: Summary, cfg: EvalConfig) -> tuple[str, dict[str, dict[str, float]]]:
    """The sink option with the best mean rank over Soft-NC, Soft-NS, AOPC (benchmarks) and DSA (curated)."""
    bench = [d for d in cfg.datasets if d in BENCHMARKS]
    table: dict[str, dict[str, float]] = {}
    for s in GATE_OPTIONS:
        key = heat_key(s)
        table[s] = {"soft_nc": _mean_over(summary, bench, key, "soft_nc"),
                    "soft_ns": _mean_over(summary, bench, key, "soft_ns"),
                    "aopc": _mean_over(summary, bench, key, "aopc"),
                    "dsa": _mean_over(summary, ["curated"], key, "dsa")}
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


def write_report(summary: Summary, cfg: EvalConfig, rows: Sequence[Variant], path: Path, meta: dict) -> str:
    """The markdown report (tables shaped like the paper's; every number with its bootstrap 95 % interval)."""
    c = summary.cells
    datasets = list(cfg.datasets)
    bench = [d for d in datasets if d in BENCHMARKS]
    sink, sink_table = best_sink(summary, cfg)
    main_rows = [v for v in rows if v.family in ("baseline", "heat", "extra")]
    n_of = {d: summary.counts.get((d, "__metric_random__"), 0) for d in datasets}
    out = [f"# HEAT evaluation on {meta.get('model_name', cfg.model)}", ""]
    out += [
        "Reproduction of the paper's evaluation (Tables 1, 2, 5, 7; §5.1 DSA) with `heat eval` "
        "(`heat_module/evaluation.py`; `benchmarks/eval_paper.py`). Numbers are means over examples with "
        "percentile bootstrap 95 % intervals in brackets "
        f"({cfg.bootstrap} resamples, seed {cfg.seed}).", "",
        "## Setup", "",
        f"- **Model:** {meta.get('model_name', cfg.model)} (fp32, CPU), {meta.get('threads', '?')} torch thread(s).",
        "- **Data** (examples used / usable after the length cap): " + "; ".join(
            f"{DATASET_TITLES[d]} {n_of[d]} / {meta.get('usable', {}).get(d, '?')}" for d in datasets) + ".",
        f"  Context cap {cfg.max_tokens} tokens; examples taken in a seeded random order (seed {cfg.seed}).",
        f"  LongRA: `{cfg.longra}` merged and de-duplicated, target = the given analogy word (single-token targets "
        "for this tokenizer only); the model's greedy token equals it on "
        f"{meta.get('greedy_match', {}).get('longra', '?')} of the LongRA examples. TellMeWhy `{cfg.tellmewhy}` and "
        f"WikiBio `{cfg.wikibio}`: target = greedy next token. Curated `{cfg.curated}`: target = first answer token, "
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
        "- **Baselines:** " + ", ".join(f"{BASELINE_TITLES.get(k, k)} (`{n}` {o or ''})".replace(" {}", "")
                                          for k, (n, o) in cfg.baselines.items()) + ".",
        f"- **Compute:** {summary.facts['compute_seconds'] / 60:.1f} min of example time in total "
        f"(over all resumed runs; this run's wall time {meta.get('wall_seconds', 0) / 60:.1f} min) on a shared "
        "2-core CPU.", "",
    ]
    short = [f"{v.title} on {DATASET_TITLES[d]} ({summary.counts.get((d, v.key), 0)} of {n_of[d]})"
             for d in datasets for v in rows if summary.counts.get((d, v.key), 0) < n_of[d]]
    if short:
        out += ["**Incomplete rows** (computed on fewer examples than the others): " + "; ".join(short) + ".", ""]
    if cfg.notes:
        out += [cfg.notes.strip(), ""]
    # ---- Table 2 shape
    out += ["## Faithfulness on the benchmarks (Table 2 shape)", "",
            "Soft-NC and Soft-NS raw means, higher is better. The paper's numbers (GPT-J 6B etc.) are on another "
            "scale and other models; compare rankings, not values.", ""]
    header = ["Method"] + [f"{DATASET_TITLES[d]} {m}" for d in bench for m in ("Soft-NC", "Soft-NS")]
    table_rows = []
    for v in main_rows:
        table_rows.append([v.title] + [_fmt(c.get((d, v.key, m))) for d in bench for m in ("soft_nc", "soft_ns")])
    table_rows.append(["(metric's own random scores)"] + [
        _fmt(c.get((d, "__metric_random__", m))) for d in bench for m in ("soft_nc", "soft_ns")])
    out += [_table(header, table_rows), ""]
    out += ["ln(method / random) — ReAGent's summary (0 = random, higher is better):", ""]
    header = ["Method"] + [f"{DATASET_TITLES[d]} {m}" for d in bench for m in ("ln NC", "ln NS")]
    out += [_table(header, [[v.title] + [_fmt(c.get((d, v.key, f"soft_{m}_log_ratio"))) for d in bench
                                         for m in ("nc", "ns")] for v in main_rows]), ""]
    out += ["AOPC (ERASER comprehensiveness, P(y) drop; higher is better):", ""]
    header = ["Method"] + [DATASET_TITLES[d] for d in datasets]
    out += [_table(header, [[v.title] + [_fmt(c.get((d, v.key, "aopc"))) for d in datasets] for v in main_rows]), ""]
    # ---- Table 1 shape
    if "curated" in datasets:
        out += ["## Alignment on the curated set (Table 1 shape)", "",
                "DSA = Σ gold share − Σ distractor share ∈ [−1, 1] (the paper's Table 1 is on another scale), "
                "F1 of the top-|gold| tokens.", ""]
        out += [_table(["Method", "DSA", "F1", "Soft-NC", "Soft-NS"],
                       [[v.title] + [_fmt(c.get(("curated", v.key, m))) for m in ("dsa", "f1", "soft_nc", "soft_ns")]
                        for v in main_rows]), ""]
    if "longra" in datasets:
        out += ["LongRA distractor mass (lower is better):", "",
                _table(["Method", "Distractor mass"], [[v.title, _fmt(c.get(("longra", v.key, "distractor_mass")))]
                                                        for v in main_rows]), ""]
    scale = _scale_note(summary)
    if scale:
        out += [scale, ""]
    ig_note = _completeness_note(summary, rows)
    if ig_note:
        out += [ig_note, ""]
    # ---- sink
    out += ["## The attention sink and the gate M", ""]
    diag = _sink_diagnostics(summary, cfg)
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
    abl_rows = [v for v in rows if v.family in ("heat", "ablation")]
    out += [_table(["Configuration", "Soft-NC", "Soft-NS", "AOPC", "DSA", "F1"],
                   [[v.title] + [_num(_mean_over(summary, bench, v.key, m)) for m in ("soft_nc", "soft_ns", "aopc")]
                    + [_fmt(c.get(("curated", v.key, m))) for m in ("dsa", "f1")] for v in abl_rows]), ""]
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
                _num(_mean_over(summary, bench, key, m)) for m in ("soft_nc", "soft_ns", "aopc")] +
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


def _scale_note(summary: Summary) -> str:
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


def _completeness_note(summary: Summary, rows: Sequence[Variant]) -> str:
    """IG's completeness gap |Σ_i IG_i − (g(X) − g(X'))| relative to |g(X) − g(X')|, per baseline row with it."""
    ex = summary.facts["extras"]
    parts = []
    for v in rows:
        deltas, gaps = [], []
        for (dataset, method, k), vals in ex.items():
            if method != v.key:
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


def _sink_diagnostics(summary: Summary, cfg: EvalConfig) -> dict:
    ex = summary.facts["extras"]
    shares, phi, auto_first, auto_count, nu = [], [], 0, [], []
    seen = set()
    for (dataset, method, k), vals in ex.items():
        if method != heat_key("keep") or (dataset, k) in seen:
            continue
        seen.add((dataset, k))
        if k == "first_share":
            shares += vals
        elif k == "phi_share_first":
            phi += vals
        elif k == "auto_sinks":
            auto_first += sum(1 for s in vals if 0 in s)
            auto_count += [len(s) for s in vals]
        elif k == "norm_ratio_first":
            nu += vals
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


def claims(summary: Summary, cfg: EvalConfig, rows: Sequence[Variant], sink: str) -> list[str]:
    """Plain statements of whether each claim held (HEAT = the best sink option's row)."""
    c = summary.cells
    bench = [d for d in cfg.datasets if d in BENCHMARKS]
    heat = heat_key(sink)
    base = [v.key for v in rows if v.family == "baseline" and v.key != "random"]
    lines = []
    contenders = [(heat, f"HEAT (sink={sink})")] + [(v.key, v.title) for v in rows if v.family == "extra"]
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
        who = BASELINE_TITLES.get(who, who)
        if best > 0:
            verdict = "held" if h >= 2 * best else "did not hold"
            lines.append(f"- {title} on {DATASET_TITLES[d]}: {name} {h:.3f} vs best baseline {best:.3f} ({who}); "
                         f"ratio {h / best:.2f} → **≥ 2× {verdict}**"
                         f"{'' if h >= best else ' (not even the best)'}.")
        else:
            lines.append(f"- {title} on {DATASET_TITLES[d]}: {name} {h:.3f} vs best baseline {best:.3f} ({who}); "
                         f"a ratio is undefined (best baseline ≤ 0); best: **{'yes' if h > best else 'no'}**.")
    for metric, title in (("soft_nc", "Soft-NC"), ("soft_ns", "Soft-NS"), ("dsa", "DSA")):
        where = bench if metric != "dsa" else ["curated"]
        full = _mean_over(summary, where, heat, metric)
        abl = {a: _mean_over(summary, where, f"heat-transition[{sink}]" if a == "transition" else f"heat-{a}", metric)
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
        sweep = {float(b): _mean_over(summary, where, heat_key(sweep_sink, float(b)), metric) for b in cfg.betas}
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


# ---------------------------------------------------------------------------------------------------- figures
def draw_figures(model, tokenizer, out_dir: Path, sink: str, probes: int = 1, seed: int = 0) -> list[dict]:
    """PNG heatmaps of HEAT on :data:`FIGURE_PROMPTS` (greedy target) via ``AttributionResult.save_png``."""
    from heat_module.config import HEATConfig
    from heat_module.heat import HEAT

    heat = HEAT(model, tokenizer, HEATConfig(sink=sink, probes=probes, seed=seed))
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for k, (prompt, _) in enumerate(FIGURE_PROMPTS, 1):
        res = heat.attribute(prompt)
        path = out_dir / f"heat_figure_{k}.png"
        res.save_png(str(path), title=f"HEAT (sink={sink}) — target {res.target!r}")
        figures.append({"path": str(path), "target": res.target,
                        "top": ", ".join(f"{t.strip() or t!r} {s:.3g}" for _, t, s in res.topk(4))})
    return figures


# ---------------------------------------------------------------------------------------------------- entry points
def run(cfg: EvalConfig, model=None, tokenizer=None, command: str | None = None) -> Path:
    """Run (or resume) the evaluation and write the report; returns the report path."""
    t_start = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if model is None and isinstance(cfg.model, tuple):
        model, tokenizer = cfg.model
    ev = Evaluator(cfg, model, tokenizer)
    groups, usable, greedy = [], {}, {}
    for name in cfg.datasets:
        all_examples = load_dataset(name, cfg, ev.tokenizer)
        usable[name] = sum(1 for e in all_examples if 2 <= len(e.input_ids) <= cfg.max_tokens)
        groups.append(select_examples(all_examples, cfg.limit, cfg.max_tokens, cfg.seed))
    examples = interleave(groups)
    if cfg.report_only:  # every example that has started; rows missing on some are listed in the report
        examples = [e for e in examples if ev.cache.has(Cache.key(e.dataset, e.id, "__reference__"))]
    bar = None
    if cfg.progress and not cfg.report_only:
        from tqdm.auto import tqdm

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
    figures = draw_figures(ev.model, ev.tokenizer, Path(cfg.out_dir), sink, cfg.probes, cfg.seed) if cfg.figures \
        else []
    model_name = cfg.model if isinstance(cfg.model, str) else type(ev.model).__name__
    if model_name == "smollm2":
        model_name = "SmolLM2-135M-Instruct"
    meta = {"model_name": model_name, "threads": torch.get_num_threads(), "usable": usable, "greedy_match": greedy,
            "wall_seconds": time.perf_counter() - t_start, "figures": figures, "figure_sink": sink,
            "command": command or "heat eval"}
    write_report(summary, cfg, rows, cfg.report_path, meta)
    return cfg.report_path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="heat eval", description="Reproduce the paper's evaluation (resumable).")
    d = EvalConfig()
    p.add_argument("--model", default=d.model, help="'smollm2' (offline default), an HF folder or id")
    p.add_argument("--datasets", nargs="+", default=d.datasets, choices=DATASETS)
    p.add_argument("--longra", default=d.longra, help="glob of LongRA .jsonl files")
    p.add_argument("--tellmewhy", default=d.tellmewhy)
    p.add_argument("--wikibio", default=d.wikibio)
    p.add_argument("--curated", default=d.curated)
    p.add_argument("--limit", type=int, default=d.limit, help="examples per dataset")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num-masks", type=int, default=d.num_masks)
    p.add_argument("--bootstrap", type=int, default=d.bootstrap)
    p.add_argument("--methods", nargs="*", default=None,
                   help="baselines as label or label=name:key=value,key=value (default: the paper's set)")
    p.add_argument("--no-heat", action="store_true")
    p.add_argument("--betas", nargs="+", type=float, default=d.betas)
    p.add_argument("--sweep-sinks", nargs="*", default=d.sweep_sinks, choices=SINKS)
    p.add_argument("--probes", type=int, default=d.probes)
    p.add_argument("--fisher", action="store_true", help="also report HEAT with curvature='fisher' (extra rows)")
    p.add_argument("--metric-batch-size", type=int, default=d.metric_batch_size)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out-dir", default=d.out_dir)
    p.add_argument("--report", default=None)
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="compute nothing: write the report from the cached examples that are complete")
    return p


def parse_methods(specs: Sequence[str] | None) -> dict[str, tuple[str, dict]]:
    """``["occlusion", "ig16=integrated_gradients:steps=16,baseline=mean"]`` -> baseline specs."""
    if specs is None:
        return dict(DEFAULT_BASELINES)
    out = {}
    for spec in specs:
        label, _, rest = spec.partition("=")
        if not rest:
            if label in DEFAULT_BASELINES:
                out[label] = DEFAULT_BASELINES[label]
            else:
                out[label] = (label, {})
            continue
        name, _, opts = rest.partition(":")
        options = {}
        for item in filter(None, opts.split(",")):
            k, _, val = item.partition("=")
            try:
                options[k] = json.loads(val)
            except json.JSONDecodeError:
                options[k] = val
        out[label] = (name, options)
    return out


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(
        model=args.model, datasets=list(args.datasets), longra=args.longra, tellmewhy=args.tellmewhy,
        wikibio=args.wikibio, curated=args.curated, limit=args.limit, max_tokens=args.max_tokens, seed=args.seed,
        num_masks=args.num_masks, bootstrap=args.bootstrap, baselines=parse_methods(args.methods),
        heat=not args.no_heat, betas=list(args.betas), sweep_sinks=list(args.sweep_sinks), probes=args.probes,
        fisher=args.fisher, metric_batch_size=args.metric_batch_size, threads=args.threads, out_dir=args.out_dir,
        report=args.report, figures=not args.no_figures, progress=not args.no_progress, report_only=args.report_only,
    )


def eval_command(argv: list[str]) -> int:
    """``heat eval [--limit 20] [--out-dir DIR] ...`` (see :func:`build_parser`); resumable via the cache."""
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    report = run(cfg, command="heat eval " + " ".join(argv))
    print(f"Report written to {report}")
    return 0


__all__ = ["EvalConfig", "Evaluator", "Variant", "bootstrap_ci", "eval_command", "run", "summarize", "variants",
           "write_report"]
