"""ReAGent's annotated LAMBADA (Vafa et al. 2021): passages with human rationale spans for the next word.

JSON lines, one object per passage: ``text`` (the passage, its final word left out) and ``rationale``, a list of
``[start, end)`` character spans of the words a person marked as what the next word depends on; optional
``lambadaIndex`` (used as the id). Each passage becomes an :class:`Example` with the greedy next token as target
(-1) and ``gold`` = the tokens whose character range overlaps a rationale span (offsets from a fast tokenizer;
tokenizer defaults, as ``HEAT.attribute(text)`` encodes). No distractor.
"""

from __future__ import annotations

import os
from typing import Any

from heat_module.data.collate import Example
from heat_module.data.readers import parse_json_line, read_text, resolve_path, resolve_tokenizer


def rationale_tokens(offsets: list[tuple[int, int]], spans: list[list[int]]) -> list[int]:
    """Positions of the tokens (character ranges ``offsets``) that overlap any ``[start, end)`` span."""
    out = []
    for i, (a, b) in enumerate(offsets):
        if b > a and any(a < int(e) and int(s) < b for s, e in spans):
            out.append(i)
    return out


def load_annotated_lambada(path: str | os.PathLike, tokenizer: Any) -> list[Example]:
    """Every passage of the file as an :class:`Example` (gold = rationale tokens); passages whose rationale covers
    no token are skipped.

    Args:
        path: the JSON-lines file (``reagent/data/annotated_lambada.json`` of the shared data).
        tokenizer: a fast HF tokenizer (or anything :func:`heat_module.data.readers.resolve_tokenizer` accepts).

    Example:
        >>> from heat_module.data import load_annotated_lambada
        >>> from heat_module.testing import tiny_jsonl, tiny_tokenizer
        >>> passage = {"text": "the dog ran to the river . the dog was", "rationale": [[4, 7]]}  # "dog"
        >>> example, = load_annotated_lambada(tiny_jsonl([passage]), tiny_tokenizer())
        >>> example.gold, example.target_id
        ([1], -1)
    """
    file = resolve_path(path)
    tok = resolve_tokenizer(tokenizer)
    out = []
    for line_no, line in enumerate(read_text(file).splitlines(), 1):
        if not line.strip():
            continue
        obj = parse_json_line(line, f"{file}:{line_no}")
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or "rationale" not in obj:
            raise ValueError(f"Expected an object with 'text' and 'rationale' at {file}:{line_no}, got {obj!r:.80}")
        enc = tok(obj["text"], return_offsets_mapping=True)
        gold = rationale_tokens([tuple(o) for o in enc["offset_mapping"]], obj["rationale"])
        if not gold:
            continue
        ident = str(obj.get("lambadaIndex", line_no - 1))
        out.append(Example(ident, list(enc["input_ids"]), -1, gold, None,
                           {"source": str(file), "line": line_no, "text": obj["text"]}))
    return out
