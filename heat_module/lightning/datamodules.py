"""Lightning data modules for HEAT: tokenised, left-padded batches with gold annotations for the metrics.

- :class:`TextPromptsDataModule` — prompts from a list, a text file (one per line) or JSON lines
  (:mod:`heat_module.data.text_prompts`).
- :class:`LongRADataModule` — ReAGent's LongRA JSON lines (:mod:`heat_module.data.longra`).
- :class:`CuratedDataModule` — the NarrativeQA ⊕ SciQ curated set (:mod:`heat_module.data.curated`).
- :class:`GenerationDataModule` — prompts or chat conversations whose answer is explained token by token
  (:mod:`heat_module.data.generation_prompts`; for ``HEATModule(generate=True)``).

The files are read by the plain-Python readers of :mod:`heat_module.data`; this module adds the Lightning parts.
A subclass of :class:`HEATDataModule` implements :meth:`HEATDataModule.load_examples` (read its file, tokenise, return
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

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, DistributedSampler

from heat_module.data.collate import Example, LeftPadCollator, pad_token_id
from heat_module.data.curated import read_curated
from heat_module.data.generation_prompts import GenerationRequest, collate_requests, read_generation_requests
from heat_module.data.longra import read_longra
from heat_module.data.readers import DataError, resolve_path, resolve_tokenizer
from heat_module.data.text_prompts import MULTI_TOKEN_TARGETS, read_text_prompts

log = logging.getLogger(__name__)


class UnrepeatedShardSampler(DistributedSampler):
    """Rank r gets examples r, r + R, r + 2R, ... — every example exactly once over R processes, none repeated.

    A ``DistributedSampler`` subclass, so Lightning leaves it in place instead of injecting its own (which pads
    shards with duplicates in ``trainer.test``). Unlike Lightning's ``UnrepeatedDistributedSampler`` it allows a
    rank to get no example (prediction and metric updates need no per-batch collective).

    Example:
        >>> from heat_module.data import UnrepeatedShardSampler
        >>> [list(UnrepeatedShardSampler(range(5), num_replicas=2, rank=r)) for r in (0, 1)]
        [[0, 2, 4], [1, 3]]
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
    """Base class of the data modules: tokenizer resolution, limits, resume filtering, DDP sharding.

    Args:
        tokenizer: the model's tokenizer, or a name to load it (``"smollm2"``, an HF folder or id).
        batch_size: examples per batch. ≥ 1.
        limit: keep only the first ``limit`` usable examples (``None``: all).
        num_workers: DataLoader workers (tokenisation happens once in ``setup``, so 0 is usually right).
        skip_bad_examples: drop malformed examples (empty prompt, bad annotation, ...) with a warning naming the
            file and line, instead of raising. Unreadable files and invalid JSON always raise.

    Protocol boilerplate, on purpose: every data module below lists these arguments again in its own ``__init__``
    (rather than ``**kwargs``), because LightningCLI builds the YAML config from the constructor's signature.

    Example:
        >>> from heat_module.testing import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> from heat_module.data import Example, HEATDataModule
        >>> class Fixed(HEATDataModule):  # a data module is its load_examples
        ...     def load_examples(self):
        ...         return [Example(str(k), self.encode(text)) for k, text in enumerate(["the cat", "a dog ran"])]
        >>> batch = next(iter(Fixed(tokenizer=tok, batch_size=2).predict_dataloader()))
        >>> batch["ids"], batch["input_ids"].shape
        (['0', '1'], torch.Size([2, 3]))
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
            collate_fn=self.collate_fn(),
        )

    def collate_fn(self) -> Any:
        """How examples become a batch: left-padded tensors (:class:`~heat_module.data.collate.LeftPadCollator`)."""
        return LeftPadCollator(pad_token_id(self.tokenizer))

    def predict_dataloader(self) -> DataLoader:
        return self._dataloader(resume=True)

    def test_dataloader(self) -> DataLoader:
        return self._dataloader(resume=False)

    def val_dataloader(self) -> DataLoader:
        return self._dataloader(resume=False)


class TextPromptsDataModule(HEATDataModule):
    """Prompts from a list or a file (:mod:`heat_module.data.text_prompts`).

    Args:
        prompts: a list of prompt strings, or a path to a ``.txt`` / ``.jsonl`` file.
        targets: optional continuations aligned with a list / ``.txt`` file (``None`` or ``""`` = greedy).
        multi_token_target: ``"error"`` (a bad example) or ``"first"`` (use its first token).
        tokenizer, batch_size, limit, num_workers, skip_bad_examples: see :class:`HEATDataModule`.

    Example:
        >>> from heat_module.testing import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> from heat_module.data import TextPromptsDataModule
        >>> data = TextPromptsDataModule(["the cat sat on the", "the dog"], targets=[" hill", None], tokenizer=tok)
        >>> batch = next(iter(data.predict_dataloader()))
        >>> batch["attention_mask"].tolist(), batch["target_ids"][1].item()  # left padded; -1 = the greedy token
        ([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]], -1)
        >>> tok.decode(batch["target_ids"][:1])
        'hill'
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
        if multi_token_target not in MULTI_TOKEN_TARGETS:
            raise ValueError(f"Expected multi_token_target to be 'error' or 'first', got {multi_token_target!r}")
        if isinstance(prompts, (list, tuple)) and not all(isinstance(p, str) for p in prompts):
            bad = next(type(p).__name__ for p in prompts if not isinstance(p, str))
            raise TypeError(f"Expected every prompt to be a string, got a {bad}")
        self.prompts = prompts
        self.targets = targets
        self.multi_token_target = multi_token_target

    def load_examples(self) -> list[Example]:
        return read_text_prompts(self.prompts, self.tokenizer, self.targets, self.bad_example,
                                 self.multi_token_target)


