"""Build a curated distractor set (the schema of :mod:`heat_module.data.curated`) from your own texts.

Inputs:

- ``narratives``: distractor passages — a list of strings, or a text file with one passage per line (blank
  lines ignored). Ids ``narrative_00``, ``narrative_01``, ... in order.
- ``supports_with_questions``: answer-bearing evidence — a list of dicts, or a JSON-lines file, each with
  ``support`` (the evidence passage), ``question``, ``answer`` and ``important_words`` (the words of ``support``
  that carry the answer; each must occur in ``support``), optional ``id`` (default ``support_00``, ...).

Every (narrative, support) pair (``pairing="product"``) or the i-th with the i-th (``pairing="zip"``) becomes one
example: ``input_text = narrative <s> support <s> Question: question``, target = the answer's first word, and
``important_word_indices_in_sciq_support`` = every position of an important word among the support's
whitespace-separated words (case-insensitive, punctuation trimmed), exactly the convention of the shared file.
:func:`save_curated_dataset` writes them as ``{"dataset_name", ..., "examples": [...]}`` for
:class:`~heat_module.data.CuratedDataModule`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from heat_module.data.curated import SEPARATOR, important_word_indices
from heat_module.data.readers import DataError, parse_json_line, read_text, resolve_path

_SUPPORT_KEYS = ("support", "question", "answer", "important_words")


def _narratives(narratives: str | os.PathLike | Sequence[str]) -> list[str]:
    if isinstance(narratives, (str, os.PathLike)):
        path = resolve_path(narratives)
        return [line.strip() for line in read_text(path).split("\n") if line.strip()]
    out = [str(t).strip() for t in narratives]
    if any(not t for t in out):
        raise ValueError(f"Expected non-empty narratives, got an empty one at index {out.index('')}")
    return out


def _supports(supports: str | os.PathLike | Sequence[dict]) -> list[tuple[str, dict]]:
    """``(where, row)`` pairs with every required key checked."""
    if isinstance(supports, (str, os.PathLike)):
        path = resolve_path(supports)
        rows = []
        for k, line in enumerate(read_text(path).split("\n")):
            if not line.strip():
                continue
            rows.append((f"{path}:{k + 1}", parse_json_line(line, f"{path}:{k + 1}")))
    else:
        rows = [(f"supports_with_questions[{k}]", row) for k, row in enumerate(supports)]
    for where, row in rows:
        if not isinstance(row, dict):
            raise DataError(f"{where}: Expected an object with keys {list(_SUPPORT_KEYS)}, got {type(row).__name__}")
        missing = [key for key in _SUPPORT_KEYS if key not in row]
        if missing:
            raise DataError(f"{where}: Expected keys {list(_SUPPORT_KEYS)}, got {sorted(row)} (missing {missing})")
        if not isinstance(row["important_words"], list) or not row["important_words"]:
            raise DataError(f"{where}: Expected a non-empty list 'important_words', got {row['important_words']!r}")
        for key in ("support", "question", "answer"):
            if not isinstance(row[key], str) or not row[key].strip():
                raise DataError(f"{where}: Expected a non-empty string {key!r}, got {row[key]!r}")
    return rows


def build_curated_examples(
    narratives: str | os.PathLike | Sequence[str],
    supports_with_questions: str | os.PathLike | Sequence[dict],
    pairing: Literal["product", "zip"] = "product",
    id_prefix: str = "curated",
    separator: str = SEPARATOR,
) -> list[dict]:
    """Curated examples (module docstring) from your narrative and support files.

    Args:
        narratives: distractor passages (list or text file, one per line).
        supports_with_questions: evidence rows (list of dicts or JSON-lines file).
        pairing: ``"product"`` (every narrative with every support) or ``"zip"`` (pairwise; equal lengths).
        id_prefix: example ids are ``f"{id_prefix}_{k:05d}"``.
        separator: the segment separator inside ``input_text``.
    Returns:
        A list of example dicts in the curated schema.

    Example:
        >>> from heat_module.data import build_curated_examples
        >>> support = {"support": "the plant took water in the sun .", "question": "what did the plant take ?",
        ...            "answer": "water", "important_words": ["water"]}
        >>> raw = build_curated_examples(["the cat sat on the hill ."], [support])
        >>> len(raw), raw[0]["input_text"]
        (1, 'the cat sat on the hill . <s> the plant took water in the sun . <s> Question: what did the plant take ?')
    """
    texts = _narratives(narratives)
    rows = _supports(supports_with_questions)
    if not texts or not rows:
        raise ValueError(f"Expected at least one narrative and one support, got {len(texts)} and {len(rows)}")
    if pairing == "product":
        pairs = [(i, j) for i in range(len(texts)) for j in range(len(rows))]
    elif pairing == "zip":
        if len(texts) != len(rows):
            raise ValueError(f"Expected as many narratives as supports for pairing='zip', got {len(texts)} and "
                             f"{len(rows)}")
        pairs = [(i, i) for i in range(len(texts))]
    else:
        raise ValueError(f"Expected pairing to be 'product' or 'zip', got {pairing!r}")
    examples = []
    for k, (i, j) in enumerate(pairs):
        where, row = rows[j]
        support = row["support"].strip()
        try:
            indices = important_word_indices(support, row["important_words"])
        except ValueError as e:
            raise DataError(f"{where}: {e}") from e
        narrative_id = f"narrative_{i:02d}"
        support_id = str(row.get("id", f"support_{j:02d}"))
        question = row["question"].strip()
        examples.append({
            "id": f"{id_prefix}_{k:05d}",
            "base_pair_id": f"{narrative_id}__{support_id}",
            "narrative_id": narrative_id,
            "sciq_id": support_id,
            "narrative_segment": texts[i],
            "sciq_support_segment": support,
            "question": question,
            "answer": row["answer"].strip(),
            "target_first_answer_token": row["answer"].split()[0],
            "input_text": f"{texts[i]} {separator} {support} {separator} Question: {question}",
            "important_words": list(row["important_words"]),
            "important_word_indices_in_sciq_support": indices,
        })
    return examples


def save_curated_dataset(examples: list[dict], path: str | os.PathLike, name: str = "curated") -> Path:
    """Write ``examples`` as a curated JSON file readable by :class:`~heat_module.data.CuratedDataModule`.

    Example:
        >>> import json, tempfile
        >>> from heat_module.data import save_curated_dataset
        >>> from heat_module.testing import tiny_curated_examples
        >>> path = save_curated_dataset(tiny_curated_examples(), tempfile.mkdtemp() + "/mine.json", name="mine")
        >>> sorted(json.loads(path.read_text()))
        ['dataset_name', 'description', 'examples', 'num_examples']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "dataset_name": name,
        "description": "Distractor narrative <s> answer-bearing support <s> Question, built by "
                       "heat_module.data.build_curated_examples.",
        "num_examples": len(examples),
        "examples": examples,
    }
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
