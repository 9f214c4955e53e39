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
from typing import Literal

from heat_module.data.base import DataError, HEATDataModule, parse_json_line, read_text, resolve_path
from heat_module.data.collate import Example


class TextPromptsDataModule(HEATDataModule):
    """Prompts from a list or a file (module docstring).

    Args:
        prompts: a list of prompt strings, or a path to a ``.txt`` / ``.jsonl`` file.
        targets: optional continuations aligned with a list / ``.txt`` file (``None`` or ``""`` = greedy).
        multi_token_target: ``"error"`` (a bad example) or ``"first"`` (use its first token).
        tokenizer, batch_size, limit, num_workers, skip_bad_examples: see :class:`HEATDataModule`.
    """

    def __init__(
        self,
        prompts: str | os.PathLike | list[str],
        targets: list[str | None] | None = None,
        tokenizer: object = "smollm2",
        batch_size: int = 4,
        limit: int | None = None,
        num_workers: int = 0,
        skip_bad_examples: bool = False,
        multi_token_target: Literal["error", "first"] = "error",
    ) -> None:
        super().__init__(tokenizer, batch_size, limit, num_workers, skip_bad_examples)
        if multi_token_target not in ("error", "first"):
            raise ValueError(f"Expected multi_token_target to be 'error' or 'first', got {multi_token_target!r}")
        if isinstance(prompts, (list, tuple)) and not all(isinstance(p, str) for p in prompts):
            bad = next(type(p).__name__ for p in prompts if not isinstance(p, str))
            raise TypeError(f"Expected every prompt to be a string, got a {bad}")
        self.prompts = prompts
        self.targets = targets
        self.multi_token_target = multi_token_target

    def _rows(self) -> list[tuple[str, str, str | None, str | None]]:
        """``(where, id, prompt or None, target)`` per candidate example."""
        if isinstance(self.prompts, (list, tuple)):
            rows = [(f"prompts[{i}]", str(i), p, None) for i, p in enumerate(self.prompts)]
        else:
            path = resolve_path(self.prompts)
            text = read_text(path)
            if path.suffix == ".jsonl":
                if self.targets is not None:
                    raise ValueError(f"Expected targets inside the .jsonl file {path}, got a separate targets list")
                return self._jsonl_rows(path, text)
            rows = [(f"{path}:{k + 1}", str(k), line.rstrip("\r"), None) for k, line in enumerate(text.split("\n"))]
            if rows and rows[-1][2] == "":  # the final line break
                rows.pop()
        if self.targets is not None:
            if len(self.targets) != len(rows):
                raise ValueError(f"Expected {len(rows)} targets (one per prompt), got {len(self.targets)}")
            rows = [(w, i, p, t) for (w, i, p, _), t in zip(rows, self.targets)]
        return rows

    def _jsonl_rows(self, path, text: str) -> list[tuple[str, str, str | None, str | None]]:
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

    def load_examples(self) -> list[Example]:
        examples = []
        for where, ex_id, prompt, target in self._rows():
            if not prompt.strip():
                self.bad_example(where, "Expected a non-empty prompt, got an empty line")
                continue
            ids = self.encode(prompt)
            if not ids:
                self.bad_example(where, f"Expected the prompt to encode to at least one token, got none: {prompt!r}")
                continue
            target_id = -1
            if target:
                t_ids = list(self.tokenizer(target, add_special_tokens=False)["input_ids"])
                if len(t_ids) != 1 and not (t_ids and self.multi_token_target == "first"):
                    self.bad_example(where, f"Expected the target {target!r} to be exactly one token, got "
                                            f"{len(t_ids)} tokens {t_ids}")
                    continue
                target_id = int(t_ids[0])
            meta = {"source": where, "prompt": prompt}
            if target:
                meta["target_text"] = target
            examples.append(Example(id=ex_id, input_ids=ids, target_id=target_id, metadata=meta))
        return examples
