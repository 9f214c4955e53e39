"""Free-text prompts: attribute the next token after each prompt (greedy, or a given one-token continuation).

Accepted inputs:

- a list of strings (``targets``, if given, is a list of the same length; ``None`` / ``""`` entries = greedy);
- a ``.txt`` file (any suffix but ``.jsonl``): one prompt per line, exactly as written (the line break is
  removed, other whitespace kept). A blank line is an error (or skipped with ``skip_bad_examples``); a final
  line break is fine. ``targets`` may be given as a list aligned with the lines;
- a ``.jsonl`` file: one JSON object per line with ``prompt`` and optional ``target`` (continuation text, e.g.
  ``" Paris"``) and ``id``. Blank lines are ignored.

Ids are the ``id`` field, else the 0-based line number (file) or list index. Targets are encoded like
``HEAT.attribute(text, target=str)`` does (the continuation alone, no special tokens) and must be one token,
unless ``multi_token_target="first"`` (keep the first token).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

from heat_module.data.collate import Example
from heat_module.data.readers import DataError, OnBad, parse_json_line, raise_bad, read_text, resolve_path

MultiTokenTarget = Literal["error", "first"]
MULTI_TOKEN_TARGETS: tuple[str, ...] = get_args(MultiTokenTarget)


def prompt_rows(prompts: str | os.PathLike | list[str],
                targets: list[str | None] | None = None) -> list[tuple[str, str, str, str | None]]:
    """``(where, id, prompt, target)`` per candidate example of a prompt list or a ``.txt`` / ``.jsonl`` file."""
    if isinstance(prompts, (list, tuple)):
        rows = [(f"prompts[{i}]", str(i), p, None) for i, p in enumerate(prompts)]
    else:
        path = resolve_path(prompts)
        text = read_text(path)
        if path.suffix == ".jsonl":
            if targets is not None:
                raise ValueError(f"Expected targets inside the .jsonl file {path}, got a separate targets list")
            return _jsonl_rows(path, text)
        rows = [(f"{path}:{k + 1}", str(k), line.rstrip("\r"), None) for k, line in enumerate(text.split("\n"))]
        if rows and rows[-1][2] == "":  # the final line break
            rows.pop()
    if targets is not None:
        if len(targets) != len(rows):
            raise ValueError(f"Expected {len(rows)} targets (one per prompt), got {len(targets)}")
        rows = [(w, i, p, t) for (w, i, p, _), t in zip(rows, targets)]
    return rows


def _jsonl_rows(path: Path, text: str) -> list[tuple[str, str, str, str | None]]:
    rows = []
    for k, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        where = f"{path}:{k + 1}"
        obj = parse_json_line(line, where)
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
            got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise DataError(f"{where}: Expected an object with a string field 'prompt', got {got}")
        target = obj.get("target")
        if target is not None and not isinstance(target, str):
            raise DataError(f"{where}: Expected 'target' to be a string or null, got {type(target).__name__}")
        rows.append((where, str(obj.get("id", k)), obj["prompt"], target))
    return rows


def read_text_prompts(
    prompts: str | os.PathLike | list[str],
    tokenizer: Any,
    targets: list[str | None] | None = None,
    on_bad: OnBad = raise_bad,
    multi_token_target: MultiTokenTarget = "error",
) -> list[Example]:
    """The usable examples of a prompt list or file (module docstring), in order.

    Args:
        prompts: a list of prompt strings, or a path to a ``.txt`` / ``.jsonl`` file.
        tokenizer: the model's tokenizer (contexts are encoded with its defaults, as ``HEAT.encode`` does).
        targets: optional continuations aligned with a list / ``.txt`` file (``None`` or ``""`` = greedy).
        on_bad: called as ``on_bad(where, message)`` for a malformed example (default: raise :class:`DataError`).
        multi_token_target: ``"error"`` (a bad example) or ``"first"`` (use its first token).

    Example:
        >>> from heat_module.testing import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> from heat_module.data import read_text_prompts
        >>> examples = read_text_prompts(["the cat sat on the", "the dog"], tok, targets=[" hill", None])
        >>> [(e.id, tok.decode([e.target_id]) if e.target_id >= 0 else e.target_id) for e in examples]
        [('0', 'hill'), ('1', -1)]
    """
    examples = []
    for where, ex_id, prompt, target in prompt_rows(prompts, targets):
        if not prompt.strip():
            on_bad(where, "Expected a non-empty prompt, got an empty line")
            continue
        ids = list(tokenizer(prompt)["input_ids"])
        if not ids:
            on_bad(where, f"Expected the prompt to encode to at least one token, got none: {prompt!r}")
            continue
        target_id = -1
        if target:
            t_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])
            if len(t_ids) != 1 and not (t_ids and multi_token_target == "first"):
                on_bad(where, f"Expected the target {target!r} to be exactly one token, got "
                              f"{len(t_ids)} tokens {t_ids}")
                continue
            target_id = int(t_ids[0])
        meta = {"source": where, "prompt": prompt}
        if target:
            meta["target_text"] = target
        examples.append(Example(id=ex_id, input_ids=ids, target_id=target_id, metadata=meta))
    return examples
