"""Plain-Python reading of data files: path resolution, tokenizer resolution, JSON lines with file:line errors, and
the one tolerant JSON-lines reader of the result files (evaluation caches, the writer's shards).

Used by the dataset readers of this package (:mod:`~heat_module.data.curated`, :mod:`~heat_module.data.longra`,
:mod:`~heat_module.data.text_prompts`), by the Lightning data modules (:mod:`heat_module.lightning.datamodules`)
and by ``heat fit-weights`` (:func:`read_texts`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from heat_module.lm.loading import SMOLLM2_ALIASES, load_model

_REPO_ROOT = Path(__file__).resolve().parents[2]

#: ``on_bad(where, message)``: what a reader does with a malformed example (raise, or record and skip).
OnBad = Callable[[str, str], None]


class DataError(ValueError):
    """A malformed data file or example; the message starts with ``<file>:<line>`` or ``<file>: example k``.

    Example:
        >>> from heat_module.data import DataError, read_text_prompts
        >>> from heat_module.testing import tiny_tokenizer
        >>> try:
        ...     read_text_prompts(["the cat", ""], tiny_tokenizer())
        ... except DataError as e:
        ...     print(str(e).split(":")[0])
        prompts[1]
    """


def resolve_path(path: str | os.PathLike) -> Path:
    """An existing file: ``path`` as given (relative to the working directory), else relative to the repo root.

    Raises:
        FileNotFoundError: naming every place looked at.

    Example:
        >>> from heat_module.data import resolve_path
        >>> resolve_path("setup.py").name  # relative to the working directory, else to the repository root
        'setup.py'
    """
    given = Path(path).expanduser()
    if given.is_file():
        return given
    tried = [given.resolve()]
    if not given.is_absolute():
        alt = _REPO_ROOT / given
        if alt.is_file():
            return alt
        tried.append(alt.resolve())
    if given.exists():
        raise FileNotFoundError(f"Expected a data file, got a directory: {given.resolve()}")
    looked = [str(t) for t in tried]
    raise FileNotFoundError(f"Expected an existing data file {str(path)!r}, got none (looked at {looked})")


def resolve_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer object from ``tokenizer``: returned as is, or loaded from ``"smollm2"`` / an HF folder or id.

    Example:
        >>> from heat_module.data import resolve_tokenizer
        >>> from heat_module.testing import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> resolve_tokenizer(tok) is tok  # an object as is; "smollm2" or an HF folder / id is loaded
        True
    """
    if tokenizer is None:
        raise ValueError("Expected a tokenizer (an object, 'smollm2', or an HF folder/id), got None")
    if isinstance(tokenizer, (str, os.PathLike)):
        name = str(tokenizer)
        if name.lower() in SMOLLM2_ALIASES:
            return load_model(name)[1]
        from transformers import AutoTokenizer  # lazy: heavy, only for a tokenizer given by name

        return AutoTokenizer.from_pretrained(name)
    if not callable(tokenizer):
        raise TypeError(f"Expected a callable tokenizer (a transformers tokenizer), got {type(tokenizer).__name__}")
    return tokenizer


def raise_bad(where: str, message: str) -> None:
    """The strict ``on_bad``: raise ``DataError("<where>: <message>")``."""
    raise DataError(f"{where}: {message}")


def parse_json_line(line: str, where: str) -> Any:
    """``json.loads(line)`` with a :class:`DataError` naming ``where`` (``file:line``) on invalid JSON."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: Expected a JSON object, got invalid JSON ({e.msg} at column {e.colno})") from e


def json_lines(path: str | os.PathLike) -> Iterator[tuple[int, str, Any]]:
    """Every non-blank line of a JSON-lines file as ``(line number, raw line, parsed value)``, without stopping at
    damage: the value is ``None`` where the line is not JSON (a line cut by an interrupted write, bytes a crash left),
    and bytes that are not UTF-8 are replaced. The caller decides whether to skip, report or refuse such a line.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "rows.jsonl"
    >>> _ = path.write_text('{"id": 1}\\n\\n{"id": 2, "cut')
    >>> [(k, value) for k, _, value in json_lines(path)]
    [(1, {'id': 1}), (3, None)]
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        for k, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                value = None
            yield k, line, value


def read_text(path: Path) -> str:
    """The file's text (UTF-8), with a clear error naming the file when it cannot be decoded."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: Expected UTF-8 text, got undecodable bytes ({e.reason})") from e


def read_texts(path: str, field_name: str | None = None, limit: int | None = None) -> list[str]:
    """Texts from a .jsonl (one object per line; ``field_name`` or the first of prompt/text/input/question),
    a .json list (of strings or objects) or a plain text file (one example per non-empty line).

    Example:
        >>> import tempfile
        >>> from heat_module.data import read_texts
        >>> path = tempfile.mkdtemp() + "/prompts.jsonl"
        >>> with open(path, "w") as f:
        ...     print('{"prompt": "the cat sat"}', '{"text": "the dog ran"}', sep="\\n", file=f)
        >>> read_texts(path)
        ['the cat sat', 'the dog ran']
    """
    keys = [field_name] if field_name else ["prompt", "text", "input", "question"]

    def pick(obj: object) -> str:
        if isinstance(obj, str):
            return obj
        if isinstance(obj, dict):
            for key in keys:
                if isinstance(obj.get(key), str):
                    return obj[key]
        raise ValueError(f"Expected an example with one of the fields {keys}, got {str(obj)[:80]!r}")

    texts: list[str] = []
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            texts = [pick(json.loads(line)) for line in f if line.strip()]
        elif path.endswith(".json"):
            data = json.load(f)
            texts = [pick(x) for x in (data if isinstance(data, list) else data.get("data", []))]
        else:
            texts = [line.strip() for line in f if line.strip()]
    return texts[:limit] if limit is not None else texts
