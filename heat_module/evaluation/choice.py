"""Is HEAT worth choosing? Two configurations of the evaluation pipeline (:mod:`heat_module.evaluation.pipeline`):
HEAT's configurations against AttnLRP, occlusion-KL and the gate on cheap methods, and the decision rules that pick
the default.

Every row is a method of the registry called through its public ``attribute`` (:class:`~heat_module.evaluation.
pipeline.Row`): ``attnlrp``, ``occlusion`` with ``measure="kl"`` (I of eq. 4 with the zero mask), ``gated:attnlrp``
(M × AttnLRP), ``random``, and every row the method registry's entries declare (the model-free priors
``last_token`` and ``recency`` among them; ``ChoiceConfig.methods``). HEAT's rows come from ``HEAT(config).attribute``
of three configurations — M·I (``preset("mi")``), eq. 5 with Fisher S (``preset("fisher")``) and with exact S
(``preset("exact")``) — each run once per example; its variants (β, γ, normalisation) are
:func:`heat_module.heat.combine.combine` of that attribution's public components. A row's seconds are those of its
method's ``attribute`` (a HEAT row: its configuration's attribution).

- The first study (:func:`run_choice`, :data:`ROWS`, :data:`RULE`): Soft-NC / Soft-NS as ReAGent defines them and on
  ranks, ABPC, DSA and F1 (:class:`~heat_module.evaluation.choice_metrics.ChoiceScorer`). Stages: ``"cheap"`` (every
  row but exact-S HEAT), ``"exact"`` (the exact-S rows on the first ``exact_limits`` examples).
- The study over the context (:func:`run_context`, :data:`CONTEXT_ROWS`, :data:`CONTEXT_RULE`): every metric over the
  context (``exclude_last=1``), ABPC with deletion, the generated evidence benchmark as a fourth dataset, and the
  trivial baselines (``last_token``, ``recency`` and ``position_prior``, fitted on a held-apart split) as rows
  (:class:`~heat_module.evaluation.choice_metrics.ContextScorer`).

The default follows the evidence by the rule fixed before each run (:func:`heat_module.evaluation.choice_report.
apply_rule`, :func:`~heat_module.evaluation.choice_report.apply_context_rule`). Resumable through the one
:class:`~heat_module.evaluation.cache.Cache` under ``out_dir`` (every ``cache*.jsonl`` there is read, so processes
working on parts of the order each append to their own file). Data paths come only from arguments or
``$HEAT_DATA_DIR``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from heat_module.attribution.registry import build
from heat_module.config import HEATConfig
from heat_module.evaluation.cache import Cache
from heat_module.evaluation.choice_metrics import ChoiceScorer, ContextScorer
from heat_module.evaluation.config import default_baselines
from heat_module.evaluation.datasets import EvalExample, check_datasets, dataset, dataset_names, title
from heat_module.evaluation.pipeline import HEAT_METHOD, Row, Study, run_study
from heat_module.lm.loading import load_model
from heat_module.lm.offload import input_device

CHOICE_STUDY, CONTEXT_STUDY = "choice", "context"
BENCHMARKS = dataset_names("benchmark")
ALIGNMENT = dataset_names("alignment")
CHOICE_DATASETS = dataset_names(study=CHOICE_STUDY)
#: the context study's rule datasets (faithfulness over the context) and all its datasets
RULE_DATASETS = dataset_names("benchmark", "evidence")
CONTEXT_DATASETS = dataset_names(study=CONTEXT_STUDY)

#: the three HEAT attributions whose components the HEAT rows recombine (one ``attribute`` each per example)
MI, FISHER, EXACT = HEATConfig.preset("mi"), HEATConfig.preset("fisher"), HEATConfig.preset("exact")


def heat_row(label: str, title_: str, family: HEATConfig, **fields: Any) -> Row:
    """A HEAT row: ``combine`` of ``family``'s attribution under ``HEATConfig(**fields)`` (β = 0, γ = 1 and no
    normalisation unless ``fields`` say otherwise: the cached metrics are keyed by row name, so a row's fields stay
    what they were when it ran, not the library defaults)."""
    return Row(label, title_, HEAT_METHOD, {"config": family},
               recombine=HEATConfig(**{"beta": 0.0, "gamma": 1.0, "normalize": "none", **fields}), group="heat")


def preset_row(label: str, title_: str, family: HEATConfig, preset: str, **changes: Any) -> Row:
    """A HEAT row: ``combine`` of ``family``'s attribution under ``HEATConfig.preset(preset, **changes)``."""
    return Row(label, title_, HEAT_METHOD, {"config": family}, recombine=HEATConfig.preset(preset, **changes),
               group="heat")


