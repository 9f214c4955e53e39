"""Settings of the paper-table configuration of the evaluation (:class:`EvalConfig`), and the baselines and metrics
it runs (read from the method and metric registries: no list of its own).

Its datasets are rows of the one dataset table (:data:`heat_module.evaluation.datasets.DATASETS`). Data paths come
only from arguments (``EvalConfig(paths={"longra": ...})``, ``heat eval --longra ...``) or from the environment
variable ``HEAT_DATA_DIR``: a folder laid out as the shared data (the files the table names). A dataset with
neither raises an error naming both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heat_module.attribution.registry import method_entries, method_entry
from heat_module.config import SINKS
from heat_module.evaluation.datasets import check_datasets, data_path, dataset_names
from heat_module.hashing import stable_hash
from heat_module.metrics.registry import default_metrics, metric_entry


def default_baselines() -> dict[str, tuple[str, dict]]:
    """The baselines run by default, label -> (registry name, options): the ``evaluation`` rows every entry of the
    method registry declares (:class:`heat_module.attribution.registry.MethodEntry`).

    Example:
        >>> from heat_module.evaluation import default_baselines
        >>> default_baselines()["random"]  # row label -> (registry name, options)
        ('random', {})
    """
    return {label: (name, dict(options)) for name, entry in method_entries().items()
            for label, (_, options) in entry.evaluation.items()}


def baseline_title(label: str, spec: tuple[str, dict] | None = None) -> str:
    """The report title of baseline row ``label``: the title its registry entry gives the row, else (a row asked for
    by name) the method's title, with its options when it has some."""
    for entry in method_entries().values():
        if label in entry.evaluation:
            return entry.evaluation[label][0]
    name, options = spec if spec is not None else (label, {})
    try:
        title = method_entry(name).title
    except KeyError:
        return label
    return f"{title} ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else title


def default_eval_metrics() -> list[str]:
    """The model-based metrics computed for every row by default: the registry's default metrics of kind
    ``"model"`` (:func:`heat_module.metrics.registry.default_metrics`)."""
    return [name for name in default_metrics() if metric_entry(name).inputs == "model"]