class LongRADataModule(HEATDataModule):
    """LongRA JSON lines (:mod:`heat_module.data.longra`).

    Args:
        path: the ``.jsonl`` file.
        tokenizer, batch_size, limit, num_workers, skip_bad_examples: see :class:`HEATDataModule`.

    After ``setup``, ``num_dropped`` holds how many examples were dropped for a multi-token target.

    Example:
        >>> from heat_module.data import LongRADataModule
        >>> from heat_module.testing import tiny_jsonl, tiny_tokenizer
        >>> row = {"prompt": "the dog ran . ( the sun was warm ) . i saw the", "target_text": " dog"}
        >>> data = LongRADataModule(tiny_jsonl([row]), tokenizer=tiny_tokenizer())
        >>> batch = next(iter(data.predict_dataloader()))
        >>> batch["ids"], batch["distractor_mask"].any().item()  # no original tokens in the row: no distractor
        (['0'], False)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        tokenizer: object = "smollm2",
        batch_size: int = 4,
        limit: int | None = None,
        num_workers: int = 0,
        skip_bad_examples: bool = False,
    ) -> None:
        super().__init__(tokenizer, batch_size, limit, num_workers, skip_bad_examples)
        self.path = path
        self.num_dropped = 0

    def load_examples(self) -> list[Example]:
        examples, dropped, total = read_longra(self.path, self.tokenizer, self.bad_example)
        self.num_dropped = dropped
        if dropped:
            rank_zero_warn(f"LongRA {resolve_path(self.path)}: dropped {dropped} of {total} examples whose target_text "
                           f"is not a single token for this tokenizer ({total - dropped} kept)")
        return examples


class CuratedDataModule(HEATDataModule):
    """The curated NarrativeQA ⊕ SciQ set (:mod:`heat_module.data.curated`) with gold and distractor token masks
    for DSA / F1.

    Args:
        path: the curated JSON file (default: the shared copy, relative to the working directory or the repo root).
        tokenizer, batch_size, limit, num_workers, skip_bad_examples: see :class:`HEATDataModule`.

    Example:
        >>> from heat_module.testing import tiny_curated_examples, tiny_tokenizer
        >>> raw, tok = tiny_curated_examples(), tiny_tokenizer()  # one example: narrative, support, question
        >>> import tempfile
        >>> from heat_module.data import CuratedDataModule, save_curated_dataset
        >>> path = save_curated_dataset(raw, tempfile.mkdtemp() + "/mine.json")
        >>> batch = next(iter(CuratedDataModule(path, tokenizer=tok).predict_dataloader()))
        >>> batch["input_ids"].shape, int(batch["gold_mask"].sum())
        (torch.Size([1, 29]), 1)
    """

    def __init__(
        self,
        path: str | os.PathLike = "../shared/data/heta/heta_qa_dataset_100_unique.json",
        tokenizer: object = "smollm2",
        batch_size: int = 4,
        limit: int | None = None,
        num_workers: int = 0,
        skip_bad_examples: bool = False,
    ) -> None:
        super().__init__(tokenizer, batch_size, limit, num_workers, skip_bad_examples)
        self.path = path

    def load_examples(self) -> list[Example]:
        return read_curated(self.path, self.tokenizer, self.bad_example, self.limit)


class GenerationDataModule(HEATDataModule):
    """Prompts or chat conversations, each with an optional answer, whose answer is explained token by token
    (:mod:`heat_module.data.generation_prompts`). Batches are ``{"requests", "ids", "metadata"}`` dicts for
    ``HEATModule(generate=True)``, which writes one :class:`~heat_module.GenerationResult` per request.

    Args:
        path: a ``.jsonl`` file of ``{"prompt": ...}`` or ``{"messages": [...]}`` lines (optional ``id``,
            ``continuation``, ``max_new_tokens``, ``metadata``), or a list of such dicts / prompt strings.
        max_new_tokens: generated tokens per request without a ``continuation`` (a line's own value wins).
        tokenizer, batch_size, limit, num_workers, skip_bad_examples: see :class:`HEATDataModule` (the tokenizer
            is not needed to read the file: the attribution call tokenises, with the chat template for messages).

    Example:
        >>> from heat_module.testing import tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> from heat_module.data import GenerationDataModule
        >>> data = GenerationDataModule([{"prompt": "the cat sat on the", "continuation": " hill ."}], tokenizer=tok)
        >>> data.prepare_examples()[0].continuation
        ' hill .'
    """

    def __init__(
        self,
        path: str | os.PathLike | list,
        max_new_tokens: int = 16,
        tokenizer: object = "smollm2",
        batch_size: int = 1,
        limit: int | None = None,
        num_workers: int = 0,
        skip_bad_examples: bool = False,
    ) -> None:
        super().__init__(tokenizer, batch_size, limit, num_workers, skip_bad_examples)
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise ValueError(f"Expected max_new_tokens to be an integer >= 1, got {max_new_tokens!r}")
        self.path = path
        self.max_new_tokens = max_new_tokens

    def load_examples(self) -> list[GenerationRequest]:  # type: ignore[override]
        return read_generation_requests(self.path, self.max_new_tokens, self.bad_example)

    def collate_fn(self) -> Any:
        return collate_requests
