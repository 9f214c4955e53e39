"""The one evaluation pipeline: datasets → methods → metrics → cached rows (:func:`run_study`).

A :class:`Study` is a configuration of it: the datasets (names of :data:`heat_module.evaluation.datasets.DATASETS`),
the rows (:class:`Row`: a method of the registry with its options), the metrics (a :class:`Scorer`), limits and seeds.
The paper's tables (:mod:`heat_module.evaluation.runner`) and the "is HEAT worth choosing" study
(:mod:`heat_module.evaluation.choice`) are two such configurations; their reports read the rows from the one
:class:`~heat_module.evaluation.cache.Cache`.

Methods are called through their public ``attribute`` only: a row's method is built with the registry's
:func:`~heat_module.attribution.registry.build` (``"gated:attnlrp"``, ``"occlusion"`` with ``measure="kl"``, ...).
HEAT rows come from ``HEAT(config).attribute``; the rows of one HEAT configuration (a *family*: every sink option,
ablation, β/γ and normalisation) share ONE attribution and are recombined from the result's public components
(``result.transition``, ``result.curvature``, ``result.information``) with the public
:func:`heat_module.heat.combine.combine`. M under another sink option is the ``transition`` of
``HEAT(HEATConfig(ablation="transition", sink=...)).attribute`` (one captured forward, no S, no I). The shared
attribution is cached, so a HEAT row added later is recombined without running HEAT again.

Rows whose scores are equal up to a positive factor share one metric evaluation (:func:`score_signature`): every
metric here normalises or ranks the scores.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from heat_module.attribution.registry import build, get_method
from heat_module.config import HEATConfig
from heat_module.evaluation.cache import Cache, rounded
from heat_module.evaluation.datasets import (
    EvalExample,
    data_path,
    dataset,
    interleave,
    load_dataset,
    select_examples,
    usable,
)
from heat_module.hashing import stable_hash
from heat_module.heat.combine import Components, combine
from heat_module.lm.forward import embed, next_token_logits
from heat_module.lm.offload import input_device

#: the registry name of HEAT, whose rows of one configuration share one attribution
HEAT_METHOD = "heat"


@dataclass(frozen=True)
class Row:
    """One row of a study: a registry method with its options, scored on every example.

    Attributes:
        label: the row's name (cache key, report).
        title: its name in reports.
        method: the registry name (``"gated:attnlrp"`` builds the gate around AttnLRP).
        options: the options ``build`` gets; for HEAT ``{"config": HEATConfig(...)}``, the configuration whose ONE
            attribution the family's rows share.
        recombine: HEAT rows: the configuration that :func:`~heat_module.heat.combine.combine` applies to the shared
            attribution's components (``None``: the attribution's own scores).
        gate: HEAT rows: the sink option whose M replaces the attribution's (``None``: its own M).
        model_metrics: whether the model-based metrics are computed for it (the free ones always are).
        group: what the row is in the report (``"baseline"``, ``"heat"``, ``"ablation"``, ``"sweep"``, ...).

    Example:
        >>> from heat_module import HEATConfig
        >>> from heat_module.evaluation import Row
        >>> Row("ig8", "Integrated gradients (8 steps)", "integrated_gradients", {"steps": 8}).family is None
        True
        >>> exact = {"config": HEATConfig.preset("exact")}  # two rows of one HEAT attribution
        >>> a = Row("heat[first]", "HEAT (sink=first)", "heat", exact, gate="first")
        >>> b = Row("kl-only", "KL only", "heat", exact, recombine=HEATConfig(ablation="information", beta=0.0))
        >>> a.family == b.family
        True
    """

    label: str
    title: str
    method: str
    options: Mapping[str, Any] = field(default_factory=dict)
    recombine: HEATConfig | None = None
    gate: str | None = None
    model_metrics: bool = True
    group: str = "baseline"

    @property
    def family(self) -> str | None:
        """HEAT rows: the id of the shared attribution (a hash of its configuration); else ``None``."""
        if self.method != HEAT_METHOD:
            return None
        config = self.options.get("config") or HEATConfig()
        return stable_hash(config.to_dict(), length=12)


class Scorer:
    """The metrics of a study. Subclasses implement :meth:`score`; :meth:`reference` and :meth:`missing` are
    optional.

    Example:
        >>> import torch
        >>> from heat_module.evaluation import Scorer
        >>> class TopShare(Scorer):  # the share of the largest score
        ...     def score(self, example, x, target, scores, model_metrics, names=None):
        ...         return [{"top_share": float(s.max() / s.sum())} for s in scores]
        >>> TopShare().score(None, None, 0, torch.tensor([[1.0, 3.0]]), [True])
        [{'top_share': 0.75}]
    """

    def score(self, example: EvalExample, x: torch.Tensor, target: int, scores: torch.Tensor,
              model_metrics: Sequence[bool], names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The metrics of R score rows (R, n) of one example (x: (1, n, d)); ``model_metrics[r]``: whether row r gets
        the model-based ones; ``names``: only these metrics (a metric added after the row was cached)."""
        raise NotImplementedError

    def reference(self, example: EvalExample, x: torch.Tensor, target: int, ids: torch.Tensor) -> dict | None:
        """The example's reference facts (stored once per example), or ``None``."""
        return None

    def missing(self, record: dict) -> list[str]:
        """The metrics a cached row lacks (computed from its cached scores)."""
        return []

    def clear(self) -> None:
        """Forget what was memoised for the last example."""

    def close(self) -> None:
        """Release what the scorer built (called by the study's runner at the end)."""


