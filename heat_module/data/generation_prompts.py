"""Generation requests: prompts or chat conversations whose answer is explained token by token.

A ``.jsonl`` file holds one JSON object per line (blank lines are ignored), either

- ``{"prompt": "The capital of France is"}`` — plain text, or
- ``{"messages": [{"role": "user", "content": "Name a fruit."}, ...]}`` — a chat conversation, rendered later with
  the tokenizer's own chat template (``role`` and ``content`` strings; the last message is usually the user's),

with optional ``"id"`` (default: the 0-based line number), ``"continuation"`` (the answer to explain; absent or
null = the model's greedy answer), ``"max_new_tokens"`` (for a generated answer; default: the reader's) and
``"metadata"`` (an object kept next to the result). A list of such dicts (or of prompt strings) is read the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from heat_module.data.readers import DataError, OnBad, parse_json_line, raise_bad, read_text, resolve_path

FIELDS = ("id", "prompt", "messages", "continuation", "max_new_tokens", "metadata")


@dataclass
class GenerationRequest:
    """One answer to explain.

    Attributes:
        id: a stable id, unique within the data set (the writer's resume key).
        prompt: the plain-text prompt, or ``None`` for a chat conversation.
        messages: the chat messages (``role`` / ``content`` dicts), or ``None`` for a plain prompt.
        continuation: the answer to explain, or ``None`` for the model's greedy answer.
        max_new_tokens: how many tokens to generate when ``continuation`` is None.
        metadata: JSON-serialisable extras (source file and line, anything given in the line's ``metadata``).

    Example:
        >>> from heat_module.data import GenerationRequest
        >>> GenerationRequest(id="0", messages=[{"role": "user", "content": "Name a fruit."}]).max_new_tokens
        16
    """

    id: str
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    continuation: str | None = None
    max_new_tokens: int = 16
    metadata: dict = field(default_factory=dict)


def check_messages(messages: Any) -> str | None:
    """``None`` when ``messages`` is a non-empty list of ``{"role": str, "content": str}`` dicts, else what is
    wrong ("Expected ..., got ...")."""
    if not isinstance(messages, list) or not messages:
        return f"Expected 'messages' to be a non-empty list, got {type(messages).__name__} {str(messages)[:60]}"
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return f"Expected messages[{k}] to be an object with string 'role' and 'content', got {str(m)[:80]}"
    return None


def _request(where: str, default_id: str, obj: Any, max_new_tokens: int, on_bad: OnBad) -> GenerationRequest | None:
    if isinstance(obj, str):
        obj = {"prompt": obj}
    if not isinstance(obj, dict):
        on_bad(where, f"Expected an object with 'prompt' or 'messages', got {type(obj).__name__}")
        return None
    stray = sorted(set(obj) - set(FIELDS))
    if stray:
        on_bad(where, f"Expected only the fields {list(FIELDS)}, got also {stray}")
        return None
    prompt, messages = obj.get("prompt"), obj.get("messages")
    if (prompt is None) == (messages is None):
        on_bad(where, "Expected exactly one of 'prompt' and 'messages', got "
                      + ("both" if prompt is not None else "neither"))
        return None
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        on_bad(where, f"Expected 'prompt' to be a non-empty string, got {prompt!r}")
        return None
    if messages is not None and (problem := check_messages(messages)) is not None:
        on_bad(where, problem)
        return None
    continuation = obj.get("continuation")
    if continuation is not None and (not isinstance(continuation, str) or not continuation):
        on_bad(where, f"Expected 'continuation' to be a non-empty string or null, got {continuation!r}")
        return None
    steps = obj.get("max_new_tokens", max_new_tokens)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        on_bad(where, f"Expected 'max_new_tokens' to be an integer >= 1, got {steps!r}")
        return None
    meta = obj.get("metadata", {})
    if not isinstance(meta, dict):
        on_bad(where, f"Expected 'metadata' to be an object, got {type(meta).__name__}")
        return None
    return GenerationRequest(id=str(obj.get("id", default_id)), prompt=prompt,
                             messages=None if messages is None else [dict(m) for m in messages],
                             continuation=continuation, max_new_tokens=steps, metadata={"source": where, **meta})


def read_generation_requests(
    source: str | os.PathLike | list,
    max_new_tokens: int = 16,
    on_bad: OnBad = raise_bad,
) -> list[GenerationRequest]:
    """The requests of a ``.jsonl`` file or a list (module docstring), in order.

    Args:
        source: a path to a ``.jsonl`` file, or a list of request dicts / prompt strings.
        max_new_tokens: the default number of generated tokens (a line's ``max_new_tokens`` wins).
        on_bad: called as ``on_bad(where, message)`` for a malformed line (default: raise :class:`DataError`).
            Unreadable files and invalid JSON always raise.

    Example:
        >>> from heat_module.data import read_generation_requests
        >>> chat = {"messages": [{"role": "user", "content": "Name a fruit."}], "continuation": "An apple."}
        >>> [(r.id, r.prompt, r.continuation) for r in read_generation_requests(["the cat sat on the", chat])]
        [('0', 'the cat sat on the', None), ('1', None, 'An apple.')]
    """
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"Expected max_new_tokens to be an integer >= 1, got {max_new_tokens!r}")
    if isinstance(source, (list, tuple)):
        rows = [(f"requests[{k}]", str(k), obj) for k, obj in enumerate(source)]
    else:
        path = resolve_path(source)
        if path.suffix != ".jsonl":
            raise DataError(f"{path}: Expected a .jsonl file of prompts or chat messages, got a {path.suffix or 'no'}"
                            " suffix")
        rows = [(f"{path}:{k + 1}", str(k), parse_json_line(line, f"{path}:{k + 1}"))
                for k, line in enumerate(read_text(path).split("\n")) if line.strip()]
    out = []
    for where, default_id, obj in rows:
        request = _request(where, default_id, obj, max_new_tokens, on_bad)
        if request is not None:
            out.append(request)
    return out


def collate_requests(requests: list[GenerationRequest]) -> dict[str, Any]:
    """``collate_fn`` for generation requests: ``{"requests": [...], "ids": [...], "metadata": [...]}`` (no
    tensors: each request is tokenised by the attribution call, with the chat template where it has messages)."""
    return {"requests": list(requests), "ids": [r.id for r in requests], "metadata": [r.metadata for r in requests]}