@dataclass
class EvalConfig:
    """Settings of one evaluation run.

    Attributes:
        model: ``"smollm2"`` (offline default), an HF folder / id; or a ``(model, tokenizer)`` pair.
        datasets: names of the dataset table (default: those it marks for the paper's tables).
        paths: dataset -> its file (LongRA: a glob of JSON-lines files, merged and de-duplicated); a dataset not
            given: under ``$HEAT_DATA_DIR`` (:meth:`data_path`).
        limit: examples per dataset (taken in a seeded random order, so a larger limit extends a run). ≥ 1.
        max_tokens: skip contexts longer than this many tokens (cost of exact HEAT grows with n). ≥ 2.
        seed: seeds example order, metric masks, random scores, HEAT probes and the bootstrap.
        num_masks: Soft-NC / Soft-NS Bernoulli masks per example. ≥ 1.
        metrics: the model-based metrics of every row, registry names of kind ``"model"`` (default
            :func:`default_eval_metrics`); DSA / F1 are computed wherever an example has gold tokens. A cached row
            lacking one of them gets it from its cached scores.
        bootstrap: bootstrap resamples for the 95 % intervals. ≥ 10.
        baselines: label -> (registry name, options) of the baselines to run (default :func:`default_baselines`).
        heat: run HEAT (all sink options, the ablations and the sweep).
        betas: β values of the Table 7 sweep (γ = 1 − β); 0.5 is the main HEAT row.
        sweep_sinks: sinks whose sweep rows get the model-based metrics (Soft-NC/NS, AOPC); DSA/F1 (free) are
            computed for every sink.
        probes: Rademacher probes m of HEAT's exact curvature.
        fisher: also report HEAT with ``curvature="fisher"`` (an extra, labelled row).
        metric_batch_size: rows per forward pass of the model-based metrics.
        threads: ``torch.set_num_threads`` (None: leave as is).
        out_dir: where the cache, the report and the figures go.
        report: the markdown report path (default ``out_dir/RESULTS-eval.md``).
        figures: draw the three PNG heatmaps.
        progress: show a tqdm progress bar.
        report_only: compute nothing; write the report from what the cache holds for the selected examples.
        notes: markdown inserted after the setup section of the report (a discussion written by a person).

    Example:
        >>> from heat_module.evaluation import EvalConfig
        >>> cfg = EvalConfig(datasets=["curated"], paths={"curated": "curated.json"}, limit=5)
        >>> cfg.model, cfg.report_path.name
        ('smollm2', 'RESULTS-eval.md')
        >>> EvalConfig(limit=0)
        Traceback (most recent call last):
        ...
        ValueError: Expected limit to be an integer >= 1, got 0
    """

    model: Any = "smollm2"
    datasets: list[str] = field(default_factory=lambda: list(dataset_names(study="paper")))
    paths: dict[str, str] = field(default_factory=dict)
    limit: int = 20
    max_tokens: int = 96
    seed: int = 0
    num_masks: int = 8
    metrics: list[str] = field(default_factory=default_eval_metrics)
    bootstrap: int = 1000
    baselines: dict[str, tuple[str, dict]] = field(default_factory=default_baselines)
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
        check_datasets(self.datasets)
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
            try:
                method_entry(spec[0])
            except KeyError as e:
                raise ValueError(f"baseline {label!r}: {e.args[0]}") from None
        for name in self.metrics:
            try:
                kind = metric_entry(name).inputs
            except KeyError as e:
                raise ValueError(e.args[0]) from None
            if kind != "model":
                raise ValueError(f"Expected model-based metrics (kind 'model') in metrics, got {name!r} of kind "
                                 f"{kind!r}")

    def data_path(self, dataset: str) -> str | None:
        """The file (LongRA: glob) of ``dataset``: ``paths[dataset]`` if set, else under ``$HEAT_DATA_DIR``."""
        return data_path(dataset, self.paths, f"EvalConfig(paths={{{dataset!r}: ...}}), heat eval --{dataset} ...")

    @property
    def report_path(self) -> Path:
        return Path(self.report) if self.report else Path(self.out_dir) / "RESULTS-eval.md"

    @property
    def cache_path(self) -> Path:
        return Path(self.out_dir) / "cache.jsonl"

    def fingerprint(self) -> str:
        """What makes cached results comparable: model, seed, metric settings, HEAT probes, context cap."""
        model = self.model if isinstance(self.model, str) else type(self.model).__name__
        return stable_hash({"model": model, "seed": self.seed, "num_masks": self.num_masks, "probes": self.probes,
                            "max_tokens": self.max_tokens, "v": 2}, length=10)


def parse_methods(specs: Sequence[str] | None) -> dict[str, tuple[str, dict]]:
    """``["occlusion", "ig16=integrated_gradients:steps=16,baseline=mean"]`` -> baseline specs (``None``: the
    default set, :func:`default_baselines`). A bare label is a default row's label or a registry name (or alias)
    without options; every name must be in the method registry.

    Example:
        >>> from heat_module.evaluation import parse_methods
        >>> parse_methods(["random", "ig4=integrated_gradients:steps=4"])
        {'random': ('random', {}), 'ig4': ('integrated_gradients', {'steps': 4})}
    """
    defaults = default_baselines()
    if specs is None:
        return defaults
    out = {}
    for spec in specs:
        label, _, rest = spec.partition("=")
        if not rest:
            if label in defaults:
                out[label] = defaults[label]
                continue
            name, options = label, {}
        else:
            name, _, opts = rest.partition(":")
            options = {}
            for item in filter(None, opts.split(",")):
                k, _, val = item.partition("=")
                try:
                    options[k] = json.loads(val)
                except json.JSONDecodeError:
                    options[k] = val
        try:
            name = method_entry(name).name
        except KeyError as e:
            raise ValueError(f"{spec!r}: {e.args[0]}") from None
        out[label] = (name, options)
    return out