@dataclass
class Study:
    """One configuration of the pipeline.

    Attributes:
        name: the study's name (``"paper"``, ``"choice"``, ``"context"``): in every record and key.
        datasets: names from the dataset table.
        paths: dataset -> file (LongRA: glob); missing ones come from ``$HEAT_DATA_DIR``.
        rows: the rows; ``prepare`` may replace them.
        scorer: the metrics.
        limits: dataset -> examples (seeded order, prefix-stable); a dataset not listed: ``default_limit``.
        default_limit: examples of a dataset not in ``limits`` (``None``: all; a generated dataset: 40).
        max_tokens: contexts longer than this are skipped.
        order_seed: seeds the example order.
        seed: the methods' ``seed`` option (a row that sets one keeps it).
        held_apart: dataset -> examples held apart after the evaluated ones (given to ``prepare``, never scored).
        prepare: ``prepare(model, tokenizer, held_apart_examples, cache) -> rows``, run once before the examples
            (fitting the priors of the context study).
        start, stop: this process's part of the interleaved order.
        option: how a path is given on the command line, for the error (``"--{name}"``).
        progress: a tqdm bar; ``log``: a line per example (``None``: silent).

    Example:
        >>> import tempfile
        >>> from heat_module.testing import tiny_eval_config
        >>> from heat_module.evaluation import paper_study
        >>> study = paper_study(tiny_eval_config(tempfile.mkdtemp()))  # the paper configuration, tiny settings
        >>> study.name, study.datasets, [r.label for r in study.rows]
        ('paper', ['wikibio'], ['random'])
    """

    name: str
    datasets: Sequence[str]
    rows: Sequence[Row]
    scorer: Scorer
    paths: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, int] = field(default_factory=dict)
    default_limit: int | None = None
    max_tokens: int = 96
    order_seed: int = 0
    seed: int = 0
    held_apart: Mapping[str, int] = field(default_factory=dict)
    prepare: Callable[..., Sequence[Row]] | None = None
    start: int = 0
    stop: int | None = None
    option: str | None = None
    progress: bool = False
    log: Callable[[str], None] | None = None

    def key(self, example: EvalExample, what: str) -> str:
        return Cache.key(example.dataset, example.id, f"{self.name}/{what}")


def attribution_key(example: EvalExample, family: str) -> str:
    """The cache key of a HEAT family's shared attribution of ``example`` (shared by every study)."""
    return Cache.key(example.dataset, example.id, f"attribution/{family}")


