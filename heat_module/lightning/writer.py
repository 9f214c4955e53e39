"""The prediction writer: :class:`AttributionWriter` (resumable JSON-lines shards).

Output layout of ``AttributionWriter(output_dir)``:

- ``predictions-rank{r}.jsonl`` — one line per attributed example, written by process ``r``: ``id``,
  ``config_hash`` (:meth:`HEATConfig.hash`), ``rank``, then every field of ``AttributionResult.to_dict()``
  (``tokens``, ``token_ids``, ``target``, ``target_id``, ``scores``, ``transition``, ``curvature``,
  ``information``, ``first_order``, ``method``, ``config``, ``cost``, ``extra``). A line round-trips through
  ``AttributionResult.from_dict``; :func:`read_predictions` reads a whole directory. With
  ``HEATModule(generate=True)`` a line holds ``GenerationResult.to_dict()`` instead (the per-step matrix;
  ``GenerationResult.from_dict`` reads it back).
- ``errors-rank{r}.jsonl`` — ``{"id", "error", "error_type", "metadata", "rank"}`` per example that failed under
  ``HEATModule(skip_bad_examples=True)``.

- ``corrupt-rank{r}.jsonl`` — lines of rank ``r``'s shard that were found corrupt when a run started, moved aside
  (``{"line", "raw"}``), so their examples are attributed again exactly once.
- ``.lock-rank{r}`` — the lock of rank ``r``'s shard (:mod:`heat_module.lightning.output_lock`).

Each batch's lines are appended in one write and ``fsync``'d before the next batch starts, so a crash loses at most
the batch in flight; a write that fails (a full disk: ``ENOSPC``) is undone to the end of the previous batch and
stops the run with an error that says so. On ``setup`` (predict) the writer takes the lock of its shard (a second
run on the same directory and rank stops with an error naming the run that holds it), then reads the shards already
in the directory (every rank's, so a resumed run may use another number of processes) and exposes the ids written
*with the current config hash* as ``done_ids``; the data modules drop those ids before batching and
``predict_step`` skips any that still arrive, so a re-run costs no attribution for finished examples. A torn last
line (a crash mid-write) is cut off; a corrupt line anywhere else is reported and, in the run's own shard, moved to
``corrupt-rank{r}.jsonl``: it is never counted as done, and never silently dropped.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_warn

from heat_module.config import FLAT_FIELDS, HEATConfig
from heat_module.data.readers import json_lines
from heat_module.hashing import stable_hash
from heat_module.lightning.output_lock import OutputLock
from heat_module.result import AttributionResult

log = logging.getLogger(__name__)

PREDICTIONS = "predictions-rank{rank}.jsonl"
ERRORS = "errors-rank{rank}.jsonl"
CORRUPT = "corrupt-rank{rank}.jsonl"


def config_hash(config: dict | HEATConfig | None) -> str | None:
    """:meth:`HEATConfig.hash` of a config (or of its dict, as stored in a result); ``None`` for no config."""
    if config is None:
        return None
    if isinstance(config, HEATConfig):
        return config.hash()
    try:
        return HEATConfig.from_dict(config).hash()
    except (TypeError, ValueError):  # a baseline's own config: hash the dict the same way
        return stable_hash(config)


def check_readable_config(row: dict, path: Path) -> None:
    """Refuse a HEAT row whose stored config is in the flat layout (S's and I's settings as fields of the config):
    its config hash was computed another way, so it can be neither matched nor told apart from this run's."""
    config = row.get("config")
    if row.get("method") == "heat" and isinstance(config, dict) and any(k in config for k in FLAT_FIELDS):
        raise ValueError(
            f"{path}: Expected predictions whose HEAT config holds S's and I's settings inside 'curvature' and "
            f"'information', got a row (id {row.get('id')!r}) with the flat fields "
            f"{sorted(k for k in config if k in FLAT_FIELDS)}: its config_hash cannot be compared with this run's. "
            "Write to a fresh output_dir, or move the old predictions away to attribute those examples again"
        )


