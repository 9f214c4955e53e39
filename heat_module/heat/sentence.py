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
from heat_module.result import AttributionResult
from heat_module.sentence_level import sentence_from_generation


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
    (:func:`heat_module.attribution.generation.attribute_generation`: each row the ``attribute`` call of its target,
    computed together from the longest prefix where that is exact), aggregated
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