def score_signature(scores: torch.Tensor) -> tuple:
    """Scores up to a positive factor (every metric here is invariant to it: they normalise or rank), rounded.

    Two rows with the same signature get the same metric values (the metric draws are per example), so they are
    computed once — e.g. ``sink="auto"`` when it flags exactly position 0 equals ``sink="first"``, and the uniform
    gate equals no gate up to the factor 1/n.
    """
    s = scores.detach().double().cpu()
    top = float(s.abs().max())
    return tuple(round(float(v), 6) for v in (s / top if top > 0 else s))


def study_examples(study: Study, model: nn.Module, tokenizer: Any
                   ) -> tuple[list[EvalExample], list[EvalExample], dict[str, int]]:
    """(this process's part of the interleaved order, the held-apart examples, dataset -> usable examples)."""
    groups, spare, n_usable = [], [], {}
    for name in study.datasets:
        limit = study.limits.get(name, study.default_limit)
        held = study.held_apart.get(name, 0)
        path = data_path(name, study.paths, (study.option or "--{name}").format(name=name))
        if dataset(name).file is None:  # generated: make as many as are needed
            limit = 40 if limit is None else limit
            chosen = load_dataset(name, path, tokenizer, model, limit + held)
            n_usable[name] = len(chosen)
        else:
            examples = load_dataset(name, path, tokenizer)
            n_usable[name] = len(usable(examples, study.max_tokens))
            limit = len(examples) if limit is None else limit
            chosen = select_examples(examples, limit + held, study.max_tokens, study.order_seed)
        groups.append(chosen[:limit])
        spare += chosen[limit:limit + held]
    return interleave(groups)[study.start:study.stop], spare, n_usable


class Methods:
    """The attributors of a run, built once each through the registry (a method with a ``seed`` option gets the
    study's seed unless the row sets one), closed at the end."""

    def __init__(self, model: nn.Module, tokenizer: Any, seed: int) -> None:
        self.model, self.tokenizer, self.seed = model, tokenizer, seed
        self.built: dict[str, Any] = {}

    def get(self, method: str, options: Mapping[str, Any]) -> Any:
        key = stable_hash({"method": method, "options": {k: (v.to_dict() if isinstance(v, HEATConfig) else v)
                                                         for k, v in options.items()}}, length=16)
        if key not in self.built:
            options = dict(options)
            base = method.split(":", 1)[0]
            if "seed" in inspect.signature(get_method(base)).parameters:
                options.setdefault("seed", self.seed)
            self.built[key] = build(method, self.model, self.tokenizer, **options)
        return self.built[key]

    def heat(self, config: HEATConfig) -> Any:
        return self.get(HEAT_METHOD, {"config": config})

    def close(self) -> None:
        for method in self.built.values():
            if hasattr(method, "close"):
                method.close()
        self.built = {}


def gate_config(config: HEATConfig, sink: str) -> HEATConfig:
    """The configuration whose attribution is M alone under ``sink`` (the rollout settings of ``config``)."""
    return HEATConfig(beta=0.0, gamma=1.0, ablation="transition", sink=sink, rollout_layers=config.rollout_layers,
                      gate=config.gate, backend=config.backend, seed=config.seed)


def shared_attribution(methods: Methods, cache: Cache, example: EvalExample, family: str, config: HEATConfig,
                       gates: Sequence[str], ids: torch.Tensor, target: int, base: dict) -> dict:
    """The cached attribution of a HEAT family on ``example`` (``HEAT(config).attribute``), with M under every
    sink option of ``gates``; computes only what the cache lacks."""
    key = attribution_key(example, family)
    rec = cache.records.get(key)
    if rec is None:
        t0 = time.perf_counter()
        res = methods.heat(config).attribute(ids, target=target)
        rec = {**base, "key": key, "kind": "attribution", "family": family, "config": config.to_dict(),
               "transition": {config.sink: rounded(res.transition)},
               "curvature": None if res.curvature is None else rounded(res.curvature),
               "information": None if res.information is None else rounded(res.information),
               "seconds": time.perf_counter() - t0, "cost_seconds": dict(res.cost.seconds)}
    new = [g for g in gates if g not in rec["transition"]]
    for g in new:
        m = methods.heat(gate_config(config, g)).attribute(ids, target=target).transition
        rec = {**rec, "transition": {**rec["transition"], g: rounded(m)}}
    if key not in cache.records or new:
        cache.add(rec)
    return rec


