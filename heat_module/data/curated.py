"""The curated NarrativeQA ⊕ SciQ attribution set (HEAT paper §5.1, DSA) and files in the same schema.

Schema (``shared/data/heta/heta_qa_dataset_100_unique.json``, see its ``SOURCE.md``): a JSON object whose
``examples`` list (or a bare JSON list) holds objects with

- ``id``; ``narrative_segment`` (the distractor); ``sciq_support_segment`` (the answer-bearing evidence);
  ``question``; ``answer``; ``target_first_answer_token``;
- ``input_text`` = ``narrative <s> support <s> Question: question`` (rebuilt with that separator when absent);
- ``important_words`` and ``important_word_indices_in_sciq_support``: positions of whitespace-separated words of
  the support segment (every occurrence of every important word, compared case-insensitively without
  punctuation — checked on all 100 examples of the shared file).

Mapping to token positions of *this* tokenizer (fast tokenizers: character offsets are needed):

- context = ``input_text`` encoded with the tokenizer's defaults (what ``HEAT.attribute(input_text)`` sees);
- gold = the tokens overlapping the characters of an important support word — word ``k`` is the k-th
  whitespace-separated word of the support segment, located inside ``input_text``, with leading/trailing
  punctuation trimmed (so ``"plant,"`` marks the tokens of ``plant``, not the comma; a token that joins a word and
  its punctuation still counts). When ``important_word_indices_in_sciq_support`` is absent the indices are derived
  from ``important_words`` by the convention above;
- distractor = the tokens overlapping the narrative segment (the ``<s>`` separators and the question are in
  neither set);
- target = the first token of ``" " + target_first_answer_token`` when it follows the context (the paper's "first
  answer token"; a BPE tokenizer keeps the space inside the token, a word-level one drops it); ``answer``'s first
  word when that field is absent.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from heat_module.data.collate import Example, char_spans_to_tokens, continuation_ids
from heat_module.data.readers import DataError, OnBad, raise_bad, read_text, resolve_path

SEPARATOR = "<s>"
_PUNCT = re.compile(r"^\W+|\W+$")


def word_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the whitespace-separated words of ``text``, punctuation trimmed."""
    spans = []
    for m in re.finditer(r"\S+", text):
        core = re.search(r"\w.*\w|\w", m.group())
        if core is None:  # a word made of punctuation only: keep it whole
            spans.append((m.start(), m.end()))
        else:
            spans.append((m.start() + core.start(), m.start() + core.end()))
    return spans


def normalize_word(word: str) -> str:
    """Lower case without leading/trailing punctuation (the convention of the important-word indices)."""
    return _PUNCT.sub("", word).lower()


def important_word_indices(support: str, important_words: list[str]) -> list[int]:
    """Positions of every whitespace-separated word of ``support`` that is one of ``important_words``.

    Raises:
        ValueError: when an important word does not occur in the support segment.
    """
    words = [normalize_word(w) for w in support.split()]
    wanted = [normalize_word(w) for w in important_words]
    missing = [w for w in wanted if w not in words]
    if missing:
        raise ValueError(f"Expected every important word in the support segment, got {missing} missing")
    wanted_set = set(wanted)
    return [k for k, w in enumerate(words) if w in wanted_set]