EQ5 = {"beta": 0.5, "gamma": 0.5}
#: the first study's own rows, in report order (``m_i``: β = 0, γ = 0.5, which ranks exactly like
#: ``preset("mi")``'s γ = 1); the registry's rows follow them (:func:`choice_rows`)
ROWS: dict[str, Row] = {r.label: r for r in (
    Row("attnlrp", "AttnLRP", "attnlrp"),
    Row("occlusion_kl", "Occlusion-KL (= I, HEATConfig(ablation='information'))", "occlusion", {"measure": "kl"}),
    heat_row("m_i", "M·I (HEATConfig(); β = 0)", MI, beta=0.0, gamma=0.5),  # the title as it ran
    Row("m_attnlrp", "M·AttnLRP (gated:attnlrp)", "gated:attnlrp"),
    Row("random", "Random", "random"),
    heat_row("heat_fisher", "HEAT, Fisher S, normalize=none", FISHER, **EQ5),
    heat_row("heat_fisher_sum", "HEAT, Fisher S, normalize=sum", FISHER, normalize="sum", **EQ5),
    heat_row("heat_fisher_rank", "HEAT, Fisher S, normalize=rank", FISHER, normalize="rank", **EQ5),
    heat_row("heat_exact", "HEAT eq. 5 (exact S, normalize=none; the default before this study)", EXACT, **EQ5),
    heat_row("heat_exact_sum", "HEAT, exact S, normalize=sum", EXACT, normalize="sum", **EQ5),
    heat_row("heat_exact_rank", "HEAT, exact S, normalize=rank", EXACT, normalize="rank", **EQ5),
)}
EXACT_ROWS = tuple(label for label, r in ROWS.items() if r.options.get("config") is EXACT)
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

# The study of the rule written in the README before its run ("Choosing the default over the context"): every
# faithfulness metric over the context (the final token never perturbed nor ranked), ABPC with the tokens deleted,
# the generated benchmark whose evidence is known as a fourth dataset, and the trivial baselines as rows.
CONTEXT_METRICS = ("soft_nc", "soft_ns", "abpc_deletion", "recall_evidence")
#: the metrics of the rule on the datasets where each is defined
METRIC_DATASETS = {"soft_nc": RULE_DATASETS, "soft_ns": RULE_DATASETS, "abpc_deletion": RULE_DATASETS,
                   "recall_evidence": dataset_names("evidence")}
#: the baselines every eligible method must beat; ``position_prior`` is the position control
TRIVIAL = ("last_token", "recency")
#: the context study's own rows, in report order; the fitted priors get their fit in :func:`run_context`, and the
#: registry's rows follow them (:func:`context_rows`)
CONTEXT_ROWS: dict[str, Row] = {r.label: r for r in (
    Row("last_token", "Last token (prior, no model)", "last_token"),
    Row("recency", "Recency prior (rate fitted on the held-apart split)", "recency"),
    Row("position_prior", "Position prior (fitted on the held-apart split)", "position_prior"),
    Row("attnlrp", "AttnLRP", "attnlrp"),
    Row("m_attnlrp", "M·AttnLRP (gated:attnlrp)", "gated:attnlrp"),
    Row("occlusion_kl", "Occlusion-KL (= I)", "occlusion", {"measure": "kl"}),
    preset_row("m_i", "M·I (β = 0, γ = 1; normalize none ≡ sum)", MI, "mi"),
    preset_row("m_i_rank", "M·I, normalize=rank", MI, "mi", normalize="rank"),
    preset_row("heat_fisher", "HEAT eq. 5, Fisher S, normalize=none", FISHER, "fisher"),
    preset_row("heat_fisher_sum", "HEAT eq. 5, Fisher S, normalize=sum", FISHER, "fisher", normalize="sum"),
    preset_row("heat_fisher_rank", "HEAT eq. 5, Fisher S, normalize=rank", FISHER, "fisher", normalize="rank"),
)}
HEAT_CANDIDATES = ("m_i", "m_i_rank", "heat_fisher", "heat_fisher_sum", "heat_fisher_rank")
CONTEXT_CANDIDATES = ("attnlrp", "m_attnlrp", "occlusion_kl") + HEAT_CANDIDATES