def _repair_tail(path: Path) -> None:
    """Cut a torn last line (no trailing newline) left by a crash mid-write."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
    rank_zero_warn(f"{path}: cut a torn last line ({size - keep} bytes) left by an interrupted run")


@dataclass
class Shard:
    """One JSON-lines shard as read: its rows, and the lines that are not rows the writer wrote.

    Attributes:
        rows: the parsed lines (dicts with an ``id``), in file order.
        corrupt: ``(line number, raw text)`` of each complete line that is not a JSON object with an ``id``.
        torn_tail: the last line has no newline (a write in flight, or a crash mid-write).
    """

    rows: list[dict]
    corrupt: list[tuple[int, str]]
    torn_tail: bool = False


def scan_jsonl(path: Path) -> Shard:
    """Read a shard without stopping at damage: every good row, and every corrupt line with its number."""
    rows, corrupt, torn = [], [], False
    for k, line, row in json_lines(path):
        if isinstance(row, dict) and "id" in row:
            rows.append(row)
        elif line.endswith("\n") or not line.strip("\x00 \t\r\n"):  # NUL bytes: a block the filesystem never wrote
            corrupt.append((k, line.rstrip("\n")))
        else:
            torn = True
    return Shard(rows, corrupt, torn)


def _read_jsonl(path: Path) -> list[dict]:
    shard = scan_jsonl(path)
    if shard.corrupt:
        lines = ", ".join(str(k) for k, _ in shard.corrupt[:10])
        raise ValueError(f"{path}: Expected JSON lines written by AttributionWriter, got {len(shard.corrupt)} corrupt "
                         f"line(s) (line {lines}). A new run on this directory moves them to "
                         f"{CORRUPT.format(rank='<r>')} and attributes their examples again.")
    if shard.torn_tail:
        log.warning("%s: ignoring a torn last line", path)  # another rank's line in flight
    return shard.rows


def _quarantine(path: Path, shard: Shard, rank: int) -> None:
    """Move the corrupt lines of this rank's own shard to ``corrupt-rank{r}.jsonl`` (the shard is rewritten
    atomically with its good rows only) and warn, naming the lines."""
    aside = path.parent / CORRUPT.format(rank=rank)
    with open(aside, "a", encoding="utf-8") as f:
        for k, raw in shard.corrupt:
            f.write(json.dumps({"line": k, "raw": raw}, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp = path.with_name(path.name + ".rewrite")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in shard.rows:
            f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    lines = ", ".join(str(k) for k, _ in shard.corrupt[:10])
    rank_zero_warn(f"{path}: {len(shard.corrupt)} corrupt line(s) (line {lines}) moved to {aside}; their examples "
                   "are attributed again")


def read_predictions(output_dir: str | os.PathLike) -> list[dict]:
    """Every prediction line of every rank's shard in ``output_dir`` (dicts, in rank then file order)."""
    out = []
    for path in sorted(Path(output_dir).glob("predictions-rank*.jsonl")):
        out.extend(_read_jsonl(path))
    return out


def read_errors(output_dir: str | os.PathLike) -> list[dict]:
    """Every line of every rank's errors shard in ``output_dir``."""
    out = []
    for path in sorted(Path(output_dir).glob("errors-rank*.jsonl")):
        out.extend(_read_jsonl(path))
    return out


