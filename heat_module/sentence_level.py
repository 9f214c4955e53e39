"""Sentence-level aggregation of per-target attribution rows (paper appendix, eq. 23–24), read from a generation
matrix: ``"mean"`` (eq. 23, Average-HEAT), ``"max"``, ``"sum"`` over the target rows, and span-to-span scores
(eq. 24). :mod:`heat_module.heat.sentence` produces the rows; this module only aggregates them, so a
:class:`~heat_module.generation_result.GenerationResult` can aggregate itself without importing the method.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from heat_module.config import AGGREGATIONS
from heat_module.result import AttributionResult, Cost


def aggregate(matrix: torch.Tensor, how: str) -> torch.Tensor:
    """(m, n) per-target rows -> (n,) aggregated over targets (``"mean"`` eq. 23, ``"max"``, ``"sum"``)."""
    if matrix.dim() != 2 or matrix.shape[0] == 0:
        raise ValueError(f"Expected a (targets, tokens) matrix with at least one target, got {tuple(matrix.shape)}")
    if how == "mean":
        return matrix.mean(0)
    if how == "max":
        return matrix.max(0).values
    if how == "sum":
        return matrix.sum(0)
    raise ValueError(f"Expected aggregation to be one of {list(AGGREGATIONS)}, got {how!r}")


def check_spans(spans: Sequence[tuple[int, int]], size: int, what: str) -> list[tuple[int, int]]:
    out = []
    for span in spans:
        if len(span) != 2:
            raise ValueError(f"Expected {what} spans as (start, end) pairs, got {span!r}")
        a, b = int(span[0]), int(span[1])
        if not 0 <= a < b <= size:
            raise ValueError(f"Expected {what} spans [a, b) with 0 <= a < b <= {size}, got ({a}, {b})")
        out.append((a, b))
    return out


def span_scores(
    per_target: torch.Tensor,
    spans: Sequence[tuple[int, int]],
    target_spans: Sequence[tuple[int, int]] | None = None,
    aggregation: str = "mean",
) -> torch.Tensor:
    """Eq. 24: (len(spans), len(target_spans)) Σ_{i∈S_in} Attr_sent(x_i → 𝒯).

    Args:
        per_target: (m, n) Attr^{(t)}_i.
        spans: input spans [a, b) over the n prompt tokens.
        target_spans: target spans [c, e) over the m targets (default one span: all targets).
    """
    m, n = per_target.shape
    spans = check_spans(spans, n, "input")
    target_spans = check_spans(target_spans if target_spans is not None else [(0, m)], m, "target")
    out = torch.zeros(len(spans), len(target_spans), dtype=per_target.dtype)
    for j, (c, e) in enumerate(target_spans):
        sent = aggregate(per_target[c:e], aggregation)
        for k, (a, b) in enumerate(spans):
            out[k, j] = sent[a:b].sum()
    return out


def sentence_from_generation(
    generation: Any,
    how: str = "mean",
    spans: Sequence[tuple[int, int]] | None = None,
    target_spans: Sequence[tuple[int, int]] | None = None,
) -> AttributionResult:
    """Eq. 23 (and eq. 24 with ``spans``) over the prompt columns of a generation matrix.

    Args:
        generation: a token-level :class:`~heat_module.generation_result.GenerationResult` (its rows' components
            are aggregated too when kept).
        how: ``"mean"`` | ``"max"`` | ``"sum"`` over the rows.
        spans, target_spans: as in :func:`heat_module.heat.sentence.attribute_sentence`.
    Returns:
        The :class:`AttributionResult` of :func:`attribute_sentence` (method ``"<method>-sentence"``).
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"Expected aggregation to be one of {list(AGGREGATIONS)}, got {how!r}")
    if "groups" in generation.extra:
        raise ValueError("Expected a token-level generation result, got one merged by aggregate()")
    n = generation.n_prompt
    mats: dict[str, torch.Tensor] = {"scores": generation.matrix[:, :n]}
    if generation.rows is not None:
        for name in ("transition", "curvature", "information", "first_order"):
            values = [getattr(r, name) for r in generation.rows]
            if all(v is not None for v in values):
                mats[name] = torch.stack([v[:n] for v in values])
        mats = {name: mats[name] for name in ("scores", "transition", "curvature", "information", "first_order")
                if name in mats}
    scores = aggregate(mats["scores"], how)
    comps = {name: aggregate(mats[name], how) if name in mats else None
             for name in ("transition", "curvature", "information", "first_order")}
    target_ids = [int(t) for t in generation.generated_ids.tolist()]
    target_tokens = generation.generated_tokens
    extra: dict = {
        "targets": target_ids,
        "target_tokens": target_tokens,
        "aggregation": how,
        "per_target": {name: mat.tolist() for name, mat in mats.items()},
    }
    if spans is not None:
        table = span_scores(mats["scores"], spans, target_spans, how)
        extra["spans"] = [list(s) for s in spans]
        extra["target_spans"] = [list(s) for s in (target_spans or [(0, len(target_ids))])]
        extra["span_scores"] = table.tolist()
    cost = Cost()
    if generation.rows is not None:
        for r in generation.rows:
            cost.add(Cost.from_dict(r.cost))
    else:
        cost = generation.cost
    return AttributionResult(
        tokens=generation.tokens[:n],
        token_ids=generation.prompt_ids.clone(),
        target="".join(target_tokens),
        target_id=target_ids[0],
        scores=scores,
        transition=comps["transition"],
        curvature=comps["curvature"],
        information=comps["information"],
        first_order=comps["first_order"],
        method=f"{generation.method}-sentence",
        config=dict(generation.options),
        cost=cost,
        extra=extra,
    )
