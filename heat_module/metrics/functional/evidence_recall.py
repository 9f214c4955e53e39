"""Evidence recall: how much of the known evidence a method ranks first among the context tokens.

For one example with context C (the real tokens without the final ``exclude_last`` ones and any ``protected``
positions; :func:`heat_module.metrics.functional.context.context_mask`), evidence tokens E ⊆ C (E = the given
evidence ∩ C, which must not be empty) and k = ``top_k`` (default |E|, i.e. R-precision), capped at |C|:

    recall@k = E[|top_k(C) ∩ E|] / |E|,

where top_k(C) are the k context tokens with the highest scores. Ties are broken uniformly at random and the
expectation is taken exactly: a group of g tied tokens of which only r fit into the top k contributes r/g per
evidence token in it. So constant scores score the chance level k/|C| whatever the evidence's position (breaking
ties by position would hand an early evidence span to any method that says nothing). Only the order of the scores
counts. Higher is better; averaged over examples. No model is needed.
"""

from __future__ import annotations

import torch

from heat_module.metrics.functional.common import IndexSpec, check_scores, index_mask
from heat_module.metrics.functional.context import check_exclude_last, context_mask


def expected_topk_membership(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(n,) scores -> (n,) fp64 probability that each token is among the top k when ties are broken uniformly at
    random: 1 above the cut, 0 below, r/g for the g tokens of the tie group that straddles it with r places left."""
    v = scores.double()
    out = torch.zeros_like(v)
    left = k
    for value in torch.unique(v, sorted=True).flip(0):  # groups from the highest score down
        if left <= 0:
            break
        group = v == value
        g = int(group.sum())
        out[group] = min(1.0, left / g)
        left -= g
    return out


def check_options(top_k: int | None, exclude_last: int) -> None:
    """Raise ``ValueError`` unless ``top_k`` is ``None`` or an int ≥ 1 and ``exclude_last`` an int ≥ 0."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"Expected top_k to be None or an integer >= 1, got {top_k!r}")
    check_exclude_last(exclude_last)


def evidence_recall_values(
    scores: torch.Tensor,
    evidence: IndexSpec,
    attention_mask: torch.Tensor | None = None,
    top_k: int | None = None,
    exclude_last: int = 1,
    protected: IndexSpec | None = None,
) -> torch.Tensor:
    """(batch,) per-example recall@k; arguments as :func:`evidence_recall`."""
    check_options(top_k, exclude_last)
    real = check_scores(scores, attention_mask)
    ctx = context_mask(real, exclude_last, protected)
    ev = index_mask(evidence, real, "evidence") & ctx
    empty = (~ev.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise ValueError(f"Expected at least one evidence token in the context of every example, got none in rows "
                         f"{empty.tolist()}")
    out = torch.zeros(scores.shape[0], dtype=torch.float64, device=scores.device)
    for b in range(scores.shape[0]):
        n_ev = int(ev[b].sum())
        k = min(top_k if top_k is not None else n_ev, int(ctx[b].sum()))
        member = expected_topk_membership(scores[b, ctx[b]], k)
        out[b] = member[ev[b, ctx[b]]].sum() / n_ev
    return out.float()


def evidence_recall_update(
    scores: torch.Tensor, evidence: IndexSpec, attention_mask: torch.Tensor | None = None, top_k: int | None = None,
    exclude_last: int = 1, protected: IndexSpec | None = None,
) -> tuple[torch.Tensor, int]:
    """Running totals: (sum of per-example recall, number of examples)."""
    values = evidence_recall_values(scores, evidence, attention_mask, top_k, exclude_last, protected)
    return values.sum(), len(values)


def evidence_recall_compute(total_recall: torch.Tensor, total: torch.Tensor | int) -> torch.Tensor:
    """Mean recall over examples."""
    return total_recall / total


def evidence_recall(
    scores: torch.Tensor,
    evidence: IndexSpec,
    attention_mask: torch.Tensor | None = None,
    top_k: int | None = None,
    exclude_last: int = 1,
    protected: IndexSpec | None = None,
) -> torch.Tensor:
    """Mean evidence recall@k of a batch (module docstring): a scalar tensor.

    Args:
        scores: (batch, n) attribution scores (only their order counts).
        evidence: the evidence tokens: (batch, n) bool mask, or per-example index lists counted from the first
            real token (e.g. :func:`heat_module.data.evidence.evidence_tokens`' ``"evidence"``).
        attention_mask: (batch, n) or ``None``.
        top_k: how many top-ranked context tokens count; ``None``: as many as there are evidence tokens.
        exclude_last: how many final real tokens are left out of the ranking (default 1: the last token, which
            every causal LM leans on, can neither win nor take a place in the top k).
        protected: further positions left out of the ranking (e.g. the query), same forms as ``evidence``.

    Example:
        >>> import torch
        >>> scores = torch.tensor([[0.1, 0.2, 0.5, 0.1, 0.1]])
        >>> gold = torch.tensor([[False, True, True, False, False]])
        >>> from heat_module.metrics.functional import evidence_recall
        >>> evidence_recall(scores, gold, top_k=2)
        tensor(1.)
    """
    total_recall, total = evidence_recall_update(scores, evidence, attention_mask, top_k, exclude_last, protected)
    return evidence_recall_compute(total_recall, total)
