"""The examples of an evaluation run: loading each dataset, selecting a prefix-stable sample, interleaving.

- LongRA (ReAGent's long-range agreement prompts): every ``longra_*.jsonl`` the glob matches, merged and
  de-duplicated by (context, target); the given single-token target.
- TellMeWhy and WikiBio (ReAGent's benchmark prompts): greedy next token.
- The curated NarrativeQA ⊕ SciQ set: gold = the important-word tokens of the SciQ support, distractor = the
  narrative's tokens, target = the first answer token.

Loaded through the data modules of :mod:`heat_module.data`, so the token mapping is the one ``heat test`` uses.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from heat_module.data import CuratedDataModule, LongRADataModule, TextPromptsDataModule
from heat_module.evaluation.config import DATASETS, EvalConfig


@dataclass
class EvalExample:
    """One example: context ids, target (-1 = greedy), optional gold / distractor positions (counted from the
    first token).

    Example:
        >>> from heat_module.evaluation import EvalExample
        >>> EvalExample("curated", "c0", input_ids=[4, 29, 65], target_id=38, gold=[1]).distractor is None
        True
    """

    dataset: str
    id: str
    input_ids: list[int]
    target_id: int
    gold: list[int] | None = None
    distractor: list[int] | None = None
    metadata: dict = field(default_factory=dict)


def from_data_module(dataset: str, examples: Iterable, prefix: str = "") -> list[EvalExample]:
    """:class:`EvalExample` s from a data module's prepared examples, their ids prefixed with ``prefix``."""
    return [EvalExample(dataset, prefix + e.id, list(e.input_ids), int(e.target_id), e.gold, e.distractor,
                        dict(e.metadata)) for e in examples]


def load_dataset(name: str, cfg: EvalConfig, tokenizer: Any) -> list[EvalExample]:
    """Every usable example of one dataset (before ``limit``), in file order; the path is ``cfg.data_path(name)``.

    Example:
        >>> import tempfile
        >>> from heat_module.testing import tiny_eval_config
        >>> cfg = tiny_eval_config(tempfile.mkdtemp())  # the tiny model on two prompts, the random baseline
        >>> from heat_module.evaluation import load_dataset
        >>> from heat_module.testing import tiny_tokenizer
        >>> [(e.dataset, e.id, len(e.input_ids)) for e in load_dataset("wikibio", cfg, tiny_tokenizer())]
        [('wikibio', '0', 5), ('wikibio', '1', 5)]
    """
    if name not in DATASETS:
        raise ValueError(f"Expected a dataset among {list(DATASETS)}, got {name!r}")
    path = cfg.data_path(name)
    if name == "longra":
        files = sorted(glob.glob(path)) if any(c in path for c in "*?[") else [path]
        if not files:
            raise FileNotFoundError(f"Expected LongRA files matching {path!r}, got none")
        out, seen = [], set()
        for file in files:
            dm = LongRADataModule(file, tokenizer=tokenizer, skip_bad_examples=True)
            for e in from_data_module("longra", dm.prepare_examples(), Path(file).stem + ":"):
                key = (tuple(e.input_ids), e.target_id)
                if key not in seen:
                    seen.add(key)
                    out.append(e)
        return out
    if name == "curated":
        dm = CuratedDataModule(path, tokenizer=tokenizer, skip_bad_examples=True)
        return from_data_module("curated", dm.prepare_examples())
    dm = TextPromptsDataModule(path, tokenizer=tokenizer, skip_bad_examples=True)
    return from_data_module(name, dm.prepare_examples())


def usable(examples: Sequence[EvalExample], max_tokens: int) -> list[EvalExample]:
    """The examples with 2 to ``max_tokens`` context tokens."""
    return [e for e in examples if 2 <= len(e.input_ids) <= max_tokens]


def select_examples(examples: Sequence[EvalExample], limit: int, max_tokens: int, seed: int) -> list[EvalExample]:
    """The first ``limit`` examples of at most ``max_tokens`` tokens, in a seeded random order (prefix-stable).

    Example:
        >>> from heat_module.evaluation import EvalExample, select_examples
        >>> examples = [EvalExample("wikibio", str(k), list(range(2 + k)), -1) for k in range(6)]
        >>> chosen = select_examples(examples, limit=3, max_tokens=5, seed=0)  # seeded order; n <= 5 only
        >>> len(chosen), all(len(e.input_ids) <= 5 for e in chosen)
        (3, True)
    """
    kept = usable(examples, max_tokens)
    order = np.random.default_rng(seed).permutation(len(kept))
    return [kept[i] for i in order[:limit]]


def interleave(groups: Sequence[Sequence[EvalExample]]) -> list[EvalExample]:
    """Round-robin over the datasets so a partial run covers all of them."""
    out = []
    for k in range(max((len(g) for g in groups), default=0)):
        out.extend(g[k] for g in groups if k < len(g))
    return out
