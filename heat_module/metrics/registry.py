"""The one registry of metrics by name: each metric class declares its entry ONCE, beside the class::

    @register_metric("aopc", title="AOPC", inputs="model", functional=aopc, default=True)
    class AOPC(RankedRemovalMetric): ...

An entry (:class:`MetricEntry`) says what the metric is called (name, aliases, the titles of the values it reports),
what it needs (:data:`INPUTS`: how it is built and what ``update`` takes), its functional form and whether
``HEATModule`` computes it by default. ``HEATModule(metrics=...)``, the evaluation's column titles and the tests
(one class-vs-functional test for every entry, the DDP test over every entry) read these entries, so adding a metric
is one file (its class with the decorator; its functional form beside the others) plus its test.

The entries are read lazily: the first read imports every module of :data:`METRIC_MODULES` (the metric classes need
no optional dependency, so listing them costs only their import).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from heat_module.registry import Registry

#: packages whose every module is imported to collect the declarations
METRIC_MODULES = ("heat_module.metrics",)

#: what a metric needs, by kind: how it is built and what its ``update`` takes
INPUTS: dict[str, str] = {
    "model": "Metric(forward_fn, **options); update(scores (B, n), inputs_embeds (B, n, d), attention_mask (B, n), "
             "target_ids (B,))",
    "gold": "Metric(**options); update(scores (B, n), gold (B, n) bool, attention_mask (B, n))",
    "gold_distractor": "Metric(**options); update(scores (B, n), gold (B, n) bool, distractor (B, n) bool, "
                       "attention_mask (B, n))",
    "attribute_fn": "Metric(attribute_fn, **options) with attribute_fn(inputs_embeds, attention_mask, target_ids) -> "
                    "scores; update(inputs_embeds (B, n, d), attention_mask (B, n), target_ids (B,))",
    "pairs": "Metric(**options); update(scores_a (B, m), scores_b (B, m), valid (B, m) bool): attributions of two "
             "phrasings aligned token by token",
}

#: how a value key's suffix reads in a title (``soft_nc_rank`` -> "Soft-NC (ranks)")
SUFFIX_TITLES = {"_rank": " (ranks)", "_random": " of random scores", "_log_ratio": " ln(method / random)",
                 "_uniform": " of uniform scores"}

_REGISTRY = Registry("metric", METRIC_MODULES)


@dataclass(frozen=True)
class MetricEntry:
    """One registered metric.

    Attributes:
        name: the registry name (``HEATModule(metrics=[name])``, the ``test/<key>`` it logs).
        cls: the torchmetrics class.
        inputs: a kind of :data:`INPUTS`.
        functional: its functional form, same arguments as the class's constructor and ``update`` together
            (``f(*update_args, [forward_fn | attribute_fn], **options)``).
        title: its title in reports.
        keys: value key -> title of every value ``compute()`` reports as a dict (a metric with one value: ``{name:
            title}``, the default).
        aliases: other names it is found by.
        options: constructor options fixed by the entry (e.g. which of Soft-NC / Soft-NS).
        default: whether ``HEATModule`` computes it when ``metrics`` is not given.
    """

    name: str
    cls: Any
    inputs: str
    functional: Callable[..., Any]
    title: str
    keys: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    default: bool = False

    @property
    def higher_is_better(self) -> bool:
        return bool(self.cls.higher_is_better)

    def option_names(self) -> set[str]:
        """The keyword options its constructor takes: its own, or — for a class that only forwards ``**kwargs``
        (``SoftNC``) — those of the first base constructor that names its options (the shared bases of
        :mod:`heat_module.metrics.base` take none)."""
        for klass in self.cls.__mro__:
            if klass.__module__ == "heat_module.metrics.base":
                return set()
            if "__init__" not in vars(klass):
                continue
            params = inspect.signature(klass.__init__).parameters
            names = {n for n, p in params.items() if p.kind is not p.VAR_KEYWORD} - {"self", "forward_fn",
                                                                                      "attribute_fn"}
            if names or not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                return names
        return set()

    def build(self, forward_fn: Callable | None = None, attribute_fn: Callable | None = None, **options: Any) -> Any:
        """The metric object: ``forward_fn`` for a ``"model"`` metric, ``attribute_fn`` for an ``"attribute_fn"``
        one (error naming what was expected when missing), the entry's fixed options and ``options``."""
        kwargs = {**self.options, **options}
        if self.inputs == "model":
            if forward_fn is None:
                raise ValueError(f"Expected a forward_fn for the model-based metric {self.name!r}, got None")
            return self.cls(forward_fn, **kwargs)
        if self.inputs == "attribute_fn":
            if attribute_fn is None:
                raise ValueError(f"Expected an attribute_fn(inputs_embeds, attention_mask, target_ids) -> scores for "
                                 f"the metric {self.name!r}, got None")
            return self.cls(attribute_fn, **kwargs)
        return self.cls(**kwargs)


