"""Sentence-level and span-to-span HEAT (paper appendix "Extension to Sentence-Level Attribution", eq. 23–24).

Targets y_1..y_m are generated greedily (``targets=None``, at most ``max_new_tokens``, stopping after the tokenizer's
EOS) or given (a string, tokenised without special tokens, or token ids). For target t the context is the prompt
followed by y_1..y_{t-1} (teacher forcing), and token-level HEAT (with the instance's config: every curvature mode,
windowing, ...) gives Attr^{(t)}_i = M_t[i](β S_i^{(t)} + γ I_i^{(t)}) over that context; only the prompt tokens
i < n_prompt are kept. Aggregation over the target positions (eq. 23 and the Table 20 alternatives):

- ``"mean"``: Attr_sent(x_i → 𝒯) = (1/|𝒯|) Σ_t Attr^{(t)}_i  (eq. 23, the paper's Average-HEAT);
- ``"max"``: max_t Attr^{(t)}_i  (Max-HEAT);  ``"sum"``: Σ_t Attr^{(t)}_i  (Sum-HEAT).

Span-to-span (eq. 24): for input spans S_in = [a, b) over prompt positions and target spans 𝒯 = [c, e) over target
positions (default: the whole target sentence), Attr_span(S_in → 𝒯) = Σ_{i∈S_in} Attr_sent(x_i → 𝒯), with
Attr_sent aggregated over the targets in 𝒯 only.

The returned :class:`AttributionResult` is over the prompt tokens: ``scores`` the aggregated Attr_sent, and the
component fields the same aggregation of M_t, S^{(t)}, I^{(t)} restricted to the prompt (so for ``"mean"`` its
``transition`` no longer sums to one once targets extend the context). ``extra`` holds the target ids and strings,
the per-target (m, n_prompt) matrices of scores and components, and the span scores.

The estimator is passed in (:meth:`heat_module.heat.estimator.HEAT.attribute_sentence` calls
:func:`attribute_sentence` with itself); only its public methods are used (:class:`SentenceEstimator`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from heat_module.attribution.generation import attribute_generation
from heat_module.config import AGGREGATIONS, HEATConfig
from heat_module.generation_result import GenerationResult
from heat_module.result import AttributionResult, Cost


class SentenceEstimator(Protocol):
    """What sentence-level HEAT needs from the estimator: public methods of
    :class:`heat_module.heat.estimator.HEAT`."""

    config: HEATConfig
    tokenizer: Any
    model: Any

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text_or_ids: str | Sequence[int] | torch.Tensor) -> torch.Tensor: ...

    def token_strings(self, ids: torch.Tensor) -> list[str]: ...

    def target_id(self, target: int | str | None, logits: torch.Tensor | None) -> int: ...

    def attribute(self, text_or_ids: str | Sequence[int] | torch.Tensor,
                  target: int | str | None = None) -> AttributionResult: ...


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


def _check_spans(spans: Sequence[tuple[int, int]], size: int, what: str) -> list[tuple[int, int]]:
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
    spans = _check_spans(spans, n, "input")
    target_spans = _check_spans(target_spans if target_spans is not None else [(0, m)], m, "target")
    out = torch.zeros(len(spans), len(target_spans), dtype=torch.float32)
    for j, (c, e) in enumerate(target_spans):
        sent = aggregate(per_target[c:e], aggregation)
        for k, (a, b) in enumerate(spans):
            out[k, j] = sent[a:b].sum()
    return out


def _given_targets(heat: SentenceEstimator, targets: str | Sequence[int] | torch.Tensor) -> list[int]:
    if isinstance(targets, str):
        if heat.tokenizer is None:
            raise ValueError("Expected a tokenizer to encode text targets, got None (pass token ids)")
        ids = list(heat.tokenizer(targets, add_special_tokens=False)["input_ids"])
    else:
        ids = [int(t) for t in torch.as_tensor(targets).flatten().tolist()]
    if not ids:
        raise ValueError("Expected at least one target token, got none")
    for t in ids:
        if not 0 <= t < heat.vocab_size:
            raise ValueError(f"Expected target ids in [0, {heat.vocab_size}), got {t}")
    return ids


def attribute_sentence(
    heat: SentenceEstimator,
    text_or_ids: str | Sequence[int] | torch.Tensor,
    targets: str | Sequence[int] | torch.Tensor | None = None,
    max_new_tokens: int = 8,
    aggregation: str | None = None,
    spans: Sequence[tuple[int, int]] | None = None,
    target_spans: Sequence[tuple[int, int]] | None = None,
) -> AttributionResult:
    """Sentence-level HEAT (eq. 23) over the prompt tokens, with span-to-span scores (eq. 24) on request.

    The per-target rows are the rows of the generation matrix
    (:func:`heat_module.attribution.generation.attribute_generation`, one ``attribute`` call per target), aggregated
    by :func:`sentence_from_generation`.

    Args:
        heat: the estimator (its config is used for every target).
        text_or_ids: the prompt (text or (n,) ids).
        targets: ``None`` (greedy, ``max_new_tokens`` tokens, stops after EOS), a string or target ids.
        max_new_tokens: m for greedy targets (ignored when targets are given). ≥ 1.
        aggregation: ``"mean"`` | ``"max"`` | ``"sum"`` (default ``heat.config.aggregation``).
        spans: input spans [a, b) over prompt tokens for eq. 24; ``target_spans``: spans over target positions.
    Returns:
        :class:`AttributionResult` over the n prompt tokens; ``extra`` keys ``targets``, ``target_tokens``,
        ``aggregation``, ``per_target`` ({scores, transition, curvature, information}: m × n lists) and
        ``span_scores`` (len(spans) × len(target_spans)) when spans are given.
    """
    how = heat.config.aggregation if aggregation is None else aggregation
    if how not in AGGREGATIONS:
        raise ValueError(f"Expected aggregation to be one of {list(AGGREGATIONS)}, got {how!r}")
    given = None if targets is None else _given_targets(heat, targets)
    if given is None and (not isinstance(max_new_tokens, int) or max_new_tokens < 1):
        raise ValueError(f"Expected max_new_tokens to be an integer >= 1, got {max_new_tokens!r}")
    generation = attribute_generation(heat, heat.encode(text_or_ids), continuation=given,
                                      max_new_tokens=None if given is not None else max_new_tokens)
    result = sentence_from_generation(generation, how, spans, target_spans)
    result.method = "heat-sentence"
    result.config = heat.config.to_dict()
    return result


def sentence_from_generation(
    generation: GenerationResult,
    how: str = "mean",
    spans: Sequence[tuple[int, int]] | None = None,
    target_spans: Sequence[tuple[int, int]] | None = None,
) -> AttributionResult:
    """Eq. 23 (and eq. 24 with ``spans``) over the prompt columns of a generation matrix.

    Args:
        generation: a token-level :class:`GenerationResult` (its rows' components are aggregated too when kept).
        how: ``"mean"`` | ``"max"`` | ``"sum"`` over the rows.
        spans, target_spans: as in :func:`attribute_sentence`.
    Returns:
        The :class:`AttributionResult` of :func:`attribute_sentence` (method ``"<method>-sentence"``).
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"Expected aggregation to be one of {list(AGGREGATIONS)}, got {how!r}")
    if "groups" in generation.extra:
        raise ValueError("Expected a token-level generation result, got one merged by aggregate()")
    n = generation.n_prompt
    mats: dict[str, torch.Tensor] = {"scores": generation.matrix[:, :n].float()}
    if generation.rows is not None:
        for name in ("transition", "curvature", "information", "first_order"):
            values = [getattr(r, name) for r in generation.rows]
            if all(v is not None for v in values):
                mats[name] = torch.stack([v[:n].float() for v in values])
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
