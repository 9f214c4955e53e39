"""The one table of the evaluation's datasets (:data:`DATASETS`), and loading, selecting and interleaving examples.

Every dataset the evaluation knows is one row of :data:`DATASETS`: its title, its kind (which metrics it is scored
with), where its file lies under ``$HEAT_DATA_DIR`` and how it is loaded, and the studies that run it by default.
Every other module reads the dataset names from this table (:func:`dataset_names`), none keeps a list of its own.

- LongRA (ReAGent's long-range agreement prompts): every ``longra_*.jsonl`` the glob matches, merged and
  de-duplicated by (context, target); the given single-token target.
- TellMeWhy and WikiBio (ReAGent's benchmark prompts): greedy next token.
- The curated NarrativeQA ⊕ SciQ set: gold = the important-word tokens of the SciQ support, distractor = the
  narrative's tokens, target = the first answer token.
- Annotated LAMBADA (ReAGent's human rationales): gold = the rationale tokens, target = the passage's last word.
- The generated evidence benchmark (:mod:`heat_module.data.evidence`): items the model answers right, gold = the
  evidence tokens, target = the answer's first token. Generated, so it has no file.

Loaded through the data modules of :mod:`heat_module.data`, so the token mapping is the one ``heat test`` uses.
Data paths come only from arguments or from ``$HEAT_DATA_DIR`` (:func:`data_path`), never from a fixed path.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from heat_module.data import CuratedDataModule, LongRADataModule, TextPromptsDataModule

DATA_DIR_ENV = "HEAT_DATA_DIR"
#: the kinds of dataset: which metrics a dataset is scored with
KINDS = ("benchmark", "alignment", "evidence")


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


#: load(name, path, tokenizer, model, count) -> examples in file order; ``count``: how many a generated dataset
#: makes (files ignore it)
Loader = Callable[[str, "str | None", Any, Any, "int | None"], list[EvalExample]]


def load_longra(name: str, path: str | None, tokenizer: Any, model: Any = None, count: int | None = None
                ) -> list[EvalExample]:
    """Every LongRA file the glob ``path`` matches, merged, de-duplicated by (context, target)."""
    files = sorted(glob.glob(path)) if any(c in path for c in "*?[") else [path]
    if not files:
        raise FileNotFoundError(f"Expected LongRA files matching {path!r}, got none")
    out, seen = [], set()
    for file in files:
        dm = LongRADataModule(file, tokenizer=tokenizer, skip_bad_examples=True)
        for e in from_data_module(name, dm.prepare_examples(), Path(file).stem + ":"):
            key = (tuple(e.input_ids), e.target_id)
            if key not in seen:
                seen.add(key)
                out.append(e)
    return out


def load_prompts(name: str, path: str | None, tokenizer: Any, model: Any = None, count: int | None = None
                 ) -> list[EvalExample]:
    """One prompt per line, greedy target."""
    return from_data_module(name, TextPromptsDataModule(path, tokenizer=tokenizer,
                                                        skip_bad_examples=True).prepare_examples())


def load_curated(name: str, path: str | None, tokenizer: Any, model: Any = None, count: int | None = None
                 ) -> list[EvalExample]:
    """The curated JSON file (gold, distractor, target = first answer token)."""
    return from_data_module(name, CuratedDataModule(path, tokenizer=tokenizer,
                                                    skip_bad_examples=True).prepare_examples())


def load_lambada(name: str, path: str | None, tokenizer: Any, model: Any = None, count: int | None = None
                 ) -> list[EvalExample]:
    """ReAGent's annotated LAMBADA passages (gold = rationale tokens)."""
    from heat_module.data.lambada import load_annotated_lambada

    return from_data_module(name, load_annotated_lambada(path, tokenizer))


def load_evidence(name: str, path: str | None, tokenizer: Any, model: Any = None, count: int | None = None,
                  seed: int = 0, generate: int = 2000) -> list[EvalExample]:
    """The first ``count`` generated items (seeded) that ``model`` answers right (target: the answer's first token;
    gold: the evidence tokens)."""
    from heat_module.data.evidence import generate_evidence_items, keep_answered, to_example

    if model is None or count is None:
        raise ValueError(f"Expected a model and a count for the generated dataset {name!r}, got model={model!r}, "
                         f"count={count!r}")
    kept = []
    for item in generate_evidence_items(generate, seed=seed):
        if len(kept) >= count:
            break
        if keep_answered([item], model, tokenizer):
            kept.append(to_example(item, tokenizer))
    if len(kept) < count:
        raise ValueError(f"Expected {count} generated items the model answers right, got {len(kept)} of {generate}")
    return from_data_module(name, kept)