def family_scores(rec: dict, row: Row) -> torch.Tensor:
    """(n,) scores of a HEAT row from its family's cached attribution: ``combine`` of (M under the row's gate, S, I)
    under the row's configuration."""
    config = row.options.get("config") or HEATConfig()

    def tensor(values: list | None) -> torch.Tensor | None:
        return None if values is None else torch.tensor(values, dtype=torch.float32)

    parts = Components(tensor(rec["transition"][row.gate or config.sink]), tensor(rec["curvature"]),
                       tensor(rec["information"]), None)
    return combine(parts, row.recombine or config).detach().float().cpu()


def run_example(study: Study, rows: Sequence[Row], methods: Methods, cache: Cache, example: EvalExample) -> int:
    """Compute every row (and every missing metric of a cached row) of one example that the cache lacks; returns
    how many rows were computed."""
    model, scorer = methods.model, study.scorer
    todo = [r for r in rows if not cache.has(study.key(example, r.label))]
    ref_key = study.key(example, "__reference__")
    missing = {r.label: names for r in rows if (rec := cache.records.get(study.key(example, r.label))) is not None
               and r.model_metrics and "scores" in rec and (names := scorer.missing(rec))}
    need_ref = not cache.has(ref_key)
    if not todo and not missing and not need_ref:
        return 0
    t_example = time.perf_counter()
    ids = torch.tensor(example.input_ids, dtype=torch.long, device=input_device(model))
    with torch.no_grad():
        x = embed(model, ids[None]).detach()
        logits = next_token_logits(model, x)[0]
    greedy = int(logits.argmax())
    target = greedy if example.target_id < 0 else example.target_id
    base = {"study": study.name, "dataset": example.dataset, "example": example.id, "n": int(ids.numel()),
            "target_id": target, "greedy_match": target == greedy,
            "target_logprob": float(torch.log_softmax(logits.float(), -1)[target])}
    if need_ref:
        t0 = time.perf_counter()
        facts = scorer.reference(example, x, target, ids) or {}
        cache.add({**base, **facts, "key": ref_key, "kind": "reference", "method": "__reference__",
                   "gold": example.gold, "distractor": example.distractor, "seconds": time.perf_counter() - t0})
    scores: dict[str, torch.Tensor] = {}
    seconds: dict[str, float] = {}
    extras: dict[str, dict] = {}
    families: dict[str, list[Row]] = {}
    for row in todo:
        if row.family is not None:
            families.setdefault(row.family, []).append(row)
            continue
        t0 = time.perf_counter()
        res = methods.get(row.method, row.options).attribute(ids, target=target)
        scores[row.label] = res.scores.detach().float().cpu()
        seconds[row.label] = time.perf_counter() - t0
        extras[row.label] = {k: v for k, v in res.extra.items() if isinstance(v, (int, float))}
    for family, members in families.items():
        config = members[0].options.get("config") or HEATConfig()
        cached = attribution_key(example, family) in cache.records
        rec = shared_attribution(methods, cache, example, family, config, sorted({r.gate for r in members if r.gate}),
                                 ids, target, base)
        for row in members:
            scores[row.label] = family_scores(rec, row)
            seconds[row.label] = rec["seconds"]
            extras[row.label] = {"attribution": "cached" if cached else "computed", "family": family}
    computed = [r for r in todo if r.label in scores]
    t0 = time.perf_counter()
    metrics = score_rows(scorer, example, x, target, [scores[r.label] for r in computed],
                         [r.model_metrics for r in computed])
    t_metrics = (time.perf_counter() - t0) / max(len(computed), 1)  # the rows' metrics share batches
    for row, values in zip(computed, metrics):
        cache.add({**base, "key": study.key(example, row.label), "kind": "row", "method": row.label,
                   "row": row.label, "metrics": values, "scores": rounded(scores[row.label]),
                   "extra": extras[row.label], "seconds": seconds[row.label], "metric_seconds": t_metrics})
    for label, names in missing.items():  # metrics added since the row was cached: from its cached scores
        rec = cache.records[study.key(example, label)]
        added = scorer.score(example, x, target, torch.tensor([rec["scores"]]), [True], names)[0]
        cache.add({**rec, "metrics": {**rec["metrics"], **added}})
    scorer.clear()
    cache.add({**base, "key": study.key(example, f"__time__{time.time():.0f}"), "kind": "time", "method": "__time__",
               "seconds": time.perf_counter() - t_example, "computed": len(computed)})
    return len(computed)


