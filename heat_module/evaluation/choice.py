"""Is HEAT worth choosing? HEAT's configurations against AttnLRP, occlusion-KL and the gate on cheap methods.

Per example, the components are computed once and cached (:func:`components`): the gate M (one captured forward;
``sink="auto"``), I (eq. 4, zero mask: the same quantity as occlusion with ``measure="kl"``), AttnLRP's relevance,
S with the Fisher curvature and — in a later, separate stage, because it costs most — S with the exact curvature.
Every row of :data:`ROWS` is a function of them (:func:`row_scores`), and its seconds per example are the sum of
the seconds of the components it needs (:func:`row_seconds`).

Metrics (:func:`model_metrics`, :func:`free_metrics`): Soft-NC / Soft-NS as ReAGent defines them and on ranks
(``scores_transform="rank"``: correctness apart from concentration), each over ``len(seeds)`` mask seeds (one mask
per seed); ABPC (area between the deletion and insertion curves of P(y), rank-based); on the sets with gold
tokens (the curated set, annotated LAMBADA) DSA and F1 of the top-|gold| tokens.

The default follows the evidence by :data:`RULE`, fixed before the run (:func:`apply_rule`). The context study
(:func:`run_context`, :data:`CONTEXT_RULE`) chooses again with every metric over the context (``exclude_last=1``),
ABPC with deletion, the generated evidence benchmark as a fourth dataset and the trivial baselines (``last_token``,
``recency`` and ``position_prior``, fitted on a held-apart split) as rows; it shares the cached components.

Resumable: a JSON-lines cache under ``out_dir`` keyed by (dataset, example, what); a re-run computes only what is
missing. Data paths come only from arguments or ``$HEAT_DATA_DIR`` (:class:`ChoiceConfig`).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from heat_module.attribution.registry import build, method_entries, method_entry
from heat_module.baselines.attnlrp import AttnLRP
from heat_module.config import HEATConfig
from heat_module.data.lambada import load_annotated_lambada
from heat_module.data.readers import json_lines
from heat_module.evaluation.cache import rounded
from heat_module.evaluation.config import DATA_DIR_ENV, DATA_FILES, EvalConfig
from heat_module.evaluation.datasets import EvalExample, from_data_module, load_dataset, select_examples
from heat_module.evaluation.variants import sink_transitions
from heat_module.heat.combine import Components, combine
from heat_module.heat.estimator import HEAT
from heat_module.heat.information import information
from heat_module.lm.forward import embed, make_forward_fn, mask_vector
from heat_module.lm.loading import load_model
from heat_module.lm.offload import input_device
from heat_module.metrics.functional import abpc, dsa, f1_alignment, soft_faithfulness
from heat_module.result import Cost

CHOICE_DATASETS = ("longra", "tellmewhy", "wikibio", "curated", "lambada")
BENCHMARKS = ("longra", "tellmewhy", "wikibio")
ALIGNMENT = ("curated", "lambada")
LAMBADA_FILE = "reagent/data/annotated_lambada.json"
TITLES = {"longra": "LongRA", "tellmewhy": "TellMeWhy", "wikibio": "WikiBio", "curated": "Curated",
          "lambada": "LAMBADA (annotated)"}

#: row -> (title, components it needs, how to build it). Components: M (gate), I, A (AttnLRP), SF (Fisher S),
#: SE (exact S). HEAT rows are ``combine`` of (M, S, I) under the HEATConfig given. The cached metrics are keyed by
#: row name, so each row's fields stay exactly what they were when it ran: β and γ are explicit (eq. 5: 0.5 and 0.5;
#: ``m_i``: β = 0, γ = 0.5, which ranks exactly like ``preset("mi")``'s γ = 1), and normalisation is ``"none"`` unless
#: the row names one (:func:`row_scores`), not the library defaults.
EQ5 = {"beta": 0.5, "gamma": 0.5}
ROWS: dict[str, tuple[str, tuple[str, ...], dict]] = {
    "attnlrp": ("AttnLRP", ("A",), {}),
    "occlusion_kl": ("Occlusion-KL (= I, HEATConfig(ablation='information'))", ("I",), {}),
    "m_i": ("M·I (HEATConfig(); β = 0)", ("M", "I"), {"beta": 0.0, "gamma": 0.5}),  # the title as it ran
    "m_attnlrp": ("M·AttnLRP (gated:attnlrp)", ("M", "A"), {}),
    "random": ("Random", (), {}),
    "heat_fisher": ("HEAT, Fisher S, normalize=none", ("M", "I", "SF"), {"curvature": "fisher", **EQ5}),
    "heat_fisher_sum": ("HEAT, Fisher S, normalize=sum", ("M", "I", "SF"),
                        {"curvature": "fisher", "normalize": "sum", **EQ5}),
    "heat_fisher_rank": ("HEAT, Fisher S, normalize=rank", ("M", "I", "SF"),
                         {"curvature": "fisher", "normalize": "rank", **EQ5}),
    "heat_exact": ("HEAT eq. 5 (exact S, normalize=none; the default before this study)", ("M", "I", "SE"), {**EQ5}),
    "heat_exact_sum": ("HEAT, exact S, normalize=sum", ("M", "I", "SE"), {"normalize": "sum", **EQ5}),
    "heat_exact_rank": ("HEAT, exact S, normalize=rank", ("M", "I", "SE"), {"normalize": "rank", **EQ5}),
}
#: rows computed by a method of the registry through its public ``attribute``, row -> (registry name, options): the
#: model-free priors whose registry entries declare evaluation rows (``last_token``, ``recency``), so every method is
#: shown beside them. They need no component, and their seconds count as 0 (no model).
PRIOR_ROWS: dict[str, tuple[str, dict]] = {
    label: (name, dict(options)) for name, entry in method_entries().items() if not entry.uses_model
    for label, (_, options) in entry.evaluation.items() if label not in ROWS}
ROWS.update({label: (method_entry(name).evaluation[label][0], (), {}) for label, (name, _) in PRIOR_ROWS.items()})
CHEAP_ROWS = tuple(r for r, (_, need, _) in ROWS.items() if "SE" not in need)
EXACT_ROWS = tuple(r for r, (_, need, _) in ROWS.items() if "SE" in need)
#: the HEAT configurations the rule chooses among (gate on, eq. 5's structure; β = 0 included)
CANDIDATES = ("heat_exact", "heat_exact_sum", "heat_exact_rank", "heat_fisher", "heat_fisher_sum",
              "heat_fisher_rank", "m_i")
#: the paired differences reported: HEAT eq. 5 with exact S (``heat_exact``, the default before this study) minus
#: each of these
COMPARED = ("attnlrp", "occlusion_kl", "m_i", "m_attnlrp")
RULE_METRICS = ("soft_nc", "soft_ns", "abpc")
MAX_COST_RATIO = 20.0
MIN_EXAMPLES = 15

RULE = f"""**Decision rule (fixed before the run).** `HEATConfig()` becomes the HEAT configuration with the best mean
rank over (Soft-NC, Soft-NS, ABPC) × (LongRA, TellMeWhy, WikiBio) — 9 ranks, 1 = best, each a rank of the
configurations' means on one benchmark — among the candidates {', '.join(f'`{c}`' for c in CANDIDATES)}
(the gate on and eq. 5's structure; `m_i` is β = 0) whose mean seconds per example over the benchmark examples is at
most {MAX_COST_RATIO:g}× AttnLRP's. Ties go to the cheaper one. The rule is applied only when every candidate has the
three metrics on at least {MIN_EXAMPLES} examples of each benchmark; otherwise the default stays and the evidence is
reported. `HEATConfig.preset("paper")` keeps eq. 5 with its M whatever the outcome."""


@dataclass
class ChoiceConfig:
    """Settings of one run.

    Attributes:
        model: ``"smollm2"`` or an HF folder / id, or a ``(model, tokenizer)`` pair.
        datasets: which of :data:`CHOICE_DATASETS`.
        paths: dataset -> file (LongRA: glob); missing ones come from ``$HEAT_DATA_DIR``.
        limits: dataset -> examples (seeded random order, prefix-stable); a dataset not listed: all.
        exact_limits: dataset -> examples that also get the exact S (the first ones of ``limits``); not listed: 0.
        max_tokens: contexts longer than this are skipped.
        seeds: the mask seeds of Soft-NC/NS (one Bernoulli mask per seed).
        rank_seeds: the mask seeds of Soft-NC/NS on ranks (``scores_transform="rank"``).
        abpc_steps: T of ABPC (2 (T − 1) forward rows per example and row).
        bootstrap: resamples of the 95 % intervals.
        metric_batch_size: rows per forward of the metrics.
        out_dir: cache and report folder.
        threads: ``torch.set_num_threads`` (None: leave).
        cache_name: this process's cache file in ``out_dir`` (``cache*.jsonl``; every such file is read).
        wait_for_components: ``"exact"`` stage: wait up to this many seconds per example for another process (the
            ``"cheap"`` stage running at the same time) to store its components, instead of computing them twice.
        start: skip the first ``start`` examples of the interleaved order (a second process can then work on a
            later part of the same order at the same time; both append to their own cache files).
        stop: end of this process's part of the interleaved order (exclusive; None: to the end).
        held_apart: context study: LongRA and generated examples held apart (after the evaluated ones) to fit the
            recency rate and the position prior; never evaluated.
    """

    model: Any = "smollm2"
    datasets: list[str] = field(default_factory=lambda: list(CHOICE_DATASETS))
    paths: dict[str, str] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=lambda: {"longra": 50, "curated": 50})
    exact_limits: dict[str, int] = field(default_factory=dict)
    max_tokens: int = 96
    seeds: tuple[int, ...] = (0, 1, 2)
    rank_seeds: tuple[int, ...] = (0,)
    abpc_steps: int = 4
    bootstrap: int = 1000
    metric_batch_size: int = 32
    out_dir: str = "choice_out"
    threads: int | None = None
    cache_name: str = "cache.jsonl"
    wait_for_components: float = 0.0
    start: int = 0
    stop: int | None = None
    held_apart: int = 10

    def __post_init__(self) -> None:
        bad = [d for d in self.datasets if d not in CHOICE_DATASETS + ("evidence",)]
        if bad or not self.datasets:
            raise ValueError(f"Expected datasets among {list(CHOICE_DATASETS) + ['evidence']} (evidence: the context "
                             f"study only), got {self.datasets!r}")
        if not self.seeds:
            raise ValueError(f"Expected at least one mask seed, got {self.seeds!r}")

    def path(self, dataset: str) -> str:
        """The data file of ``dataset``: ``paths[dataset]`` or under ``$HEAT_DATA_DIR`` (error naming both)."""
        if dataset in self.paths:
            return str(self.paths[dataset])
        root = os.environ.get(DATA_DIR_ENV)
        rel = LAMBADA_FILE if dataset == "lambada" else DATA_FILES[dataset]
        if not root:
            raise ValueError(f"Expected the path of dataset {dataset!r} (paths={{{dataset!r}: ...}}) or the "
                             f"environment variable {DATA_DIR_ENV} (a folder holding {rel}), got neither")
        return str(Path(root) / rel)

    @property
    def cache_path(self) -> Path:
        return Path(self.out_dir) / self.cache_name


# ------------------------------------------------------------------------------------------------------ data
def load_examples(cfg: ChoiceConfig, tokenizer: Any) -> dict[str, list[EvalExample]]:
    """dataset -> its selected examples (``limits``; seeded order, prefix-stable)."""
    ev = EvalConfig(model="smollm2", **{d: cfg.path(d) for d in cfg.datasets if d != "lambada"})
    out = {}
    for d in cfg.datasets:
        if d == "lambada":
            examples = from_data_module("lambada", load_annotated_lambada(cfg.path(d), tokenizer))
        else:
            examples = load_dataset(d, ev, tokenizer)
        out[d] = select_examples(examples, cfg.limits.get(d, len(examples)), cfg.max_tokens, 0)
    return out


# ------------------------------------------------------------------------------------------------------ cache
class JsonCache:
    """JSON lines keyed by ``key``, read from every ``cache*.jsonl`` of a folder (so processes running different
    stages at once each append to their own file and see the others' lines after :meth:`refresh`); the last line of
    a key wins; a line cut by an interrupted run is skipped.

    Args:
        path: the file this process appends to (its folder holds the others).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read every cache file of the folder (this process's own lines are already in memory)."""
        if not self.path.parent.exists():
            return
        for file in sorted(self.path.parent.glob("cache*.jsonl")):
            for _, _, rec in json_lines(file):  # a line cut by an interrupted run reads as None: skipped
                if isinstance(rec, dict):
                    self.records.setdefault(rec["key"], rec)

    def add(self, rec: dict) -> None:
        self.records[rec["key"]] = rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")


def _key(example: EvalExample, what: str) -> str:
    return f"{example.dataset}/{example.id}/{what}"


def _floats(t: torch.Tensor) -> list[float]:
    return rounded(t.float(), digits=7)


# ------------------------------------------------------------------------------------------------------ components
def components(model: nn.Module, tokenizer: Any, example: EvalExample, exact: bool = False) -> dict:
    """The cached components of one example: ``M`` (sink ``auto``), ``I``, ``A`` (AttnLRP), ``SF`` (Fisher S) —
    or with ``exact`` only ``SE`` (exact S) — and the seconds each took (``seconds``; ``fwd`` is the captured
    forward that M, I and S share)."""
    ids = torch.tensor(example.input_ids, dtype=torch.long, device=input_device(model))
    heat = HEAT(model, tokenizer, HEATConfig.preset("exact" if exact else "fisher"))  # S of eq. 5 (β = 0.5)
    sec: dict[str, float] = {}
    t0 = time.perf_counter()
    logits, caps = heat.forward_with_captures(ids[None], torch.ones_like(ids)[None])
    sec["fwd"] = time.perf_counter() - t0
    target = example.target_id if example.target_id >= 0 else int(logits[0].argmax())
    x = embed(model, ids[None]).detach()
    rec: dict[str, Any] = {"target": target}
    if exact:
        t0 = time.perf_counter()
        rec["SE"] = _floats(heat.curvature(x, target, caps, Cost()))
        sec["SE"] = time.perf_counter() - t0
        rec["seconds"] = sec
        return rec
    logp = torch.log_softmax(logits[0].float(), -1)
    rec.update(greedy=int(logits[0].argmax()), target_logprob=float(logp[target]))
    t0 = time.perf_counter()
    transitions, diag = sink_transitions(caps)
    rec["M"], rec["auto_sinks"] = _floats(transitions["auto"]), diag["auto_sinks"]
    sec["M"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec["I"] = _floats(information(model, x, caps, logp, None, mask_vector(model, "zero"), 8))
    sec["I"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec["SF"] = _floats(heat.curvature(x, target, caps, Cost()))
    sec["SF"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec["A"] = _floats(AttnLRP(model, tokenizer).attribute(ids, target=target).scores)
    sec["A"] = time.perf_counter() - t0
    rec["seconds"] = sec
    return rec


def row_scores(row: str, comp: dict, seed: int = 0) -> torch.Tensor:
    """(n,) scores of ``row`` from an example's components (``comp`` holds ``M``, ``I``, ``A``, ``SF``, ``SE``); a
    row of :data:`PRIOR_ROWS` is its method's ``attribute`` instead (:func:`run_choice`)."""
    if row in PRIOR_ROWS:
        raise ValueError(f"Expected a row computed from components, got {row!r}, a registry method's row "
                         "(its scores come from its attribute)")
    _, need, cfg = ROWS[row]
    t = {k: torch.tensor(comp[k], dtype=torch.float32) for k in ("M", "I", "A", "SF", "SE") if k in comp}
    if row == "random":
        g = torch.Generator().manual_seed(seed * 1_000_003 + len(comp["M"]) * 7919 + int(comp.get("target", 0)))
        return torch.rand(len(comp["M"]), generator=g)
    if row == "attnlrp":
        return t["A"]
    if row == "occlusion_kl":
        return t["I"]
    if row == "m_attnlrp":
        return t["M"] * t["A"]
    s = t.get("SE") if "SE" in need else t.get("SF")
    # the fields a row leaves out are those of the configuration it ran under (β = 0, γ = 1, no normalisation)
    fields = {"beta": 0.0, "gamma": 1.0, "normalize": "none", **{k: v for k, v in cfg.items() if k != "curvature"}}
    return combine(Components(t["M"], s, t["I"], None), HEATConfig(**fields))


def row_seconds(row: str, comp: dict) -> float:
    """Seconds per example of ``row``: the seconds of the components it needs (+ the shared captured forward for
    M, I, S)."""
    _, need, _ = ROWS[row]
    sec = comp["seconds"]
    total = sum(sec.get(k, math.nan) for k in need)
    if any(k in need for k in ("M", "I", "SF", "SE")):
        total += sec.get("fwd", 0.0)
    return total


# ------------------------------------------------------------------------------------------------------ metrics
class MemoForward:
    """``forward_fn`` that memoises the last call's logits by input: the metrics' reference rows (original and all
    zeroed) are the same for every row and seed of an example, so they are run once."""

    def __init__(self, model: nn.Module) -> None:
        self.fn = make_forward_fn(model)
        self.memo: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if (self.memo is not None and self.memo[0].shape == x.shape and torch.equal(self.memo[0], x)
                and (mask is None) == (self.memo[1] is None) and (mask is None or torch.equal(self.memo[1], mask))):
            return self.memo[2]
        out = self.fn(x, mask)
        if x.shape[0] <= 2:
            self.memo = (x.clone(), None if mask is None else mask.clone(), out)
        return out


def model_metrics(forward: MemoForward, scores: torch.Tensor, x: torch.Tensor, target: int, cfg: ChoiceConfig
                  ) -> dict[str, Any]:
    """Soft-NC / Soft-NS (``none`` and ``rank``, per seed and their mean) and ABPC of (n,) scores on x (1, n, d)."""
    s = scores[None].float()
    out: dict[str, Any] = {}
    for transform, suffix, seeds in (("none", "", cfg.seeds), ("rank", "_rank", cfg.rank_seeds)):
        per = {"nc": [], "ns": []}
        for seed in seeds:
            v = soft_faithfulness(s, x, None, forward, ("nc", "ns"), "reagent", 1, seed, cfg.metric_batch_size,
                                  False, scores_transform=transform)
            per["nc"].append(float(v["soft_nc"]))
            per["ns"].append(float(v["soft_ns"]))
        for kind in ("nc", "ns"):
            out[f"soft_{kind}{suffix}"] = float(np.mean(per[kind]))
            out[f"soft_{kind}{suffix}_seeds"] = per[kind]
    out["abpc"] = float(abpc(s, x, None, torch.tensor([target]), forward, steps=cfg.abpc_steps,
                             batch_size=cfg.metric_batch_size))
    return out


def free_metrics(scores: torch.Tensor, example: EvalExample) -> dict[str, float]:
    """DSA and F1 of the top-|gold| tokens (examples with gold tokens)."""
    s = scores[None].float()
    return {"dsa": float(dsa(s, [example.gold], [example.distractor or []])),
            "f1": float(f1_alignment(s, [example.gold])["f1"])}


# ------------------------------------------------------------------------------------------------------ run
def run_choice(cfg: ChoiceConfig, stage: str = "cheap", model: nn.Module | None = None, tokenizer: Any = None,
               log: Any = print) -> JsonCache:
    """Compute what the cache lacks for one stage: ``"cheap"`` (components without exact S, and the metrics of
    :data:`CHEAP_ROWS`) or ``"exact"`` (exact S and the metrics of :data:`EXACT_ROWS` on the first
    ``exact_limits[d]`` examples). Examples of the datasets are interleaved, so a partial run covers all."""
    if stage not in ("cheap", "exact"):
        raise ValueError(f"Expected stage 'cheap' or 'exact', got {stage!r}")
    if "evidence" in cfg.datasets:
        raise ValueError("Expected datasets among those of the cheap and exact stages, got 'evidence' (the generated "
                         "benchmark is a dataset of the context study: run_context)")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if model is None:
        model, tokenizer = cfg.model if isinstance(cfg.model, tuple) else load_model(cfg.model)
    cache = JsonCache(cfg.cache_path)
    groups = load_examples(cfg, tokenizer)
    if stage == "exact":
        groups = {d: g[: cfg.exact_limits.get(d, 0)] for d, g in groups.items()}
    order = [g[k] for k in range(max((len(g) for g in groups.values()), default=0)) for g in groups.values()
             if k < len(g)]
    order = order[cfg.start:cfg.stop]
    forward = MemoForward(model)
    priors = {row: build(name, model, tokenizer, **options) for row, (name, options) in PRIOR_ROWS.items()}
    rows = CHEAP_ROWS if stage == "cheap" else EXACT_ROWS
    for i, e in enumerate(order):
        t_example = time.perf_counter()
        cache.refresh()
        ckey = _key(e, "components")
        waited = 0.0
        while stage == "exact" and ckey not in cache.records and waited < cfg.wait_for_components:
            time.sleep(10.0)
            waited += 10.0
            cache.refresh()
        if ckey not in cache.records:
            cache.add({"key": ckey, "n": len(e.input_ids), **components(model, tokenizer, e)})
        comp = dict(cache.records[ckey])
        if stage == "exact":
            ekey = _key(e, "exact")
            if ekey not in cache.records:
                cache.add({"key": ekey, **components(model, tokenizer, e, exact=True)})
            exact = cache.records[ekey]
            comp["SE"] = exact["SE"]
            comp["seconds"] = {**comp["seconds"], "SE": exact["seconds"]["SE"]}
        ids = torch.tensor(e.input_ids, dtype=torch.long, device=input_device(model))
        with torch.no_grad():
            x = embed(model, ids[None]).detach()
        done = 0
        for row in rows:
            mkey = _key(e, f"metrics/{row}")
            if mkey in cache.records:
                continue
            if row in PRIOR_ROWS:
                scores = priors[row].attribute(ids, target=comp["target"]).scores
            else:
                scores = row_scores(row, comp)
            t0 = time.perf_counter()
            metrics = (model_metrics(forward, scores, x, comp["target"], cfg) if e.dataset in BENCHMARKS
                       else free_metrics(scores, e))
            cache.add({"key": mkey, "dataset": e.dataset, "example": e.id, "row": row, "metrics": metrics,
                       "seconds": row_seconds(row, comp), "metric_seconds": time.perf_counter() - t0})
            done += 1
        log(f"[{stage}] {i + 1}/{len(order)} {e.dataset}/{e.id} n={len(e.input_ids)} rows={done} "
            f"{time.perf_counter() - t_example:.1f}s")
    return cache


# ------------------------------------------------------------------------------------------------------ context
# The study of the rule written in the README before its run ("Choosing the default over the context"): every
# faithfulness metric over the context (the final token never perturbed nor ranked), ABPC with the tokens deleted,
# the generated benchmark whose evidence is known as a fourth dataset, and the trivial baselines as rows.
RULE_DATASETS = ("longra", "tellmewhy", "wikibio", "evidence")
CONTEXT_DATASETS = RULE_DATASETS + ALIGNMENT
CONTEXT_METRICS = ("soft_nc", "soft_ns", "abpc_deletion", "recall_evidence")
#: the metrics of the rule on the datasets where each is defined
METRIC_DATASETS = {"soft_nc": RULE_DATASETS, "soft_ns": RULE_DATASETS, "abpc_deletion": RULE_DATASETS,
                   "recall_evidence": ("evidence",)}
EVIDENCE_METRICS = ("recall_evidence", "recall_evidence_noquery", "recall_answer")
#: the baselines every eligible method must beat; ``position_prior`` is the position control
TRIVIAL = ("last_token", "recency")
TITLES["evidence"] = "Evidence (generated)"
#: row -> (title, components it needs, how its scores are made): ``("heat", (preset, changes))`` is
#: ``combine`` of the components under ``HEATConfig.preset(preset, **changes)`` (``None``: ``HEATConfig(**changes)``),
#: ``("registry", name)`` the registry method's ``attribute`` (fitted priors), else the component formula of
#: :func:`context_scores`.
CONTEXT_ROWS: dict[str, tuple[str, tuple[str, ...], tuple]] = {
    "last_token": ("Last token (prior, no model)", (), ("registry", "last_token")),
    "recency": ("Recency prior (rate fitted on the held-apart split)", (), ("registry", "recency")),
    "position_prior": ("Position prior (fitted on the held-apart split)", (), ("registry", "position_prior")),
    "attnlrp": ("AttnLRP", ("A",), ("A",)),
    "m_attnlrp": ("M·AttnLRP (gated:attnlrp)", ("M", "A"), ("M·A",)),
    "occlusion_kl": ("Occlusion-KL (= I)", ("I",), ("I",)),
    "m_i": ("M·I (β = 0, γ = 1; normalize none ≡ sum)", ("M", "I"), ("heat", ("mi", {}))),
    "m_i_rank": ("M·I, normalize=rank", ("M", "I"), ("heat", ("mi", {"normalize": "rank"}))),
    "heat_fisher": ("HEAT eq. 5, Fisher S, normalize=none", ("M", "I", "SF"), ("heat", ("fisher", {}))),
    "heat_fisher_sum": ("HEAT eq. 5, Fisher S, normalize=sum", ("M", "I", "SF"),
                        ("heat", ("fisher", {"normalize": "sum"}))),
    "heat_fisher_rank": ("HEAT eq. 5, Fisher S, normalize=rank", ("M", "I", "SF"),
                         ("heat", ("fisher", {"normalize": "rank"}))),
}
HEAT_CANDIDATES = ("m_i", "m_i_rank", "heat_fisher", "heat_fisher_sum", "heat_fisher_rank")
CONTEXT_CANDIDATES = ("attnlrp", "m_attnlrp", "occlusion_kl") + HEAT_CANDIDATES

CONTEXT_RULE = f"""**Decision rule (fixed before the run, written in the README first).** Four metrics, all over the
context: Soft-NC and Soft-NS (ReAGent, 3 mask seeds) and ABPC with the tokens deleted (T = 4), each with
`exclude_last=1`, on {', '.join(TITLES[d] for d in RULE_DATASETS)}; and evidence recall (top-k, final token left out)
on the generated benchmark. A method **beats** a trivial baseline on a metric when the mean over the metric's datasets
of the per-dataset mean paired difference is above 0 and its 95 % bootstrap interval (examples resampled within each
dataset) lies above 0. **Eligible:** beats both `last_token` and `recency` on at least 3 of the 4 metrics and costs
≤ {MAX_COST_RATIO:g}× AttnLRP (mean seconds per example on the rule's examples). **Ranking** among the eligible of
{', '.join(f'`{c}`' for c in CONTEXT_CANDIDATES)}: each (metric, dataset) cell ranks the means (1 = best, ties
shared); score = mean over the four metrics of the mean rank over that metric's datasets; lowest wins, ties to the
cheaper. Applied only with ≥ {MIN_EXAMPLES} examples per dataset for every candidate. The best eligible method is the
first recommendation; the best eligible HEAT configuration becomes `HEATConfig()`."""


def context_scores(row: str, comp: dict, seed: int = 0) -> torch.Tensor:
    """(n,) scores of a row of :data:`CONTEXT_ROWS` from an example's components (registry rows: their
    ``attribute``, see :func:`run_context`)."""
    kind = CONTEXT_ROWS[row][2]
    if kind[0] == "registry":
        raise ValueError(f"Expected a row computed from components, got {row!r}, a registry method's row")
    if kind[0] == "random":
        return row_scores("random", comp, seed)
    t = {k: torch.tensor(comp[k], dtype=torch.float32) for k in ("M", "I", "A", "SF") if k in comp}
    if kind[0] == "A":
        return t["A"]
    if kind[0] == "I":
        return t["I"]
    if kind[0] == "M·A":
        return t["M"] * t["A"]
    preset, changes = kind[1]
    config = HEATConfig(**changes) if preset is None else HEATConfig.preset(preset, **changes)
    s = t["SF"] if config.beta > 0 else None
    return combine(Components(t["M"], s, t["I"], None), config)


def context_seconds(row: str, comp: dict) -> float:
    """Seconds per example of a row of :data:`CONTEXT_ROWS` (0 for the model-free rows)."""
    need = CONTEXT_ROWS[row][1]
    sec = comp["seconds"]
    total = sum(sec.get(k, math.nan) for k in need)
    if any(k in need for k in ("M", "I", "SF")):
        total += sec.get("fwd", 0.0)
    return total


class RowCacheForward:
    """``forward_fn`` that computes each distinct (embedding row, mask row) once until :meth:`clear`: the metrics'
    reference rows (the original, the context zeroed) recur for every row and seed of an example, and the rows of all
    methods of one example go through one call per chunk."""

    def __init__(self, model: nn.Module) -> None:
        self.fn = make_forward_fn(model)
        self.memo: dict[bytes, torch.Tensor] = {}

    def clear(self) -> None:
        self.memo = {}

    def __call__(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        keys = [x[i].detach().cpu().numpy().tobytes() + b"|" + (b"-" if mask is None else
                mask[i].detach().cpu().numpy().astype(np.int8).tobytes()) for i in range(x.shape[0])]
        todo = list(dict.fromkeys(k for k in keys if k not in self.memo))
        if todo:
            where = [keys.index(k) for k in todo]
            out = self.fn(x[where], None if mask is None else mask[where])
            self.memo.update(zip(todo, out))
        return torch.stack([self.memo[k] for k in keys])


def context_metrics(forward: Any, scores: torch.Tensor, x: torch.Tensor, example: EvalExample, target: int,
                    cfg: ChoiceConfig) -> dict[str, Any]:
    """Over the context (``exclude_last=1``): Soft-NC / Soft-NS per seed and their mean, ABPC with deletion; on the
    generated benchmark also the three evidence recalls (``EVIDENCE_METRICS``). ``scores`` (n,); x (1, n, d)."""
    return context_metrics_batch(forward, scores[None], x, example, target, cfg)[0]


def context_metrics_batch(forward: Any, scores: torch.Tensor, x: torch.Tensor, example: EvalExample, target: int,
                          cfg: ChoiceConfig) -> list[dict[str, Any]]:
    """:func:`context_metrics` of R score vectors (R, n) of one example x (1, n, d) at once (the metrics draw their
    masks per example from its embeddings, so each row gets the draws it would get alone)."""
    from heat_module.metrics.functional.abpc import abpc_values
    from heat_module.metrics.functional.evidence_recall import evidence_recall_values
    from heat_module.metrics.functional.soft_faithfulness import soft_faithfulness_values

    s = scores.float()
    r = s.shape[0]
    xs = x.expand(r, -1, -1)
    out: list[dict[str, Any]] = [{} for _ in range(r)]
    per: dict[str, list[torch.Tensor]] = {"nc": [], "ns": []}
    for seed in cfg.seeds:
        v = soft_faithfulness_values(s, xs, None, forward, kinds=("nc", "ns"), definition="reagent", num_masks=1,
                                     seed=seed, batch_size=cfg.metric_batch_size, random_baseline=False,
                                     exclude_last=1)
        per["nc"].append(v["soft_nc"])
        per["ns"].append(v["soft_ns"])
    ab = abpc_values(s, xs, None, torch.full((r,), target, dtype=torch.long), forward, steps=cfg.abpc_steps,
                     batch_size=cfg.metric_batch_size, exclude_last=1, perturbation="deletion")
    for i in range(r):
        for kind in ("nc", "ns"):
            seeds = [float(t[i]) for t in per[kind]]
            out[i][f"soft_{kind}"] = float(np.mean(seeds))
            out[i][f"soft_{kind}_seeds"] = seeds
        out[i]["abpc_deletion"] = float(ab[i])
    if example.dataset == "evidence":
        c = s.detach().cpu()
        query = [example.metadata["query_tokens"]] * r
        gold = [example.gold] * r
        recalls = {"recall_evidence": evidence_recall_values(c, gold, exclude_last=1),
                   "recall_evidence_noquery": evidence_recall_values(c, gold, exclude_last=1, protected=query),
                   "recall_answer": evidence_recall_values(c, [example.metadata["answer_tokens"]] * r,
                                                           exclude_last=1)}
        for i in range(r):
            out[i].update({k: float(v[i]) for k, v in recalls.items()})
    return out


def evidence_examples(model: nn.Module, tokenizer: Any, count: int, seed: int = 0, generate: int = 2000
                      ) -> list[EvalExample]:
    """The first ``count`` generated items (``heat_module.data.evidence``, seeded) that ``model`` answers right, as
    examples (target: the answer's first token; gold: the evidence tokens)."""
    from heat_module.data.evidence import generate_evidence_items, keep_answered, to_example

    kept = []
    for item in generate_evidence_items(generate, seed=seed):
        if len(kept) >= count:
            break
        if keep_answered([item], model, tokenizer):
            kept.append(to_example(item, tokenizer))
    if len(kept) < count:
        raise ValueError(f"Expected {count} generated items the model answers right, got {len(kept)} of {generate}")
    return from_data_module("evidence", kept)


def context_examples(cfg: ChoiceConfig, model: nn.Module, tokenizer: Any
                     ) -> tuple[dict[str, list[EvalExample]], list[EvalExample]]:
    """(dataset -> the evaluated examples, the held-apart examples). Held apart: the ``cfg.held_apart`` examples
    after the evaluated ones in LongRA's seeded order and in the generated benchmark (TellMeWhy and WikiBio are too
    small to spare any); they only fit the priors and are never evaluated."""
    held = cfg.held_apart
    out: dict[str, list[EvalExample]] = {}
    spare: list[EvalExample] = []
    datasets = [d for d in cfg.datasets if d != "evidence"]
    if datasets:
        ev = EvalConfig(model="smollm2", **{d: cfg.path(d) for d in datasets if d != "lambada"})
    for d in cfg.datasets:
        if d == "evidence":
            limit = cfg.limits.get(d, 40)
            items = evidence_examples(model, tokenizer, limit + held)
            out[d], spare = items[:limit], spare + items[limit:]
            continue
        if d == "lambada":
            examples = from_data_module("lambada", load_annotated_lambada(cfg.path(d), tokenizer))
        else:
            examples = load_dataset(d, ev, tokenizer)
        limit = cfg.limits.get(d, len(examples))
        chosen = select_examples(examples, limit + (held if d == "longra" else 0), cfg.max_tokens, 0)
        out[d] = chosen[:limit]
        if d == "longra":
            spare += chosen[limit:]
    return out, spare


def fit_priors(model: nn.Module, tokenizer: Any, held: list[EvalExample]) -> dict[str, Any]:
    """The recency rate (``fit_rate``) and the position profile (``fit_position_prior``) fitted on AttnLRP's scores
    of the held-apart examples (greedy or given targets).

    The rate is fitted over the context the metrics see (the final token's score left out) among rates < 1: rate 1
    is uniform scores, not a recency prior (over the context it would score exactly as ``last_token`` does)."""
    from heat_module.baselines.position_prior import fit_position_prior
    from heat_module.baselines.recency import RATE_GRID, fit_rate

    if not held:
        raise ValueError("Expected held-apart examples to fit the recency rate and the position prior, got none "
                         "(held_apart = 0, or no LongRA / evidence dataset)")
    method = build("attnlrp", model, tokenizer)
    results = []
    for e in held:
        ids = torch.tensor(e.input_ids, dtype=torch.long, device=input_device(model))
        results.append(method.attribute(ids, target=e.target_id if e.target_id >= 0 else None).scores.flatten())
    rates = tuple(r for r in RATE_GRID if r < 1.0)
    return {"rate": fit_rate([r[:-1] for r in results], rates), "profile": fit_position_prior(results),
            "held": [f"{e.dataset}/{e.id}" for e in held]}


def run_context(cfg: ChoiceConfig, model: nn.Module | None = None, tokenizer: Any = None, log: Any = print
                ) -> JsonCache:
    """Compute what the cache lacks for the context study (:data:`CONTEXT_RULE`): the priors' fit (once, on the
    held-apart split), the components of each example (shared with :func:`run_choice`) and the metrics of every row
    of :data:`CONTEXT_ROWS` (keys ``.../context/<row>``). Examples of the datasets are interleaved."""
    bad = [d for d in cfg.datasets if d not in CONTEXT_DATASETS]
    if bad:
        raise ValueError(f"Expected datasets among {list(CONTEXT_DATASETS)}, got {bad!r}")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    if model is None:
        model, tokenizer = cfg.model if isinstance(cfg.model, tuple) else load_model(cfg.model)
    cache = JsonCache(cfg.cache_path)
    groups, held = context_examples(cfg, model, tokenizer)
    if "fit/priors" not in cache.records:
        cache.add({"key": "fit/priors", **fit_priors(model, tokenizer, held)})
    fit = cache.records["fit/priors"]
    log(f"[context] priors fitted on {len(fit['held'])} held-apart examples: rate {fit['rate']}")
    priors = {"last_token": build("last_token", model, tokenizer),
              "recency": build("recency", model, tokenizer, rate=fit["rate"]),
              "position_prior": build("position_prior", model, tokenizer, profile=fit["profile"])}
    order = [g[k] for k in range(max((len(g) for g in groups.values()), default=0)) for g in groups.values()
             if k < len(g)]
    order = order[cfg.start:cfg.stop]
    forward = RowCacheForward(model)
    for i, e in enumerate(order):
        t_example = time.perf_counter()
        ckey = _key(e, "components")
        if ckey not in cache.records:
            cache.add({"key": ckey, "n": len(e.input_ids), **components(model, tokenizer, e)})
        comp = cache.records[ckey]
        ids = torch.tensor(e.input_ids, dtype=torch.long, device=input_device(model))
        with torch.no_grad():
            x = embed(model, ids[None]).detach()
        rows = [row for row in CONTEXT_ROWS if _key(e, f"context/{row}") not in cache.records]
        scores = [priors[row].attribute(ids, target=comp["target"]).scores.flatten().float()
                  if CONTEXT_ROWS[row][2][0] == "registry" else context_scores(row, comp) for row in rows]
        t0 = time.perf_counter()
        if not rows:
            metrics = []
        elif e.dataset in RULE_DATASETS:
            metrics = context_metrics_batch(forward, torch.stack(scores).to(x.device), x, e, comp["target"], cfg)
        else:
            metrics = [free_metrics(sc, e) for sc in scores]
        forward.clear()
        spent = (time.perf_counter() - t0) / max(len(rows), 1)
        for row, m in zip(rows, metrics):
            cache.add({"key": _key(e, f"context/{row}"), "dataset": e.dataset, "example": e.id, "row": row,
                       "metrics": m, "seconds": context_seconds(row, comp), "metric_seconds": spent})
        log(f"[context] {i + 1}/{len(order)} {e.dataset}/{e.id} n={len(e.input_ids)} rows={len(rows)} "
            f"{time.perf_counter() - t_example:.1f}s")
    return cache
