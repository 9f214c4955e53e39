"""A progress bar for prediction and test runs: :class:`HEATProgressBar` (examples per second)."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar


class HEATProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar with the throughput in examples per second (``ex/s``) for predict and test."""

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self._start = 0.0
        self._count = 0

    def _reset(self) -> None:
        self._start, self._count = time.perf_counter(), 0

    def _update(self, bar: Any, batch: Any, outputs: Any) -> None:
        if isinstance(outputs, (list, tuple)):
            self._count += len(outputs)
        elif isinstance(batch, dict) and "input_ids" in batch:
            self._count += int(batch["input_ids"].shape[0])
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        if bar is not None:
            bar.set_postfix({"ex/s": f"{self._count / elapsed:.2f}", "examples": self._count}, refresh=False)

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_predict_epoch_start(trainer, pl_module)
        self._reset()

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                             batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update(self._predict_progress_bar, batch, outputs)
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_test_epoch_start(trainer, pl_module)
        self._reset()

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update(self._test_progress_bar, batch, None)
        super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