CONTEXT_RULE = f"""**Decision rule (fixed before the run, written in the README first).** Four metrics, all over the
context: Soft-NC and Soft-NS (ReAGent, 3 mask seeds) and ABPC with the tokens deleted (T = 4), each with
`exclude_last=1`, on {', '.join(title(d) for d in RULE_DATASETS)}; and evidence recall (top-k, final token left out)
on the generated benchmark. A method **beats** a trivial baseline on a metric when the mean over the metric's datasets
of the per-dataset mean paired difference is above 0 and its 95 % bootstrap interval (examples resampled within each
dataset) lies above 0. **Eligible:** beats both `last_token` and `recency` on at least 3 of the 4 metrics and costs
≤ {MAX_COST_RATIO:g}× AttnLRP (mean seconds per example on the rule's examples). **Ranking** among the eligible of
{', '.join(f'`{c}`' for c in CONTEXT_CANDIDATES)}: each (metric, dataset) cell ranks the means (1 = best, ties
shared); score = mean over the four metrics of the mean rank over that metric's datasets; lowest wins, ties to the
cheaper. Applied only with ≥ {MIN_EXAMPLES} examples per dataset for every candidate. The best eligible method is the
first recommendation; the best eligible HEAT configuration becomes `HEATConfig()`."""


def with_registry_rows(own: dict[str, Row], methods: dict[str, tuple[str, dict]] | None) -> dict[str, Row]:
    """``own`` followed by the registry rows ``methods`` (label -> (registry name, options); ``None``: every row the
    method registry's entries declare, :func:`~heat_module.evaluation.config.default_baselines`) whose label is not
    one of ``own``: a method registered with evaluation rows is a row here without any list to edit."""
    from heat_module.evaluation.config import baseline_title

    extra = default_baselines() if methods is None else methods
    return {**own, **{label: Row(label, baseline_title(label, spec), spec[0], dict(spec[1]))
                      for label, spec in extra.items() if label not in own}}


def choice_rows(methods: dict[str, tuple[str, dict]] | None = None) -> dict[str, Row]:
    """Every row of the first study: :data:`ROWS` and the registry's (see :func:`with_registry_rows`).

    Example:
        >>> from heat_module.evaluation.choice import choice_rows
        >>> rows = choice_rows()
        >>> rows["m_attnlrp"].method, rows["occlusion_kl"].options, "last_token" in rows
        ('gated:attnlrp', {'measure': 'kl'}, True)
    """
    return with_registry_rows(ROWS, methods)


def context_rows(methods: dict[str, tuple[str, dict]] | None = None, fit: dict | None = None) -> dict[str, Row]:
    """Every row of the context study: :data:`CONTEXT_ROWS` (the priors with ``fit``'s rate and profile, when given)
    and the registry's."""
    own = dict(CONTEXT_ROWS)
    if fit is not None:
        own["recency"] = Row("recency", own["recency"].title, "recency", {"rate": fit["rate"]})
        own["position_prior"] = Row("position_prior", own["position_prior"].title, "position_prior",
                                    {"profile": fit["profile"]})
    return with_registry_rows(own, methods)


@dataclass
class ChoiceConfig:
    """Settings of one run.

    Attributes:
        model: ``"smollm2"`` or an HF folder / id, or a ``(model, tokenizer)`` pair.
        datasets: names of the dataset table (default: those it marks for the first study).
        paths: dataset -> file (LongRA: glob); missing ones come from ``$HEAT_DATA_DIR``.
        limits: dataset -> examples (seeded random order, prefix-stable); a dataset not listed: all (the generated
            benchmark: 40).
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
        start: skip the first ``start`` examples of the interleaved order (a second process can then work on a
            later part of the same order at the same time; both append to their own cache files).
        stop: end of this process's part of the interleaved order (exclusive; None: to the end).
        held_apart: context study: LongRA and generated examples held apart (after the evaluated ones) to fit the
            recency rate and the position prior; never evaluated.
        methods: the registry rows beside the study's own, label -> (registry name, options); ``None``: every row
            the method registry declares (:func:`~heat_module.evaluation.config.parse_methods` reads a command line's).
    """

    model: Any = "smollm2"
    datasets: list[str] = field(default_factory=lambda: list(CHOICE_DATASETS))
    paths: dict[str, str] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
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
    start: int = 0
    stop: int | None = None
    held_apart: int = 10
    methods: dict[str, tuple[str, dict]] | None = None

    def __post_init__(self) -> None:
        check_datasets(self.datasets, CONTEXT_DATASETS)
        if not self.seeds:
            raise ValueError(f"Expected at least one mask seed, got {self.seeds!r}")

    @property
    def cache_path(self) -> Path:
        return Path(self.out_dir) / self.cache_name

    def model_and_tokenizer(self, model: nn.Module | None, tokenizer: Any) -> tuple[nn.Module, Any]:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        if model is not None:
            return model, tokenizer
        return self.model if isinstance(self.model, tuple) else load_model(self.model)