def canonical(name: str) -> str:
    return _REGISTRY.canonical(name)


def register_metric(name: str, *, inputs: str, functional: Callable[..., Any], title: str,
                    keys: Mapping[str, str] | None = None, aliases: tuple[str, ...] = (),
                    options: Mapping[str, Any] | None = None, default: bool = False) -> Callable[[type], type]:
    """Class decorator: declare the metric ``name`` (fields as :class:`MetricEntry`).

    Example:
        >>> import torch
        >>> from heat_module.metrics import metric_entry, register_metric
        >>> from heat_module.metrics.registry import unregister_metric
        >>> from torchmetrics import MeanMetric
        >>> def top_share(scores, gold, attention_mask=None):  # the functional form
        ...     return (scores * gold).sum() / scores.sum()
        >>> @register_metric("top_share", inputs="gold", functional=top_share, title="Gold share")
        ... class TopShare(MeanMetric):
        ...     higher_is_better = True
        ...     def update(self, scores, gold, attention_mask=None):
        ...         super().update(top_share(scores, gold, attention_mask))
        >>> metric_entry("top_share").title
        'Gold share'
        >>> unregister_metric("top_share")
    """
    if inputs not in INPUTS:
        raise ValueError(f"Expected inputs among {list(INPUTS)}, got {inputs!r}")
    key = canonical(name)

    def declare(cls: type) -> type:
        _REGISTRY.declare(key, MetricEntry(key, cls, inputs, functional, title, dict(keys or {key: title}),
                                           tuple(canonical(a) for a in aliases), dict(options or {}), default),
                          aliases)
        return cls

    return declare


def unregister_metric(name: str) -> None:
    """Remove the metric ``name`` and its aliases (a user's metric, or one an example or a test registered)."""
    _REGISTRY.remove(name)


def load_declarations() -> None:
    """Import every module of :data:`METRIC_MODULES` once, so every metric has declared its entry."""
    _REGISTRY.load()


def metric_entries() -> dict[str, MetricEntry]:
    """name -> :class:`MetricEntry` of every registered metric, sorted by name.

    Example:
        >>> from heat_module.metrics import metric_entries
        >>> metric_entries()["aopc"].title, metric_entries()["aopc"].inputs
        ('AOPC', 'model')
    """
    return _REGISTRY.entries()


def available_metrics() -> list[str]:
    """The registered metric names (aliases excluded), sorted.

    Example:
        >>> from heat_module.metrics import available_metrics
        >>> {"aopc", "abpc", "soft_nc", "dsa"} <= set(available_metrics())
        True
    """
    return list(metric_entries())


def default_metrics() -> list[str]:
    """The metrics ``HEATModule`` computes when ``metrics`` is not given."""
    return [name for name, entry in metric_entries().items() if entry.default]


def metric_entry(name: str) -> MetricEntry:
    """The entry of ``name`` or an alias (case-insensitive, ``-`` = ``_``); ``KeyError`` naming the known ones.

    Example:
        >>> from heat_module.lm.forward import make_forward_fn
        >>> from heat_module.metrics import metric_entry
        >>> from heat_module.testing import tiny_model
        >>> metric = metric_entry("aopc").build(forward_fn=make_forward_fn(tiny_model("llama")))
        >>> type(metric).__name__, metric.higher_is_better
        ('AOPC', True)
    """
    return _REGISTRY.entry(name)


def metric_title(key: str) -> str:
    """The title of a reported value key: an entry's key (``"span_f1"`` -> "Span-F1"), or one with a suffix of
    :data:`SUFFIX_TITLES` (``"soft_nc_rank"`` -> "Soft-NC (ranks)"); the key itself when no entry reports it."""
    titles = {k: t for entry in metric_entries().values() for k, t in entry.keys.items()}
    if key in titles:
        return titles[key]
    for suffix, words in SUFFIX_TITLES.items():
        if key.endswith(suffix) and key[: -len(suffix)] in titles:
            return titles[key[: -len(suffix)]] + words
    return key
