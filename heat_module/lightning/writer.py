"""The prediction writer: :class:`AttributionWriter` (resumable JSON-lines shards).

Output layout of ``AttributionWriter(output_dir)``:

- ``predictions-rank{r}.jsonl`` — one line per attributed example, written by process ``r``: ``id``,
  ``config_hash`` (:meth:`HEATConfig.hash`), ``rank``, then every field of ``AttributionResult.to_dict()``
  (``tokens``, ``token_ids``, ``target``, ``target_id``, ``scores``, ``transition``, ``curvature``,
  ``information``, ``first_order``, ``method``, ``config``, ``cost``, ``extra``). A line round-trips through
  ``AttributionResult.from_dict``; :func:`read_predictions` reads a whole directory.
- ``errors-rank{r}.jsonl`` — ``{"id", "error", "error_type", "metadata", "rank"}`` per example that failed under
  ``HEATModule(skip_bad_examples=True)``.

Every batch's lines are flushed and ``fsync``'d before the next batch starts, so a crash loses at most the batch in
flight. On ``setup`` (predict) the writer reads the shards already in the directory (every rank's, so a resumed
run may use another number of processes) and exposes the ids written *with the current config hash* as
``done_ids``; the data modules drop those ids before batching and ``predict_step`` skips any that still arrive,
so a re-run costs no attribution for finished examples. A torn last line (a crash mid-write) is cut off.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_warn

from heat_module.config import S_UNUSED_WARNING, HEATConfig
from heat_module.hashing import stable_hash
from heat_module.result import AttributionResult

log = logging.getLogger(__name__)

PREDICTIONS = "predictions-rank{rank}.jsonl"
ERRORS = "errors-rank{rank}.jsonl"


def config_hash(config: dict | HEATConfig | None) -> str | None:
    """:meth:`HEATConfig.hash` of a config (or of its dict, as stored in a result); ``None`` for no config."""
    if config is None:
        return None
    if isinstance(config, HEATConfig):
        return config.hash()
    try:
        with warnings.catch_warnings():  # the β = 0 no-op warning was given when the config was made
            warnings.filterwarnings("ignore", message=S_UNUSED_WARNING, category=UserWarning)
            return HEATConfig(**config).hash()
    except (TypeError, ValueError):  # a baseline's own config: hash the dict the same way
        return stable_hash(config)


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


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for k, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                if line.endswith("\n"):
                    raise ValueError(f"{path}:{k}: Expected a JSON line written by AttributionWriter, got invalid "
                                     f"JSON ({e.msg})") from e
                log.warning("%s:%d: ignoring a torn last line", path, k)  # another rank's line in flight
    return rows


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
        self._files: dict[str, Any] = {}
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
        own = self.output_dir / PREDICTIONS.format(rank=self.rank)
        if own.exists():
            _repair_tail(own)
        self.done_ids = set()
        if self.resume:
            other = 0
            for row in read_predictions(self.output_dir):
                if self._hash is None or row.get("config_hash") == self._hash:
                    self.done_ids.add(str(row.get("id")))
                else:
                    other += 1
            if other:
                rank_zero_warn(f"{self.output_dir}: {other} predictions were written with another config; they are "
                               "kept and not skipped (use a fresh output_dir per config)")
            if self.done_ids:
                log.info("AttributionWriter: %d ids already written in %s will be skipped", len(self.done_ids),
                         self.output_dir)
        self.num_written = self.num_errors = 0

    def _file(self, kind: str) -> Any:
        if kind not in self._files:
            name = (PREDICTIONS if kind == "predictions" else ERRORS).format(rank=self.rank)
            self._files[kind] = open(self.output_dir / name, "a", encoding="utf-8")
        return self._files[kind]

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "predict")

    # ------------------------------------------------------------------ writing
    def line(self, item: AttributionResult, fallback_id: str) -> dict:
        """The JSON object written for one result."""
        data = item.to_dict()
        ex_id = item.extra.get("id", fallback_id)
        return {"id": ex_id, "config_hash": self._hash or config_hash(item.config), "rank": self.rank, **data}

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
        touched = set()
        for k, item in enumerate(items):
            fallback = f"rank{self.rank}-dl{dataloader_idx}-batch{batch_idx}-{k}"
            if isinstance(item, AttributionResult):
                row, kind = self.line(item, fallback), "predictions"
                self.num_written += 1
            elif hasattr(item, "to_dict") and hasattr(item, "error"):  # heat_module.lightning.module.ExampleError
                row, kind = {**item.to_dict(), "rank": self.rank}, "errors"
                row["id"] = row.get("id") or fallback
                self.num_errors += 1
                log.warning("Example %s failed (%s: %s); written to the errors shard", row["id"],
                            row.get("error_type"), row.get("error"))
            elif isinstance(item, dict):
                row, kind = {"id": item.get("id", fallback), "rank": self.rank, **item}, "predictions"
                self.num_written += 1
            else:
                raise TypeError(f"Expected predict_step to return AttributionResult / ExampleError items, got "
                                f"{type(item).__name__}")
            f = self._file(kind)
            f.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            touched.add(kind)
        for kind in touched:
            f = self._files[kind]
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
