"""Merging token scores into words, sentences or given spans (what :meth:`AttributionResult.aggregate` does).

The rule (documented once, here): every token is placed in the text by its character offsets — the tokenizer's
``offset_mapping`` of the decoded context when a fast tokenizer re-encodes it to the same ids, else the running
lengths of the decoded token strings (which concatenate to the decoded text). A **word** is a maximal run of
non-whitespace characters (so the words are exactly ``text.split()`` when no token spans whitespace); a token
belongs to the word that holds its first non-whitespace character, and a whitespace-only token (``"\\n"``, a lone
space) joins the next word (the last word at the end); a token that holds whitespace inside (``"x y"``) cannot be
split, so the words it touches form one group. A **sentence** is a run of text ending in ``.``, ``!`` or ``?``
followed by whitespace (or the end of the text), assigned the same way. Given **spans** are token ranges
``[a, b)``; tokens outside every span stay on their own. Scores of a group are reduced by ``"sum"`` (the default: a
word's attribution is the total of its pieces, so the total attribution is unchanged), ``"max"`` or ``"mean"``.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any, Literal

import torch

Level = Literal["words", "sentences"]
Reduce = Literal["sum", "max", "mean"]
LEVELS: tuple[str, ...] = ("words", "sentences")
REDUCES: tuple[str, ...] = ("sum", "max", "mean")

_SENTENCE = re.compile(r"\S.*?(?:[.!?](?=\s|$)|$)", re.DOTALL)


def token_offsets(tokens: Sequence[str], token_ids: Sequence[int] | None = None,
                  tokenizer: object | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text and each token's ``(start, end)`` character offsets in it.

    With a fast ``tokenizer`` whose re-encoding of ``tokenizer.decode(token_ids)`` gives the same ids, its
    ``offset_mapping`` is used; otherwise the offsets are the running lengths of ``tokens``.
    """
    if tokenizer is not None and token_ids is not None:
        ids = [int(i) for i in token_ids]
        try:
            text = tokenizer.decode(ids)
        except (NotImplementedError, TypeError, ValueError):  # a tokenizer that cannot decode: running lengths
            text = None
        offsets = None if text is None else tokenizer_offsets(tokenizer, text, ids)
        if offsets is not None:
            return text, offsets
    offsets, pos = [], 0
    for tok in tokens:
        offsets.append((pos, pos + len(tok)))
        pos += len(tok)
    return "".join(tokens), offsets


def tokenizer_offsets(tokenizer: Any, text: str, ids: Sequence[int]) -> list[tuple[int, int]] | None:
    """Each token's ``(start, end)`` character offsets in ``text`` from ``tokenizer``'s offset mapping, when
    re-encoding ``text`` (without special tokens) gives exactly ``ids``; ``None`` otherwise, and for tokenizers
    without offsets (slow ones)."""
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):  # slow tokenizers have no offsets
        return None
    if list(enc["input_ids"]) != [int(i) for i in ids]:
        return None
    return [(int(a), int(b)) for a, b in enc["offset_mapping"]]


def _assign(text: str, offsets: Sequence[tuple[int, int]], units: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Token indices per group by the rule of the module docstring; a token whose text spans several units (inner
    whitespace, ``"x y"``) joins them into one group, so every group is a union of whole units and whole tokens.
    Groups that no token reaches are left out."""
    if not units:
        return []
    starts = [u[0] for u in units]
    owner: list[int] = []  # per token: its unit (first non-whitespace character), -1 for whitespace-only tokens
    joined = [False] * len(units)  # joined[k]: unit k belongs to the group of unit k - 1
    for a, b in offsets:
        piece = text[a:b]
        if not piece.strip():
            owner.append(-1)
            continue
        first = a + len(piece) - len(piece.lstrip())
        last = a + len(piece.rstrip()) - 1
        k0 = max(bisect_right(starts, first) - 1, 0)
        k1 = max(bisect_right(starts, last) - 1, k0)
        for k in range(k0 + 1, k1 + 1):
            joined[k] = True
        owner.append(k0)
    group_of, count = [], 0
    for k in range(len(units)):
        if k == 0 or not joined[k]:
            count += 1
        group_of.append(count - 1)
    groups: list[list[int]] = [[] for _ in range(count)]
    pending: list[int] = []
    for i, k in enumerate(owner):
        if k < 0:
            pending.append(i)
            continue
        groups[group_of[k]].extend(pending + [i])
        pending = []
    if pending:
        for g in reversed(groups):
            if g:
                g.extend(pending)
                break
        else:
            groups[-1].extend(pending)
    return [sorted(g) for g in groups if g]


def word_groups(text: str, offsets: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Token indices of each word (a maximal non-whitespace run of ``text``; words joined by a token that spans
    them form one group), in order.

    Example:
        >>> from heat_module.words import word_groups
        >>> word_groups("the cat sat", [(0, 3), (3, 4), (4, 7), (8, 11)])  # "cat" spans the tokens " " and "cat"
        [[0], [1, 2], [3]]
    """
    return _assign(text, offsets, [m.span() for m in re.finditer(r"\S+", text)])


def sentence_groups(text: str, offsets: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Token indices of each sentence (text up to ``.``/``!``/``?`` before whitespace or the end)."""
    return _assign(text, offsets, [m.span() for m in _SENTENCE.finditer(text)])


def span_groups(n: int, spans: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Token indices per group for token spans ``[a, b)`` (disjoint); uncovered tokens are groups of one."""
    cover: dict[int, int] = {}
    for a, b in spans:
        a, b = int(a), int(b)
        if not 0 <= a < b <= n:
            raise ValueError(f"Expected spans [a, b) with 0 <= a < b <= {n}, got ({a}, {b})")
        for i in range(a, b):
            if i in cover:
                raise ValueError(f"Expected disjoint spans, got token {i} in two spans")
            cover[i] = a
    groups, i = [], 0
    while i < n:
        if i in cover:
            j = i
            while j < n and cover.get(j) == cover[i]:
                j += 1
            groups.append(list(range(i, j)))
            i = j
        else:
            groups.append([i])
            i += 1
    return groups


def reduce_groups(values: torch.Tensor, groups: Sequence[Sequence[int]], reduce: str = "sum") -> torch.Tensor:
    """(n,) token values -> (len(groups),) group values by ``reduce`` (``"sum"`` | ``"max"`` | ``"mean"``)."""
    if reduce not in REDUCES:
        raise ValueError(f"Expected reduce to be one of {list(REDUCES)}, got {reduce!r}")
    out = []
    for g in groups:
        v = values[list(g)]
        out.append(v.sum() if reduce == "sum" else v.max() if reduce == "max" else v.mean())
    return torch.stack(out) if out else values.new_zeros(0)