class AttributionWriter(BasePredictionWriter):
    """Write each predicted example as one JSON line per rank, durably and resumably (module docstring).

    Args:
        output_dir: the directory (created if missing); must be writable.
        resume: read existing shards at setup and skip ids already written with the same config hash
            (``False``: existing shards are kept and appended to, nothing is skipped).
        fsync: ``os.fsync`` after each batch (durable against a machine crash, not only a process crash).
        write_interval: only ``"batch"`` (lines are written as batches finish).

    Attributes:
        done_ids: ids already in the shards at setup (with the current config hash), as strings.

    Example:
        >>> import json, tempfile
        >>> import lightning.pytorch as L
        >>> from heat_module import AttributionWriter, HEATModule
        >>> from heat_module.data import TextPromptsDataModule
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> out = tempfile.mkdtemp()
        >>> trainer = L.Trainer(callbacks=[AttributionWriter(out, fsync=False)], logger=False,
        ...                     enable_progress_bar=False, enable_model_summary=False, inference_mode=False)
        >>> data = TextPromptsDataModule(["the cat sat on the", "the dog ran"], tokenizer=tiny_tokenizer())
        >>> module = HEATModule((tiny_model("llama"), tiny_tokenizer()))
        >>> trainer.predict(module, datamodule=data, return_predictions=False)
        >>> with open(out + "/predictions-rank0.jsonl") as f:
        ...     [json.loads(line)["id"] for line in f]
        ['0', '1']
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        resume: bool = True,
        fsync: bool = True,
        write_interval: Literal["batch"] = "batch",
    ) -> None:
        if write_interval != "batch":
            raise ValueError(f"Expected write_interval='batch' (lines are written per batch), got {write_interval!r}")
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.resume = resume
        self.fsync = fsync
        self.done_ids: set[str] = set()
        self.rank = 0
        self._hash: str | None = None
        self._lock: OutputLock | None = None
        self.num_written = 0
        self.num_errors = 0

    # ------------------------------------------------------------------ setup / teardown
    def _check_writable(self) -> None:
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise NotADirectoryError(f"Expected an output directory for AttributionWriter, got a file: "
                                     f"{self.output_dir}")
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PermissionError(f"Expected a writable output directory for AttributionWriter, got "
                                  f"{str(self.output_dir)!r} which cannot be created ({e.strerror})") from e
        probe = self.output_dir / f".write-test-{os.getpid()}-{self.rank}"
        try:
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise PermissionError(f"Expected a writable output directory for AttributionWriter, got "
                                  f"{str(self.output_dir)!r} which is not writable ({e.strerror})") from e

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        self.rank = trainer.global_rank
        self._check_writable()
        config = getattr(pl_module, "config", None)
        if callable(getattr(pl_module, "attribution_hash", None)):
            self._hash = pl_module.attribution_hash()
        else:
            self._hash = config_hash(config) if isinstance(config, HEATConfig) else None
        self._lock = OutputLock(self.output_dir, self.rank)
        self._lock.acquire()
        own = self.output_dir / PREDICTIONS.format(rank=self.rank)
        if own.exists():
            _repair_tail(own)
            shard = scan_jsonl(own)
            if shard.corrupt:
                _quarantine(own, shard, self.rank)
        self.done_ids = set()
        if self.resume:
            self.done_ids = self._written_ids()
            if self.done_ids:
                log.info("AttributionWriter: %d ids already written in %s will be skipped", len(self.done_ids),
                         self.output_dir)
        self.num_written = self.num_errors = 0

    def _written_ids(self) -> set[str]:
        """Ids already written with the current config hash, across every rank's shard; warns about predictions of
        another config, corrupt lines of other ranks' shards, and ids written more than once."""
        done: set[str] = set()
        other, repeated, damaged = 0, set(), []
        for path in sorted(self.output_dir.glob("predictions-rank*.jsonl")):
            shard = scan_jsonl(path)
            if shard.corrupt:
                damaged.append(f"{path.name} (line {', '.join(str(k) for k, _ in shard.corrupt[:10])})")
            for row in shard.rows:
                check_readable_config(row, path)
                if self._hash is None or row.get("config_hash") == self._hash:
                    key = str(row.get("id"))
                    if key in done:
                        repeated.add(key)
                    done.add(key)
                else:
                    other += 1
        if other:
            rank_zero_warn(f"{self.output_dir}: {other} predictions were written with another config; they are "
                           "kept and not skipped (use a fresh output_dir per config)")
        if damaged:
            rank_zero_warn(f"{self.output_dir}: corrupt lines in {'; '.join(damaged)}: those examples are attributed "
                           "again; the next run of that rank moves the lines aside")
        if repeated:
            rank_zero_warn(f"{self.output_dir}: {len(repeated)} ids were written more than once "
                           f"({sorted(repeated)[:5]}); read_predictions returns every copy")
        return done

    def _path(self, kind: str) -> Path:
        return self.output_dir / (PREDICTIONS if kind == "predictions" else ERRORS).format(rank=self.rank)

    def _append(self, kind: str, rows: list[dict]) -> None:
        """Append one batch's lines in one write; on failure (a full disk) undo the partial write and stop."""
        path = self._path(kind)
        blob = "".join(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n" for row in rows).encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.fstat(fd).st_size
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view):]
                if self.fsync:
                    os.fsync(fd)
            except OSError as e:
                os.ftruncate(fd, start)
                reason = "the disk is full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else e.strerror
                raise OSError(e.errno, f"AttributionWriter could not write {len(rows)} line(s) to {path} ({reason}); "
                              f"that batch was undone, {self.num_written} prediction(s) of this run are on disk. "
                              "Free space and run again with the same output directory: it resumes where it "
                              "stopped and writes every id once.") from e
        finally:
            os.close(fd)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "predict")

    # ------------------------------------------------------------------ writing
    def line(self, item: AttributionResult, fallback_id: str) -> dict:
        """The JSON object written for one result."""
        data = item.to_dict()
        ex_id = item.extra.get("id", fallback_id)
        return {"id": ex_id, "config_hash": self._hash or config_hash(getattr(item, "config", None)),
                "rank": self.rank, **data}

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if prediction is None:
            return
        items = prediction if isinstance(prediction, (list, tuple)) else [prediction]
        batches: dict[str, list[dict]] = {}
        counts = {"predictions": 0, "errors": 0}
        for k, item in enumerate(items):
            fallback = f"rank{self.rank}-dl{dataloader_idx}-batch{batch_idx}-{k}"
            if isinstance(item, AttributionResult) or hasattr(item, "generated_ids"):  # or a GenerationResult
                row, kind = self.line(item, fallback), "predictions"
            elif hasattr(item, "to_dict") and hasattr(item, "error"):  # heat_module.lightning.module.ExampleError
                row, kind = {**item.to_dict(), "rank": self.rank}, "errors"
                row["id"] = row.get("id") or fallback
                log.warning("Example %s failed (%s: %s); written to the errors shard", row["id"],
                            row.get("error_type"), row.get("error"))
            elif isinstance(item, dict):
                row, kind = {"id": item.get("id", fallback), "rank": self.rank, **item}, "predictions"
            else:
                raise TypeError(f"Expected predict_step to return AttributionResult / ExampleError items, got "
                                f"{type(item).__name__}")
            batches.setdefault(kind, []).append(row)
            counts[kind] += 1
        for kind, rows in batches.items():
            self._append(kind, rows)
        self.num_written += counts["predictions"]
        self.num_errors += counts["errors"]
