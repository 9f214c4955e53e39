"""LongRA (long-range agreement, ReAGent's analogy benchmark) as JSON lines.

Schema (``shared/data/reagent/derived/longra_<model>.jsonl``; see ``shared/data/reagent/SOURCE.md``): one object per
line with ``prompt`` (an analogy template with a "(...)." distractor sentence) and ``target_text`` (the analogy
word, with its leading space, e.g. ``" Athens"``); optional ``id``, ``category``, and ``input_text`` (the prompt
as the original model's token strings) with ``distractor_start`` / ``distractor_end`` (inclusive token indices
into ``input_text``). Blank lines are ignored.

Mapping to *this* tokenizer: the context is ``prompt`` encoded with the tokenizer's defaults; the target is
``target_text`` encoded alone without special tokens and must be a single token — examples where it is not are
dropped and their number is reported (a warning), since LongRA targets are single tokens by construction of the
original model only. The distractor character span is rebuilt from ``input_text`` (when its concatenation equals
``prompt``) and mapped to this tokenizer's tokens by character offsets (fast tokenizers only); it lands in the
batch's ``distractor_mask``. LongRA has no gold rationale, so DSA/F1 are not computed on it.

The instances were filtered so that the original model's greedy prediction is the target; with another model
the target may not be its prediction (HEAT still attributes the given target).
"""

from __future__ import annotations

import os
from typing import Any

from heat_module.data.collate import Example, char_spans_to_tokens
from heat_module.data.readers import DataError, OnBad, parse_json_line, raise_bad, read_text, resolve_path


def read_longra(path: str | os.PathLike, tokenizer: Any,
                on_bad: OnBad = raise_bad) -> tuple[list[Example], int, int]:
    """The usable examples of a LongRA ``.jsonl`` file (module docstring), the number dropped for a multi-token
    target, and the number of rows read.

    Args:
        on_bad: called as ``on_bad(where, message)`` for a malformed example (default: raise :class:`DataError`).

    Example:
        >>> from heat_module.data import read_longra
        >>> from heat_module.testing import tiny_jsonl, tiny_tokenizer
        >>> rows = [{"prompt": "the dog ran . i saw the", "target_text": " dog"},
        ...         {"prompt": "the cat sat on the", "target_text": " big hill"}]  # two tokens: dropped
        >>> examples, dropped, total = read_longra(tiny_jsonl(rows), tiny_tokenizer())
        >>> [e.id for e in examples], dropped, total
        (['0'], 1, 2)
    """
    path = resolve_path(path)
    examples: list[Example] = []
    dropped = total = 0
    for k, line in enumerate(read_text(path).split("\n")):
        if not line.strip():
            continue
        where = f"{path}:{k + 1}"
        row = parse_json_line(line, where)
        if not isinstance(row, dict):
            raise DataError(f"{where}: Expected a JSON object, got {type(row).__name__}")
        missing = [key for key in ("prompt", "target_text") if not isinstance(row.get(key), str)]
        if missing:
            raise DataError(f"{where}: Expected string fields 'prompt' and 'target_text', got keys {sorted(row)}")
        total += 1
        prompt, target = row["prompt"], row["target_text"]
        if not prompt.strip():
            on_bad(where, "Expected a non-empty prompt, got an empty string")
            continue
        t_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])
        if len(t_ids) != 1:
            dropped += 1
            continue
        enc = tokenizer(prompt, return_offsets_mapping=bool(getattr(tokenizer, "is_fast", False)))
        distractor = None
        span = _distractor_span(row, prompt)
        if span is not None and "offset_mapping" in enc:
            distractor = char_spans_to_tokens(enc["offset_mapping"], [span]) or None
        meta = {"source": where, "target_text": target}
        if "category" in row:
            meta["category"] = row["category"]
        examples.append(Example(id=str(row.get("id", k)), input_ids=list(enc["input_ids"]), target_id=int(t_ids[0]),
                                distractor=distractor, metadata=meta))
    return examples, dropped, total


def _distractor_span(row: dict, prompt: str) -> tuple[int, int] | None:
    """Character span of the distractor sentence, from the original tokenisation in the row (or ``None``)."""
    tokens, start, end = row.get("input_text"), row.get("distractor_start"), row.get("distractor_end")
    if not isinstance(tokens, list) or not isinstance(start, int) or not isinstance(end, int):
        return None
    if "".join(map(str, tokens)) != prompt or not 0 <= start <= end < len(tokens):
        return None
    begin = len("".join(tokens[:start]))
    return begin, begin + len("".join(tokens[start:end + 1]))