@dataclass(frozen=True)
class Dataset:
    """One dataset of the evaluation.

    Attributes:
        name: its name (cache keys, ``--datasets``).
        title: its name in reports.
        kind: ``"benchmark"`` (faithfulness metrics), ``"alignment"`` (gold tokens: DSA, F1) or ``"evidence"``
            (generated with known evidence: faithfulness and evidence recall).
        file: where it lies under ``$HEAT_DATA_DIR`` (LongRA: a glob); ``None``: generated, no file.
        load: its loader (:data:`Loader`).
        studies: the studies that run it by default (``"paper"``, ``"choice"``, ``"context"``).
        spares: whether it is large enough to hold examples apart (after the evaluated ones) for fitting the
            context study's priors.
    """

    name: str
    title: str
    kind: str
    file: str | None
    load: Loader
    studies: tuple[str, ...]
    spares: bool = False


#: THE table of datasets
DATASETS: Mapping[str, Dataset] = {d.name: d for d in (
    Dataset("longra", "LongRA", "benchmark", "reagent/derived/longra_*.jsonl", load_longra,
            ("paper", "choice", "context"), spares=True),
    Dataset("tellmewhy", "TellMeWhy", "benchmark", "reagent/data/benchmark/tellmewhy2.txt", load_prompts,
            ("paper", "choice", "context")),
    Dataset("wikibio", "WikiBio", "benchmark", "reagent/data/benchmark/wikitext.txt", load_prompts,
            ("paper", "choice", "context")),
    Dataset("evidence", "Evidence (generated)", "evidence", None, load_evidence, ("context",), spares=True),
    Dataset("curated", "Curated", "alignment", "heta/heta_qa_dataset_100_unique.json", load_curated,
            ("paper", "choice", "context")),
    Dataset("lambada", "LAMBADA (annotated)", "alignment", "reagent/data/annotated_lambada.json", load_lambada,
            ("choice", "context")),
)}


def dataset_names(*kinds: str, study: str | None = None) -> tuple[str, ...]:
    """The names of the table's datasets of ``kinds`` (none given: every kind) that ``study`` runs by default
    (``None``: any), in table order.

    Example:
        >>> from heat_module.evaluation.datasets import dataset_names
        >>> dataset_names("benchmark")
        ('longra', 'tellmewhy', 'wikibio')
        >>> dataset_names(study="paper")
        ('longra', 'tellmewhy', 'wikibio', 'curated')
    """
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"Expected dataset kinds among {list(KINDS)}, got {bad}")
    return tuple(name for name, d in DATASETS.items() if (not kinds or d.kind in kinds)
                 and (study is None or study in d.studies))


def dataset(name: str) -> Dataset:
    """The table's row of ``name`` (error naming the known ones)."""
    if name not in DATASETS:
        raise ValueError(f"Expected a dataset among {list(DATASETS)}, got {name!r}")
    return DATASETS[name]


def title(name: str) -> str:
    """The report title of dataset ``name``."""
    return dataset(name).title


def check_datasets(names: Sequence[str], allowed: Sequence[str] | None = None) -> None:
    """Refuse an empty selection or a name outside ``allowed`` (default: the table)."""
    allowed = list(DATASETS) if allowed is None else list(allowed)
    bad = [d for d in names if d not in allowed]
    if bad or not names:
        raise ValueError(f"Expected datasets among {allowed}, got {list(names)!r}")


def data_path(name: str, paths: Mapping[str, str] | None = None, option: str | None = None) -> str | None:
    """The file (LongRA: glob) of dataset ``name``: ``paths[name]`` if given, else under ``$HEAT_DATA_DIR``;
    ``None`` for a generated dataset. ``option`` names the argument that gives it, for the error.

    Example:
        >>> from heat_module.evaluation.datasets import data_path
        >>> data_path("wikibio", {"wikibio": "prompts.txt"})
        'prompts.txt'
    """
    d = dataset(name)
    if d.file is None:
        return None
    if paths and paths.get(name):
        return str(paths[name])
    root = os.environ.get(DATA_DIR_ENV)
    if not root:
        raise ValueError(f"Expected the path of dataset {name!r} ({option or f'paths={{{name!r}: ...}}'}) or the "
                         f"environment variable {DATA_DIR_ENV} (a folder holding {d.file}), got neither")
    return str(Path(root) / d.file)


def load_dataset(name: str, path: str | None, tokenizer: Any, model: Any = None, count: int | None = None
                 ) -> list[EvalExample]:
    """Every usable example of one dataset (before any limit), in file order.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from heat_module.evaluation import load_dataset
        >>> from heat_module.testing import tiny_tokenizer
        >>> path = Path(tempfile.mkdtemp()) / "prompts.txt"
        >>> _ = path.write_text("the cat sat on the\\nthe dog ran to the\\n")
        >>> [(e.dataset, e.id, len(e.input_ids)) for e in load_dataset("wikibio", str(path), tiny_tokenizer())]
        [('wikibio', '0', 5), ('wikibio', '1', 5)]
    """
    d = dataset(name)
    return d.load(name, path, tokenizer, model, count)


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