def study(cfg: ChoiceConfig, stage: str, model: nn.Module, log: Any = None) -> Study:
    """The pipeline configuration of ``stage``: ``"cheap"`` and ``"exact"`` (the first study), ``"context"``.

    Example:
        >>> from heat_module.evaluation.choice import ChoiceConfig, study
        >>> exact = study(ChoiceConfig(datasets=["longra"], exact_limits={"longra": 20}), "exact", model=None)
        >>> exact.name, [r.label for r in exact.rows], dict(exact.limits)
        ('choice', ['heat_exact', 'heat_exact_sum', 'heat_exact_rank'], {'longra': 20})
    """
    common = dict(paths=dict(cfg.paths), max_tokens=cfg.max_tokens, start=cfg.start, stop=cfg.stop, log=log,
                  option="paths={{'{name}': ...}}, --path {name}=FILE")
    if stage == "context":
        check_datasets(cfg.datasets, CONTEXT_DATASETS)
        held = {d: cfg.held_apart for d in cfg.datasets if dataset(d).spares}

        def prepare(model: nn.Module, tokenizer: Any, spare: list[EvalExample], cache: Cache) -> list[Row]:
            if "fit/priors" not in cache.records:
                cache.add({"key": "fit/priors", "kind": "fit", **fit_priors(model, tokenizer, spare)})
            fit = cache.records["fit/priors"]
            if log is not None:
                log(f"[context] priors fitted on {len(fit['held'])} held-apart examples: rate {fit['rate']}")
            return list(context_rows(cfg.methods, fit).values())

        scorer = ContextScorer(model, cfg.seeds, cfg.rank_seeds, cfg.abpc_steps, cfg.metric_batch_size)
        return Study(CONTEXT_STUDY, list(cfg.datasets), list(context_rows(cfg.methods).values()), scorer,
                     limits=dict(cfg.limits), held_apart=held, prepare=prepare, **common)
    if stage not in ("cheap", "exact"):
        raise ValueError(f"Expected stage 'cheap', 'exact' or 'context', got {stage!r}")
    check_datasets(cfg.datasets, CHOICE_DATASETS)
    scorer = ChoiceScorer(model, cfg.seeds, cfg.rank_seeds, cfg.abpc_steps, cfg.metric_batch_size)
    rows = [r for label, r in choice_rows(cfg.methods).items() if (label in EXACT_ROWS) == (stage == "exact")]
    limits = ({d: cfg.exact_limits.get(d, 0) for d in cfg.datasets} if stage == "exact" else dict(cfg.limits))
    return Study(CHOICE_STUDY, list(cfg.datasets), rows, scorer, limits=limits, **common)


def run_choice(cfg: ChoiceConfig, stage: str = "cheap", model: nn.Module | None = None, tokenizer: Any = None,
               log: Any = print) -> Cache:
    """Compute what the cache lacks for one stage of the first study: ``"cheap"`` (every row but exact-S HEAT) or
    ``"exact"`` (the exact-S rows on the first ``exact_limits[d]`` examples). Examples of the datasets are
    interleaved, so a partial run covers all."""
    if "evidence" in cfg.datasets:
        raise ValueError("Expected datasets among those of the cheap and exact stages, got 'evidence' (the generated "
                         "benchmark is a dataset of the context study: run_context)")
    model, tokenizer = cfg.model_and_tokenizer(model, tokenizer)
    cache = Cache(cfg.cache_path)
    run_study(study(cfg, stage, model, log), model, tokenizer, cache)
    return cache


def run_context(cfg: ChoiceConfig, model: nn.Module | None = None, tokenizer: Any = None, log: Any = print) -> Cache:
    """Compute what the cache lacks for the context study (:data:`CONTEXT_RULE`): the priors' fit (once, on the
    held-apart split) and every row of :func:`context_rows` (keys ``.../context/<row>``). The HEAT attributions are
    shared with :func:`run_choice`'s (the same configurations)."""
    model, tokenizer = cfg.model_and_tokenizer(model, tokenizer)
    cache = Cache(cfg.cache_path)
    run_study(study(cfg, "context", model, log), model, tokenizer, cache)
    return cache


def fit_priors(model: nn.Module, tokenizer: Any, held: Sequence[EvalExample]) -> dict[str, Any]:
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
