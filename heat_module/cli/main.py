"""The ``heat`` command line: dispatch of ``heat <subcommand> ...``.

- ``heat predict --config configs/<name>.yaml [--output_dir DIR] [--data.limit K] ...`` and ``heat test ...`` run
  :class:`heat_module.lightning.cli.HEATCLI` (Lightning's ``LightningCLI`` with :class:`~heat_module.HEATModule`
  and any ``LightningDataModule`` in subclass mode); every ``LightningCLI`` option works (``--print_config``,
  ``--trainer.devices 2``, ``--model.config.beta 0.5``, ...).
- ``heat attribute ...`` (one text, no Trainer): :mod:`heat_module.cli.attribute`.
- ``heat fit-weights ...`` (β, γ by NNLS, Thm 3): :mod:`heat_module.cli.fit_weights`.
- ``heat eval ...`` (methods × datasets with the paper's metrics): :mod:`heat_module.cli.eval`.

Adding a subcommand: write a module ``heat_module/cli/<name>.py`` with ``def main(argv: list[str]) -> int | None``
and add it to :data:`COMMANDS`; names in :data:`LIGHTNING_COMMANDS` go to ``HEATCLI``. Subcommand modules are
imported only when their subcommand runs (each pulls in torch / transformers / Lightning, which ``heat --help``
needs none of).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from heat_module import __version__

LIGHTNING_COMMANDS = ("predict", "test")

#: subcommand -> the module whose ``main(argv)`` runs it.
COMMANDS: dict[str, str] = {
    "attribute": "heat_module.cli.attribute",
    "fit-weights": "heat_module.cli.fit_weights",
    "eval": "heat_module.cli.eval",
}


def run_command(command: str, argv: list[str]) -> int:
    """Run subcommand ``command`` of :data:`COMMANDS` on ``argv``; its exit status."""
    module = importlib.import_module(COMMANDS[command])  # lazy: heavy dependencies, only for the command that runs
    return int(module.main(argv) or 0)


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
        print(f"heat-attribution {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command in COMMANDS:
        return run_command(command, rest)
    if command in LIGHTNING_COMMANDS:
        from heat_module.lightning.cli import run_lightning  # lazy: imports Lightning (heavy), only for these

        run_lightning(None if from_sys else argv)
        return 0
    print(f"heat: Expected a subcommand in {[*LIGHTNING_COMMANDS, *COMMANDS]}, got {command!r}\n\n{_usage()}",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
