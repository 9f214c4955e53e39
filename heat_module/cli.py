"""The ``heat`` command line.

``heat <subcommand> ...``:

- ``heat predict --config configs/<name>.yaml [--output_dir DIR] [--data.limit K] ...`` and ``heat test ...`` run
  :class:`HEATCLI` (Lightning's ``LightningCLI`` with :class:`~heat_module.HEATModule` and any
  ``LightningDataModule`` in subclass mode); every ``LightningCLI`` option works (``--print_config``,
  ``--trainer.devices 2``, ``--model.config.probes 4``, ...).
- ``heat attribute ...`` (one text, no Trainer) is :func:`attribute_command`.

Adding a subcommand: write ``def my_command(argv: list[str]) -> int | None`` and register it in
:data:`COMMANDS`; names in :data:`LIGHTNING_COMMANDS` go to :class:`HEATCLI`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

LIGHTNING_COMMANDS = ("predict", "test")


def attribute_command(argv: list[str]) -> int | None:
    """``heat attribute --model smollm2 --text "..." [--json] [--html out.html]`` (one text, no Trainer).

    Delegates to ``heat_module.attribute_cli.attribute_command`` (the lead's implementation) when present.
    """
    try:
        from heat_module.attribute_cli import attribute_command as impl
    except ImportError:
        raise SystemExit("heat attribute: not yet implemented") from None
    return impl(argv)


def fit_weights_command(argv: list[str]) -> int | None:
    """``heat fit-weights ...``: β, γ by non-negative least squares (Thm 3); see :mod:`heat_module.fit`."""
    from heat_module.fit import fit_weights_command as impl

    return impl(argv)


def eval_command(argv: list[str]) -> int | None:
    """``heat eval ...``: methods × datasets with the paper's metrics; see :mod:`heat_module.evaluation`."""
    from heat_module.evaluation import eval_command as impl

    return impl(argv)


COMMANDS: dict[str, Callable[[list[str]], int | None]] = {
    "attribute": attribute_command,
    "fit-weights": fit_weights_command,
    "eval": eval_command,
}


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
        from heat_module.writer import AttributionWriter

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
    import lightning.pytorch as pl

    from heat_module.module import HEATModule

    defaults = {"inference_mode": False, "logger": False, "enable_checkpointing": False}
    with warnings.catch_warnings():
        if argv is not None:  # called from Python (tests, notebooks): sys.argv belongs to someone else
            warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        return HEATCLI(
            HEATModule, pl.LightningDataModule, subclass_mode_data=True, args=None if argv is None else list(argv),
            save_config_callback=None, seed_everything_default=0,
            trainer_defaults={**defaults, **kwargs.pop("trainer_defaults", {})}, **kwargs,
        )


def _usage() -> str:
    names = ", ".join([*LIGHTNING_COMMANDS, *COMMANDS])
    return (f"usage: heat <subcommand> [options]\n\nsubcommands: {names}\n"
            "  heat predict --config configs/smollm2_curated.yaml [--output_dir DIR]\n"
            "  heat test --config configs/smollm2_curated.yaml\n"
            "  heat attribute --model smollm2 --text \"...\"\n"
            "  heat <subcommand> --help")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``heat`` console script; returns the exit status."""
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from heat_module import __version__

        print(f"heat-attribution {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command in COMMANDS:
        return int(COMMANDS[command](rest) or 0)
    if command in LIGHTNING_COMMANDS:
        run_lightning(None if from_sys else argv)
        return 0
    print(f"heat: Expected a subcommand in {[*LIGHTNING_COMMANDS, *COMMANDS]}, got {command!r}\n\n{_usage()}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
