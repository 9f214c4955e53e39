"""The shared base of the HEAT data modules: tokenizer resolution, limits, resume filtering, DDP sharding.

A subclass implements :meth:`HEATDataModule.load_examples` (read its file, tokenise, return
:class:`~heat_module.data.collate.Example` objects). The base class

- resolves ``tokenizer`` (an object, ``"smollm2"``, or an HF folder / id) once,
- keeps the first ``limit`` usable examples and checks that ids are unique,
- drops ids that a callback with a ``done_ids`` attribute (the :class:`heat_module.AttributionWriter`) has already
  written, *before* batching, so resumed runs spend no compute on them,
- shards the examples over processes without repeating any (:class:`UnrepeatedShardSampler`): Lightning's default
  ``DistributedSampler`` pads the last shard with duplicates, which would double count in ``trainer.test``,
- batches with left padding (:class:`~heat_module.data.collate.LeftPadCollator`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, DistributedSampler

from heat_module.data.collate import Example, LeftPadCollator, pad_token_id

log = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[2]


class DataError(ValueError):
    """A malformed data file or example; the message starts with ``<file>:<line>`` or ``<file>: example k``."""


def resolve_path(path: str | os.PathLike) -> Path:
    """An existing file: ``path`` as given (relative to the working directory), else relative to the repo root.

    Raises:
        FileNotFoundError: naming every place looked at.
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
    """A tokenizer object from ``tokenizer``: returned as is, or loaded from ``"smollm2"`` / an HF folder or id."""
    if tokenizer is None:
        raise ValueError("Expected a tokenizer (an object, 'smollm2', or an HF folder/id), got None")
    if isinstance(tokenizer, (str, os.PathLike)):
        from heat_module.models import SMOLLM2_ALIASES, load_model

        name = str(tokenizer)
        if name.lower() in SMOLLM2_ALIASES:
            return load_model(name)[1]
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name)
    if not callable(tokenizer):
        raise TypeError(f"Expected a callable tokenizer (a transformers tokenizer), got {type(tokenizer).__name__}")
    return tokenizer


class UnrepeatedShardSampler(DistributedSampler):
    """Rank r gets examples r, r + R, r + 2R, ... — every example exactly once over R processes, none repeated.

    A ``DistributedSampler`` subclass, so Lightning leaves it in place instead of injecting its own (which pads
    shards with duplicates in ``trainer.test``). Unlike Lightning's ``UnrepeatedDistributedSampler`` it allows a
    rank to get no example (prediction and metric updates need no per-batch collective).
    """

    def __init__(self, dataset: Sequence, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class HEATDataModule(pl.LightningDataModule):
    """Base class of the data modules (see the module docstring).

    Args:
        tokenizer: the model's tokenizer, or a name to load it (``"smollm2"``, an HF folder or id).
        batch_size: examples per batch. ≥ 1.
        limit: keep only the first ``limit`` usable examples (``None``: all).
        num_workers: DataLoader workers (tokenisation happens once in ``setup``, so 0 is usually right).
        skip_bad_examples: drop malformed examples (empty prompt, bad annotation, ...) with a warning naming the
            file and line, instead of raising. Unreadable files and invalid JSON always raise.
    """

    def __init__(
        self,
        tokenizer: Any = "smollm2",
        batch_size: int = 4,
        limit: int | None = None,
        num_workers: int = 0,
        skip_bad_examples: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"Expected batch_size to be an integer >= 1, got {batch_size!r}")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise ValueError(f"Expected limit to be None or an integer >= 0, got {limit!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"Expected num_workers to be an integer >= 0, got {num_workers!r}")
        self._tokenizer_spec = tokenizer
        self._tokenizer: Any = None
        self.batch_size = batch_size
        self.limit = limit
        self.num_workers = num_workers
        self.skip_bad_examples = skip_bad_examples
        self.examples: list[Example] | None = None
        self.skipped: list[dict] = []  # {"where", "reason"} of every example dropped by skip_bad_examples

    # ------------------------------------------------------------------ to implement
    def load_examples(self) -> list[Example]:
        """Read the data file and return every usable example, in file order."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = resolve_tokenizer(self._tokenizer_spec)
        return self._tokenizer

    def bad_example(self, where: str, message: str) -> None:
        """Raise ``DataError("<where>: <message>")``, or record and warn when ``skip_bad_examples``."""
        if not self.skip_bad_examples:
            raise DataError(f"{where}: {message}")
        self.skipped.append({"where": where, "reason": message})
        rank_zero_warn(f"Skipping a bad example at {where}: {message}")

    def encode(self, text: str) -> list[int]:
        """Context token ids with the tokenizer's defaults (the same call as ``HEAT.encode``)."""
        return list(self.tokenizer(text)["input_ids"])

    def prepare_examples(self) -> list[Example]:
        """Load (once), check unique ids, apply ``limit``."""
        if self.examples is None:
            examples = self.load_examples()
            if self.limit is not None:
                examples = examples[: self.limit]
            seen: set[str] = set()
            for e in examples:
                if e.id in seen:
                    raise DataError(f"{e.metadata.get('source', '?')}: Expected unique example ids, got {e.id!r} twice")
                seen.add(e.id)
            self.examples = examples
        return self.examples

    def setup(self, stage: str | None = None) -> None:
        self.prepare_examples()

    def done_ids(self) -> set[str]:
        """Ids already written by a resumable callback of the attached trainer (empty without one)."""
        trainer = self.trainer
        done: set[str] = set()
        if trainer is None:
            return done
        for callback in trainer.callbacks:
            ids = getattr(callback, "done_ids", None)
            if ids:
                done |= {str(i) for i in ids}
        return done

    def _dataloader(self, resume: bool) -> DataLoader:
        examples = self.prepare_examples()
        if resume:
            done = self.done_ids()
            if done:
                todo = [e for e in examples if e.id not in done]
                log.info("Resuming: %d of %d examples already written, %d to go", len(examples) - len(todo),
                         len(examples), len(todo))
                examples = todo
        sampler = None
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:
            sampler = UnrepeatedShardSampler(examples, trainer.world_size, trainer.global_rank)
        return DataLoader(
            examples, batch_size=self.batch_size, shuffle=False, sampler=sampler, num_workers=self.num_workers,
            collate_fn=LeftPadCollator(pad_token_id(self.tokenizer)),
        )

    def predict_dataloader(self) -> DataLoader:
        return self._dataloader(resume=True)

    def test_dataloader(self) -> DataLoader:
        return self._dataloader(resume=False)

    def val_dataloader(self) -> DataLoader:
        return self._dataloader(resume=False)


def parse_json_line(line: str, where: str) -> Any:
    """``json.loads(line)`` with a :class:`DataError` naming ``where`` (``file:line``) on invalid JSON."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: Expected a JSON object, got invalid JSON ({e.msg} at column {e.colno})") from e


def read_text(path: Path) -> str:
    """The file's text (UTF-8), with a clear error naming the file when it cannot be decoded."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: Expected UTF-8 text, got undecodable bytes ({e.reason})") from e
