"""ABPC — area between the perturbation curves (AttnLRP, Achtibat et al. 2024, after Blücher et al. 2024), functional
form (class: :class:`heat_module.metrics.ABPC`).

For an example with n real tokens ranked by score (ties: earlier position first), target y, and the fractions
f_j = j / T (j = 1 … T−1; T = ``steps``), with k_j = clamp(round(f_j·n), 1, n − 1) tokens:

- deletion (most important first): D_j = P(y | x with its top-k_j tokens' embeddings zeroed);
- insertion (most important first): I_j = P(y | x with every real token zeroed except its top k_j).

    ABPC = (1/T) Σ_{j=1}^{T−1} (I_j − D_j),

the trapezoidal area between the two curves on [0, 1]: at f = 0 (I = P(y | all zeroed), D = P(y | x)) and at
f = 1 (the two swapped) the differences cancel, so only the interior points count. Inserting the top k tokens is
deleting the n − k least important ones, so this is also the area between the least-relevant-first and the
most-relevant-first deletion curves, as the AttnLRP paper reports it. Higher is better. Because only the order of
the scores counts, a method cannot gain by being peaked. Removal zeroes the embedding (as AOPC) or, with
``perturbation="deletion"``, takes the tokens out of the sequence (so a method that was built on zeroing is also
scored under another perturbation); padding is never touched. Deterministic.

Over the context (:mod:`heat_module.metrics.functional.context`): with ``exclude_last=k`` the final k real tokens
(and any ``protected`` positions) are never removed nor ranked and stay in every copy, including the insertion
copies; n above is then the number of context tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from heat_module.metrics.functional.common import ForwardFn, IndexSpec
from heat_module.metrics.functional.context import (
    Perturbation,
    check_exclude_last,
    check_perturbation,
    context_removal_probs,
)


@dataclass(frozen=True)
class ABPCOptions:
    """The options of :func:`abpc` (documented there), checked on construction."""

    steps: int = 10
    batch_size: int = 64
    exclude_last: int = 0
    perturbation: Perturbation = "zero"

    def __post_init__(self) -> None:
        check_exclude_last(self.exclude_last)
        check_perturbation(self.perturbation)
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 2:
            raise ValueError(f"Expected steps to be an integer >= 2, got {self.steps!r}")


def abpc_counts(n: int, steps: int) -> list[int]:
    """The token counts k_j = clamp(round(j·n/steps), 1, n − 1) for j = 1 … steps − 1 (n ≥ 2)."""
    return [min(max(round(j * n / steps), 1), max(n - 1, 1)) for j in range(1, steps)]


def abpc_values(
    scores: torch.Tensor, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, target_ids: torch.Tensor,
    forward_fn: ForwardFn, protected: IndexSpec | None = None, **options: Any,
) -> torch.Tensor:
    """(batch,) per-example ABPC.

    Args:
        scores: (batch, n) attribution scores (only their ranking matters).
        inputs_embeds: (batch, n, d) left-padded embeddings.
        attention_mask: (batch, n) or ``None``.
        target_ids: (batch,) the target token ids y.
        forward_fn: ``f(inputs_embeds (rows, n, d), attention_mask (rows, n)) -> logits (rows, V)``.
        protected: positions never removed nor ranked (bool (batch, n) or per-example index lists), or ``None``.
        options: the keyword options of :func:`abpc` (``steps``, ``batch_size``, ``exclude_last``,
            ``perturbation``).
    """
    opts = ABPCOptions(**options)

    def removals(n_real: int) -> list[slice]:  # per k_j: inserted (all but the top k_j zeroed), deleted (top k_j)
        return [cut for k in abpc_counts(n_real, opts.steps) for cut in (slice(k, None), slice(0, k))]

    probs = context_removal_probs(scores, inputs_embeds, attention_mask, target_ids, forward_fn, removals,
                                  opts.batch_size, opts.exclude_last, protected,
                                  opts.perturbation)  # each (2 (T − 1),): I_1, D_1, I_2, ...
    return torch.stack([(p[0::2] - p[1::2]).sum() / opts.steps for p in probs]).float()


def abpc_update(
    scores: torch.Tensor, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, target_ids: torch.Tensor,
    forward_fn: ForwardFn, protected: IndexSpec | None = None, **options: Any,
) -> tuple[torch.Tensor, int]:
    """Running totals: (sum of per-example ABPC, number of examples); arguments as :func:`abpc_values`."""
    values = abpc_values(scores, inputs_embeds, attention_mask, target_ids, forward_fn, protected, **options)
    return values.sum(), len(values)


def abpc_compute(total_abpc: torch.Tensor, total: torch.Tensor | int) -> torch.Tensor:
    """Mean ABPC over examples."""
    return total_abpc / total


def abpc(
    scores: torch.Tensor,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    target_ids: torch.Tensor,
    forward_fn: ForwardFn,
    steps: int = 10,
    batch_size: int = 64,
    exclude_last: int = 0,
    perturbation: Perturbation = "zero",
    protected: IndexSpec | None = None,
) -> torch.Tensor:
    """Mean ABPC of a batch (module docstring): a scalar tensor.

    Args:
        scores: (batch, n) attribution scores.
        inputs_embeds: (batch, n, d) left-padded embeddings.
        attention_mask: (batch, n) or ``None``.
        target_ids: (batch,) target ids.
        forward_fn: from ``heat_module.lm.forward.forward_fn``.
        steps: T, the number of intervals of [0, 1] (T − 1 interior points, 2 (T − 1) forward rows per example).
        batch_size: rows per forward call.
        exclude_last: how many final real tokens are never removed nor ranked (0: every real token is context).
        perturbation: ``"zero"`` (embeddings zeroed) or ``"deletion"`` (tokens taken out of the sequence).
        protected: further positions never removed nor ranked: a bool (batch, n) mask or per-example index lists
            counted from the first real token (e.g. the query span of a templated prompt).

    Example:
        >>> from heat_module.testing import tiny_metric_example
        >>> forward_fn, x, scores, target = tiny_metric_example()  # "the cat sat on the" -> "road", fixed scores
        >>> from heat_module.metrics.functional import abpc
        >>> value = abpc(scores, x, None, target, forward_fn, steps=5)
        >>> value.shape, bool(value.isfinite())
        (torch.Size([]), True)
    """
    total_abpc, total = abpc_update(scores, inputs_embeds, attention_mask, target_ids, forward_fn, protected,
                                     steps=steps, batch_size=batch_size, exclude_last=exclude_last,
                                     perturbation=perturbation)
    return abpc_compute(total_abpc, total)
