"""The ``heat`` command: :mod:`~heat_module.cli.main` dispatches to one module per subcommand
(:mod:`~heat_module.cli.attribute`, :mod:`~heat_module.cli.fit_weights`, :mod:`~heat_module.cli.eval`; ``predict`` /
``test`` go to :mod:`heat_module.lightning.cli`). The console script is ``heat_module.cli.main:main``.
"""
