"""Soft-NC / Soft-NS as torchmetrics classes; the definitions and the functional forms are in
:mod:`heat_module.metrics.functional.soft_faithfulness`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from heat_module.metrics.base import SumCountMetric
from heat_module.metrics.functional.common import ForwardFn, IndexSpec, ScoresTransform, check_batch
from heat_module.metrics.functional.soft_faithfulness import (
    SoftDefinition,
    SoftKind,
    SoftOptions,
    soft_faithfulness,
    soft_faithfulness_compute,
    soft_faithfulness_update,
    soft_nc,
    soft_ns,
)
from heat_module.metrics.registry import register_metric


@register_metric("soft_faithfulness", title="Soft-NC and Soft-NS", keys={"soft_nc": "Soft-NC", "soft_ns": "Soft-NS"},
                 inputs="model", functional=soft_faithfulness)
class SoftFaithfulness(SumCountMetric):
    """Soft-NC and Soft-NS (module docstring) accumulated over batches; one sum state per reported value.

    Args:
        forward_fn: ``f(inputs_embeds (rows, n, d), attention_mask (rows, n)) -> logits (rows, V)``, e.g.
            ``heat_module.lm.forward.forward_fn``.
        kinds: which of ``"nc"``, ``"ns"`` to compute (both share the reference forwards).
        definition: ``"reagent"`` or ``"heta"``.
        num_masks: Bernoulli masks per example.
        seed: seed of the per-example generators.
        batch_size: rows per forward call.
        random_baseline: also score random scores and report ``soft_<kind>_random`` and ``_log_ratio``.
        scores_transform: ``"none"`` (ReAGent's definition), ``"rank"`` (normalised ranks) or ``"entropy"`` (the
            scores' order at entropy ``entropy_fraction``·ln n): reports correctness apart from concentration.
        entropy_fraction: see ``scores_transform``.
        exclude_last: how many final real tokens are never masked; scores are renormalised over the rest (0: every
            real token, ReAGent's definition).
        kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ...).

    ``update(scores (batch, n), inputs_embeds (batch, n, d), attention_mask (batch, n) | None,
    target_ids (batch,) | None, protected=None)``; ``compute()`` returns a dict of scalars (see
    :func:`soft_faithfulness`).
    ``target_ids`` is accepted for the common signature of model-based metrics and only shape-checked:
    Soft-NC/NS compare full next-token distributions.

    Example:
        >>> from heat_module.testing import tiny_metric_example
        >>> forward_fn, x, scores, target = tiny_metric_example()  # "the cat sat on the" -> "road", fixed scores
        >>> from heat_module.metrics import SoftFaithfulness
        >>> metric = SoftFaithfulness(forward_fn, num_masks=4)
        >>> metric.update(scores, x, None, target)
        >>> sorted(metric.compute())
        ['soft_nc', 'soft_nc_log_ratio', 'soft_nc_random', 'soft_ns', 'soft_ns_log_ratio', 'soft_ns_random']
    """

    higher_is_better = True

    def __init__(
        self,
        forward_fn: ForwardFn,
        kinds: Sequence[SoftKind] = ("nc", "ns"),
        definition: SoftDefinition = "reagent",
        num_masks: int = 10,
        seed: int = 0,
        batch_size: int = 64,
        random_baseline: bool = True,
        scores_transform: ScoresTransform = "none",
        entropy_fraction: float = 0.8,
        exclude_last: int = 0,
        **kwargs: Any,
    ) -> None:
        options = SoftOptions(kinds, definition, num_masks, seed, batch_size, random_baseline, scores_transform,
                              entropy_fraction, exclude_last)
        super().__init__(options.state_keys, **kwargs)
        self.forward_fn = forward_fn
        self.options = options

    def update(
        self,
        scores: torch.Tensor,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        target_ids: torch.Tensor | None = None,
        protected: IndexSpec | None = None,
    ) -> None:
        """Add a batch: scores (batch, n), inputs_embeds (batch, n, d), attention_mask (batch, n) | None;
        ``protected``: positions never masked (bool (batch, n) or per-example index lists), or ``None``."""
        check_batch(scores, inputs_embeds, attention_mask, target_ids)
        self.accumulate(*soft_faithfulness_update(scores, inputs_embeds, attention_mask, self.forward_fn, protected,
                                                  **asdict(self.options)))

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"soft_<kind>", "soft_<kind>_random", "soft_<kind>_log_ratio"}`` for each kind."""
        return soft_faithfulness_compute(self.sums(), self.total, self.options.kinds, self.options.random_baseline)


@register_metric("soft_nc", title="Soft-NC", inputs="model", functional=soft_nc, default=True)
class SoftNC(SoftFaithfulness):
    """Soft normalised comprehensiveness alone: :class:`SoftFaithfulness` with ``kinds=("nc",)``.

    Its other arguments (``definition``, ``num_masks``, ``seed``, ``batch_size``, ``random_baseline``,
    ``scores_transform``, ``entropy_fraction``, ``exclude_last``, ``Metric`` options) by keyword.

    Example:
        >>> from heat_module.metrics import SoftNC
        >>> from heat_module.testing import tiny_metric_example
        >>> forward_fn, x, scores, target = tiny_metric_example()
        >>> SoftNC(forward_fn, num_masks=4, random_baseline=False)(scores, x, None, target)  # one batch's value
        {'soft_nc': tensor(...)}
    """

    def __init__(self, forward_fn: ForwardFn, **kwargs: Any) -> None:
        super().__init__(forward_fn, ("nc",), **kwargs)


@register_metric("soft_ns", title="Soft-NS", inputs="model", functional=soft_ns, default=True)
class SoftNS(SoftFaithfulness):
    """Soft normalised sufficiency alone: :class:`SoftFaithfulness` with ``kinds=("ns",)``.

    Its other arguments (``definition``, ``num_masks``, ``seed``, ``batch_size``, ``random_baseline``,
    ``scores_transform``, ``entropy_fraction``, ``exclude_last``, ``Metric`` options) by keyword.

    Example:
        >>> from heat_module.metrics import SoftNS
        >>> from heat_module.testing import tiny_metric_example
        >>> forward_fn, x, scores, target = tiny_metric_example()
        >>> sorted(SoftNS(forward_fn, num_masks=4)(scores, x, None, target))  # the random baseline's too
        ['soft_ns', 'soft_ns_log_ratio', 'soft_ns_random']
    """

    def __init__(self, forward_fn: ForwardFn, **kwargs: Any) -> None:
        super().__init__(forward_fn, ("ns",), **kwargs)
