"""The ``heat`` command: :mod:`~heat_module.cli.main` dispatches to one module per subcommand
(:mod:`~heat_module.cli.attribute`, :mod:`~heat_module.cli.fit_weights`, :mod:`~heat_module.cli.eval`; ``predict`` /
``test`` go to :mod:`heat_module.lightning.cli`). Re-exports :func:`main`, so ``heat_module.cli:main`` keeps working.
"""

from heat_module.cli.main import main

__all__ = ["main"]