def score_rows(scorer: Scorer, example: EvalExample, x: torch.Tensor, target: int, scores: Sequence[torch.Tensor],
               model_metrics: Sequence[bool]) -> list[dict[str, Any]]:
    """The metrics of each score vector, rows equal up to a positive factor scored once (:func:`score_signature`)."""
    if not scores:
        return []
    unique: dict[tuple, int] = {}
    which = []
    for s, mm in zip(scores, model_metrics):
        which.append(unique.setdefault((score_signature(s), mm), len(unique)))
    firsts = {k: which.index(k) for k in range(len(unique))}
    values = scorer.score(example, x, target, torch.stack([scores[firsts[k]] for k in range(len(unique))]).to(x.device),
                          [model_metrics[firsts[k]] for k in range(len(unique))])
    return [dict(values[k]) for k in which]


def run_study(study: Study, model: nn.Module, tokenizer: Any, cache: Cache, compute: bool = True
              ) -> tuple[list[EvalExample], dict[str, int]]:
    """Run (or resume) ``study``: every row of every selected example that ``cache`` lacks. Returns (the examples
    of this process's part, dataset -> usable examples); ``compute=False`` only selects them.

    Example:
        >>> import tempfile
        >>> from heat_module.testing import tiny_eval_config
        >>> cfg = tiny_eval_config(tempfile.mkdtemp())  # the tiny model on two prompts, the random baseline
        >>> from heat_module.evaluation import Cache, paper_study, run_study
        >>> study, cache = paper_study(cfg), Cache(cfg.cache_path, cfg.fingerprint())
        >>> examples, _ = run_study(study, *cfg.model, cache)
        >>> sorted(r["key"] for r in cache.records.values() if r["kind"] == "row")
        ['wikibio/0/paper/random', 'wikibio/1/paper/random']
    """
    examples, spare, n_usable = study_examples(study, model, tokenizer)
    if not compute:
        return examples, n_usable
    rows = list(study.prepare(model, tokenizer, spare, cache) if study.prepare is not None else study.rows)
    labels = [r.label for r in rows]
    if len(set(labels)) != len(labels):
        raise ValueError(f"Expected distinct row labels, got {labels}")
    methods = Methods(model, tokenizer, study.seed)
    bar = tqdm(total=len(examples), desc=f"heat eval ({study.name})", unit="example") if study.progress else None
    try:
        for i, e in enumerate(examples):
            cache.refresh()
            t0 = time.perf_counter()
            done = run_example(study, rows, methods, cache, e)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{e.dataset}/{e.id}")
            if study.log is not None:
                study.log(f"[{study.name}] {i + 1}/{len(examples)} {e.dataset}/{e.id} n={len(e.input_ids)} "
                          f"rows={done} {time.perf_counter() - t0:.1f}s")
    finally:
        methods.close()
        if bar is not None:
            bar.close()
    return examples, n_usable


def study_records(cache: Cache, study: str, examples: Sequence[EvalExample] | None = None) -> list[dict]:
    """The cache's records of ``study`` (of ``examples`` only, when given) and the shared attributions."""
    wanted = None if examples is None else {(e.dataset, e.id) for e in examples}
    return [r for r in cache.records.values() if (r.get("study") == study or r.get("kind") == "attribution")
            and (wanted is None or (r.get("dataset"), r.get("example")) in wanted)]
