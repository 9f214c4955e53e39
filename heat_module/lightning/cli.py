"""The LightningCLI of ``heat predict`` / ``heat test``: :class:`HEATCLI` and :func:`run_lightning`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from heat_module.lightning.module import HEATModule
from heat_module.lightning.writer import AttributionWriter

LIGHTNING_COMMANDS = ("predict", "test")


class HEATCLI(LightningCLI):
    """``LightningCLI`` restricted to ``predict`` / ``test``, with ``--output_dir`` for the writer.

    ``--output_dir DIR`` sets the ``output_dir`` of the configured :class:`~heat_module.AttributionWriter`
    (or adds one when the config has none), so a config's default output place can be overridden without
    rewriting its callback list.
    """

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {name: LightningCLI.subcommands()[name] for name in LIGHTNING_COMMANDS}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--output_dir", type=str | None, default=None,
                            help="Where the AttributionWriter writes its JSON-lines shards (overrides the config).")

    def _apply_output_dir(self) -> None:
        output_dir = self.config[self.subcommand].get("output_dir")
        if not output_dir:
            return
        writers = [cb for cb in self.trainer.callbacks if isinstance(cb, AttributionWriter)]
        if not writers:
            self.trainer.callbacks.append(AttributionWriter(output_dir))
        for writer in writers:
            writer.output_dir = Path(output_dir)

    def before_predict(self) -> None:
        self._apply_output_dir()

    def before_test(self) -> None:
        self._apply_output_dir()


def run_lightning(argv: Sequence[str] | None, **kwargs: Any) -> HEATCLI:
    """Run :class:`HEATCLI` on ``argv`` (starting with ``predict`` or ``test``; ``None``: ``sys.argv[1:]``)."""
    defaults = {"inference_mode": False, "logger": False, "enable_checkpointing": False}
    with warnings.catch_warnings():
        if argv is not None:  # called from Python (tests, notebooks): sys.argv belongs to someone else
            warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        return HEATCLI(
            HEATModule, pl.LightningDataModule, subclass_mode_data=True, args=None if argv is None else list(argv),
            save_config_callback=None, seed_everything_default=0,
            trainer_defaults={**defaults, **kwargs.pop("trainer_defaults", {})}, **kwargs,
        )
