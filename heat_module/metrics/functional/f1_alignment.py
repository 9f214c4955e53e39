"""F1 alignment with human rationales (HEAT paper appendix, eq. 21) and Span-F1.

Per example with gold set H (the annotated tokens, real tokens only) and A the top-|H| tokens by score
(ties: earlier position first),

    F1 = 2 |A ∩ H| / (|A| + |H|)          (= |A ∩ H| / |H| since |A| = |H|).

Span-F1 compares contiguous spans: the maximal runs of consecutive positions in A and in H; a predicted span is
correct when it equals a gold span exactly; precision = correct / #predicted spans, recall = correct / #gold
spans, Span-F1 = 2PR / (P + R) (0 when nothing matches). Examples with an empty gold set are skipped (F1 is
undefined there); ``compute`` returns NaN when every example was skipped. ``gold`` is a bool mask (batch, n)
aligned with the padded scores, or per-example index lists counted from the first real token.
"""

from __future__ import annotations

import torch

from heat_module.metrics.functional.common import IndexSpec, check_scores, index_mask, ranking


def _spans(positions: list[int]) -> set[tuple[int, int]]:
    """Maximal runs of consecutive integers as (start, end-inclusive) pairs."""
    spans, start, prev = set(), None, None
    for p in sorted(positions):
        if start is None:
            start = prev = p
        elif p == prev + 1:
            prev = p
        else:
            spans.add((start, prev))
            start = prev = p
    if start is not None:
        spans.add((start, prev))
    return spans


def _span_f1(pred: list[int], gold: list[int]) -> float:
    pred_spans, gold_spans = _spans(pred), _spans(gold)
    correct = len(pred_spans & gold_spans)
    if correct == 0:
        return 0.0
    precision, recall = correct / len(pred_spans), correct / len(gold_spans)
    return 2 * precision * recall / (precision + recall)


def f1_alignment_values(
    scores: torch.Tensor, gold: IndexSpec, attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example (F1 (batch,), Span-F1 (batch,), valid (batch,) bool — False where the gold set is empty)."""
    real = check_scores(scores, attention_mask)
    gold_m = index_mask(gold, real, "gold")
    batch = scores.shape[0]
    f1 = torch.zeros(batch, dtype=torch.float32)
    span = torch.zeros(batch, dtype=torch.float32)
    valid = gold_m.any(-1).cpu()
    for b in range(batch):
        if not valid[b]:
            continue
        pos = real[b].nonzero().flatten()
        gold_pos = gold_m[b].nonzero().flatten().tolist()
        top = pos[ranking(scores[b, pos])[: len(gold_pos)]].tolist()
        f1[b] = 2 * len(set(top) & set(gold_pos)) / (len(top) + len(gold_pos))
        span[b] = _span_f1(top, gold_pos)
    return f1.to(scores.device), span.to(scores.device), valid.to(scores.device)


def f1_alignment_update(
    scores: torch.Tensor, gold: IndexSpec, attention_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Running totals: (sum of F1, sum of Span-F1, number of examples with a non-empty gold set)."""
    f1, span, valid = f1_alignment_values(scores, gold, attention_mask)
    return f1.sum(), span.sum(), int(valid.sum())


def f1_alignment_compute(
    sum_f1: torch.Tensor, sum_span_f1: torch.Tensor, total: torch.Tensor | int
) -> dict[str, torch.Tensor]:
    """``{"f1": mean F1, "span_f1": mean Span-F1}``."""
    return {"f1": sum_f1 / total, "span_f1": sum_span_f1 / total}


def f1_alignment(
    scores: torch.Tensor, gold: IndexSpec, attention_mask: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Mean F1 and Span-F1 of the top-|gold| tokens against the gold tokens (module docstring).

    Args:
        scores: (batch, n) attribution scores.
        gold: (batch, n) bool mask or per-example index lists counted from the first real token.
        attention_mask: (batch, n) or ``None``.
    Returns:
        ``{"f1": scalar, "span_f1": scalar}``.

    Example:
        >>> import torch
        >>> scores = torch.tensor([[0.1, 0.2, 0.5, 0.1, 0.1]])
        >>> gold = torch.tensor([[False, True, True, False, False]])
        >>> from heat_module.metrics.functional import f1_alignment
        >>> f1_alignment(scores, gold)
        {'f1': tensor(1.), 'span_f1': tensor(1.)}
    """
    return f1_alignment_compute(*f1_alignment_update(scores, gold, attention_mask))