def curated_example(raw: dict, tokenizer: Any, where: str) -> Example:
    """One curated example (schema and mapping in the module docstring) as an :class:`Example`.

    Raises:
        DataError: naming ``where`` for a missing field, segments not found in ``input_text``, or bad indices.

    Example:
        >>> from heat_module.testing import tiny_curated_examples, tiny_tokenizer
        >>> raw, tok = tiny_curated_examples(), tiny_tokenizer()  # one example: narrative, support, question
        >>> from heat_module.data import curated_example
        >>> example = curated_example(raw[0], tok, where="mine.json: example 0")
        >>> [tok.convert_ids_to_tokens(example.input_ids)[i] for i in example.gold], tok.decode([example.target_id])
        (['water'], 'water')
    """
    if not isinstance(raw, dict):
        raise DataError(f"{where}: Expected a JSON object, got {type(raw).__name__}")
    for key in ("narrative_segment", "sciq_support_segment"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise DataError(f"{where}: Expected a non-empty string field {key!r}, got {raw.get(key)!r}")
    narrative, support = raw["narrative_segment"], raw["sciq_support_segment"]
    text = raw.get("input_text")
    if text is None:
        if not isinstance(raw.get("question"), str):
            raise DataError(f"{where}: Expected 'input_text' or 'question', got neither")
        text = f"{narrative} {SEPARATOR} {support} {SEPARATOR} Question: {raw['question']}"
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: Expected a non-empty 'input_text', got {text!r}")
    n_start = text.find(narrative)
    s_start = text.find(support, n_start + len(narrative) if n_start >= 0 else 0)
    if n_start < 0 or s_start < 0:
        raise DataError(f"{where}: Expected input_text to contain narrative_segment then sciq_support_segment, "
                        f"got {text[:80]!r}...")
    words = word_spans(support)
    indices = raw.get("important_word_indices_in_sciq_support")
    if indices is None:
        if not isinstance(raw.get("important_words"), list):
            raise DataError(f"{where}: Expected 'important_word_indices_in_sciq_support' or 'important_words', "
                            "got neither")
        try:
            indices = important_word_indices(support, raw["important_words"])
        except ValueError as e:
            raise DataError(f"{where}: {e}") from e
    if not isinstance(indices, list) or not all(isinstance(k, int) and 0 <= k < len(words) for k in indices):
        raise DataError(f"{where}: Expected important_word_indices_in_sciq_support in [0, {len(words)}) "
                        f"(the support has {len(words)} words), got {indices!r}")
    answer = raw.get("target_first_answer_token")
    if not isinstance(answer, str) or not answer.strip():
        answer = raw.get("answer")
        answer = answer.split()[0] if isinstance(answer, str) and answer.split() else None
    if answer is None:
        raise DataError(f"{where}: Expected 'target_first_answer_token' or 'answer', got neither")
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"Expected a fast tokenizer (character offsets) for the curated set, got "
                        f"{type(tokenizer).__name__}")
    enc = tokenizer(text, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    gold = char_spans_to_tokens(offsets, [(s_start + a, s_start + b) for a, b in (words[k] for k in indices)])
    distractor = char_spans_to_tokens(offsets, [(n_start, n_start + len(narrative))])
    target = continuation_ids(tokenizer, text, " " + answer.strip())
    if not target:
        raise DataError(f"{where}: Expected the answer {answer!r} to encode to at least one token, got none")
    meta = {"source": where, "target_text": answer}
    for key in ("question", "answer", "narrative_id", "sciq_id"):
        if key in raw:
            meta[key] = raw[key]
    return Example(id=str(raw.get("id", where)), input_ids=list(enc["input_ids"]), target_id=int(target[0]),
                   gold=gold or None, distractor=distractor or None, metadata=meta)


def load_curated_file(path: str | os.PathLike) -> tuple[Any, list]:
    """``(resolved path, raw example list)`` of a curated JSON file, with file:line errors for invalid JSON."""
    resolved = resolve_path(path)
    try:
        data = json.loads(read_text(resolved))
    except json.JSONDecodeError as e:
        raise DataError(f"{resolved}:{e.lineno}: Expected valid JSON, got {e.msg} at column {e.colno}") from e
    rows = data.get("examples") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        got = f"an object with keys {sorted(data)}" if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{resolved}: Expected a JSON list of examples or an object with an 'examples' list, got {got}")
    return resolved, rows


def read_curated(path: str | os.PathLike, tokenizer: Any, on_bad: OnBad = raise_bad,
                 limit: int | None = None) -> list[Example]:
    """Every usable example of a curated JSON file, in file order (at most ``limit``).

    Args:
        path: the curated JSON file (relative to the working directory or the repo root).
        tokenizer: a fast tokenizer (character offsets).
        on_bad: called as ``on_bad(where, message)`` for a malformed example (default: raise :class:`DataError`).
        limit: stop after this many usable examples.

    Example:
        >>> from heat_module.testing import tiny_curated_examples, tiny_tokenizer
        >>> raw, tok = tiny_curated_examples(), tiny_tokenizer()  # one example: narrative, support, question
        >>> from heat_module.data import read_curated
        >>> from heat_module.testing import tiny_jsonl
        >>> example, = read_curated(tiny_jsonl([{"examples": raw}], "mine.json"), tok)  # one JSON object
        >>> len(example.gold), len(example.distractor)  # "water"; the narrative's seven tokens
        (1, 7)
    """
    resolved, rows = load_curated_file(path)
    examples = []
    for k, raw in enumerate(rows):
        label = f" (id {raw['id']!r})" if isinstance(raw, dict) and "id" in raw else ""
        where = f"{resolved}: example {k}{label}"
        try:
            examples.append(curated_example(raw, tokenizer, where))
        except DataError as e:
            on_bad(where, str(e).removeprefix(f"{where}: "))
        if limit is not None and len(examples) >= limit:
            break
    return examples
