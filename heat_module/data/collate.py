"""Examples, left-padded batching and the span-to-token mapping shared by the data modules.

A data module turns its file into a list of :class:`Example` (token ids of the context, the target id or -1 for
the greedy next token, and optional gold / distractor token positions counted in the unpadded example).
:class:`LeftPadCollator` stacks them into the batch dict that :class:`heat_module.HEATModule` consumes:

=================  ==========================  =====================================================
key                type / shape                meaning
=================  ==========================  =====================================================
``input_ids``      (batch, n) long             left padded with the tokenizer's pad id
``attention_mask`` (batch, n) long             1 on real tokens
``target_ids``     (batch,) long               the target token id, -1 = the model's greedy next token
``gold_mask``      (batch, n) bool             gold tokens (e.g. the important support words), aligned
                                               with ``input_ids``; all False where there is no gold
``distractor_mask`` (batch, n) bool            distractor tokens (same alignment)
``has_gold``       (batch,) bool               whether the example has a non-empty gold set
``ids``            list[str] (batch)           stable example ids (the writer's resume key)
``metadata``       list[dict] (batch)          anything else worth keeping next to the result
=================  ==========================  =====================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Example:
    """One attribution example before batching.

    Attributes:
        id: a stable id, unique within the data set (the writer skips ids it has already written).
        input_ids: the n context token ids (tokenizer defaults, exactly what ``HEAT.attribute(text)`` encodes).
        target_id: the target token id, or -1 for the model's greedy next token.
        gold: token positions (0..n-1) of the gold evidence, or ``None`` when the example has no annotation.
        distractor: token positions of the distractor segment, or ``None``.
        metadata: JSON-serialisable extras (source file and line, category, the raw text, ...).

    Example:
        >>> from heat_module.data import Example
        >>> Example(id="q1", input_ids=[4, 29, 65], gold=[1]).target_id  # -1: the model's greedy next token
        -1
    """

    id: str
    input_ids: list[int]
    target_id: int = -1
    gold: list[int] | None = None
    distractor: list[int] | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.id = str(self.id)
        n = len(self.input_ids)
        for name in ("gold", "distractor"):
            positions = getattr(self, name)
            if positions is not None and any(not 0 <= int(p) < n for p in positions):
                raise ValueError(f"Expected {name} positions in [0, {n}) for example {self.id!r}, got {positions}")


def pad_token_id(tokenizer: Any) -> int:
    """The id used for left padding: the tokenizer's pad token, else its eos token, else 0."""
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


class LeftPadCollator:
    """``collate_fn`` of the data modules: a list of :class:`Example` -> the batch dict of the module docstring.

    Args:
        pad_id: the token id written into padding positions (masked out; any valid id works).

    Example:
        >>> from heat_module.data import Example, LeftPadCollator
        >>> batch = LeftPadCollator(pad_id=0)([Example("a", [4, 29, 65], gold=[1]), Example("b", [7, 8])])
        >>> batch["input_ids"].tolist(), batch["gold_mask"].tolist(), batch["has_gold"].tolist()
        ([[4, 29, 65], [0, 7, 8]], [[False, True, False], [False, False, False]], [True, False])
    """

    def __init__(self, pad_id: int = 0) -> None:
        self.pad_id = int(pad_id)

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        if not examples:
            raise ValueError("Expected at least one example in a batch, got none")
        batch, n = len(examples), max(len(e.input_ids) for e in examples)
        input_ids = torch.full((batch, n), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros(batch, n, dtype=torch.long)
        gold_mask = torch.zeros(batch, n, dtype=torch.bool)
        distractor_mask = torch.zeros(batch, n, dtype=torch.bool)
        for b, e in enumerate(examples):
            start = n - len(e.input_ids)
            input_ids[b, start:] = torch.as_tensor(e.input_ids, dtype=torch.long)
            attention_mask[b, start:] = 1
            if e.gold:
                gold_mask[b, [start + int(p) for p in e.gold]] = True
            if e.distractor:
                distractor_mask[b, [start + int(p) for p in e.distractor]] = True
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "target_ids": torch.tensor([int(e.target_id) for e in examples], dtype=torch.long),
            "gold_mask": gold_mask,
            "distractor_mask": distractor_mask,
            "has_gold": gold_mask.any(-1),
            "ids": [e.id for e in examples],
            "metadata": [dict(e.metadata) for e in examples],
        }


def char_spans_to_tokens(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """Token positions whose character range overlaps any of ``spans``.

    Args:
        offsets: (n,) ``(start, end)`` character offsets of each token (a fast tokenizer's ``offset_mapping``);
            special tokens have ``start == end`` and never match.
        spans: ``(start, end)`` character ranges, end exclusive.
    Returns:
        Sorted token positions. A token that straddles a span's border (a BPE token with a leading space, or one
        that joins a word and its punctuation) counts as inside.

    Example:
        >>> from heat_module.data import char_spans_to_tokens
        >>> char_spans_to_tokens([(0, 3), (4, 7), (8, 11)], [(4, 9)])  # tokens overlapping characters 4..8
        [1, 2]
    """
    out = []
    for i, (s, e) in enumerate(offsets):
        if e <= s:
            continue
        if any(s < span_end and e > span_start for span_start, span_end in spans):
            out.append(i)
    return out


def continuation_ids(tokenizer: Any, context: str, continuation: str) -> list[int]:
    """The token ids ``continuation`` gets when it follows ``context``.

    Tokenises ``context + continuation`` and keeps what comes after the context's own tokens, so a BPE tokenizer
    sees the leading space and a word-level tokenizer drops it; falls back to encoding ``continuation`` alone when
    the concatenation re-tokenises the end of the context.

    Example:
        >>> from heat_module.testing import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> from heat_module.data import continuation_ids
        >>> tok.convert_ids_to_tokens(continuation_ids(tok, "the cat sat on the", " hill ."))
        ['hill', '.']
    """
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    full = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    if full[: len(ctx)] == ctx and len(full) > len(ctx):
        return list(full[len(ctx):])
    return list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
