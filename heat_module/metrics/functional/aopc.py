"""AOPC comprehensiveness (ERASER, DeYoung et al. 2020), functional form (class: :class:`heat_module.metrics.AOPC`).

For each example with n real tokens ranked by score (ties: earlier position first) and target y,

    AOPC = 1/|K| Σ_{k ∈ K} [ P(y | x) − P(y | x with its top-⌈k·n/100⌉ tokens' embeddings zeroed) ],

K = {1, 5, 10, 20, 50} (percent; at least one token), then the mean over examples. Higher is better: removing the
tokens a faithful method ranks first should lower the target's probability most. Removal zeroes the embedding
(docs/design.md) or, with ``perturbation="deletion"``, takes the tokens out of the sequence; padding is never
touched. All removal copies of a batch go through ``forward_fn`` in chunks of ``batch_size`` rows.

Over the context (:mod:`heat_module.metrics.functional.context`): with ``exclude_last=k`` the final k real tokens
(and any ``protected`` positions) are never removed nor ranked; n above is then the number of context tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from heat_module.metrics.functional.common import ForwardFn, IndexSpec, topk_count
from heat_module.metrics.functional.context import (
    Perturbation,
    check_exclude_last,
    check_perturbation,
    context_removal_probs,
)

AOPC_PERCENTS = (1, 5, 10, 20, 50)


@dataclass(frozen=True)
class AOPCOptions:
    """The options of :func:`aopc` (documented there), checked on construction."""

    percents: Sequence[float] = AOPC_PERCENTS
    batch_size: int = 64
    exclude_last: int = 0
    perturbation: Perturbation = "zero"

    def __post_init__(self) -> None:
        check_exclude_last(self.exclude_last)
        check_perturbation(self.perturbation)
        percents = tuple(self.percents)
        object.__setattr__(self, "percents", percents)
        if not percents or any(not 0 < p <= 100 for p in percents):
            raise ValueError(f"Expected percents in (0, 100], got {percents}")


def aopc_values(
    scores: torch.Tensor, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, target_ids: torch.Tensor,
    forward_fn: ForwardFn, protected: IndexSpec | None = None, **options: Any,
) -> torch.Tensor:
    """(batch,) per-example AOPC.

    Args:
        scores: (batch, n) attribution scores (only their ranking matters).
        inputs_embeds: (batch, n, d) left-padded embeddings.
        attention_mask: (batch, n) or ``None``.
        target_ids: (batch,) the target token ids y.
        forward_fn: ``f(inputs_embeds (rows, n, d), attention_mask (rows, n)) -> logits (rows, V)``.
        protected: positions never removed nor ranked (bool (batch, n) or per-example index lists), or ``None``.
        options: the keyword options of :func:`aopc` (``percents``, ``batch_size``, ``exclude_last``,
            ``perturbation``).
    """
    opts = AOPCOptions(**options)

    def removals(n_real: int) -> list[slice]:  # x itself, then x without its top k for each k in K
        return [slice(0, 0)] + [slice(0, topk_count(pct, n_real)) for pct in opts.percents]

    probs = context_removal_probs(scores, inputs_embeds, attention_mask, target_ids, forward_fn, removals,
                                  opts.batch_size, opts.exclude_last, protected,
                                  opts.perturbation)  # each (1 + |K|,)
    return torch.stack([(p[0] - p[1:]).mean() for p in probs]).float()


def aopc_update(
    scores: torch.Tensor, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, target_ids: torch.Tensor,
    forward_fn: ForwardFn, protected: IndexSpec | None = None, **options: Any,
) -> tuple[torch.Tensor, int]:
    """Running totals: (sum of per-example AOPC, number of examples); arguments as :func:`aopc_values`."""
    values = aopc_values(scores, inputs_embeds, attention_mask, target_ids, forward_fn, protected, **options)
    return values.sum(), len(values)


def aopc_compute(total_aopc: torch.Tensor, total: torch.Tensor | int) -> torch.Tensor:
    """Mean AOPC over examples."""
    return total_aopc / total


def aopc(
    scores: torch.Tensor,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    target_ids: torch.Tensor,
    forward_fn: ForwardFn,
    percents: Sequence[float] = AOPC_PERCENTS,
    batch_size: int = 64,
    exclude_last: int = 0,
    perturbation: Perturbation = "zero",
    protected: IndexSpec | None = None,
) -> torch.Tensor:
    """Mean AOPC comprehensiveness of a batch (module docstring): a scalar tensor.

    Args:
        scores: (batch, n) attribution scores.
        inputs_embeds: (batch, n, d) left-padded embeddings.
        attention_mask: (batch, n) or ``None``.
        target_ids: (batch,) target ids.
        forward_fn: from ``heat_module.lm.forward.forward_fn``.
        percents: the k values in percent (default 1, 5, 10, 20, 50).
        batch_size: rows per forward call.
        exclude_last: how many final real tokens are never removed nor ranked (0: every real token is context).
        perturbation: ``"zero"`` (embeddings zeroed) or ``"deletion"`` (tokens taken out of the sequence).
        protected: further positions never removed nor ranked: a bool (batch, n) mask or per-example index lists
            counted from the first real token (e.g. the query span of a templated prompt).

    Example:
        >>> from heat_module.testing import tiny_metric_example
        >>> forward_fn, x, scores, target = tiny_metric_example()  # "the cat sat on the" -> "road", fixed scores
        >>> from heat_module.metrics.functional import aopc
        >>> value = aopc(scores, x, None, target, forward_fn, percents=(20, 40))
        >>> value.shape, bool(value.isfinite())
        (torch.Size([]), True)
    """
    total_aopc, total = aopc_update(scores, inputs_embeds, attention_mask, target_ids, forward_fn, protected,
                                     percents=percents, batch_size=batch_size, exclude_last=exclude_last,
                                     perturbation=perturbation)
    return aopc_compute(total_aopc, total)
