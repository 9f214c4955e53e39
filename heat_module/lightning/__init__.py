"""Every Lightning part in one place: :mod:`~heat_module.lightning.module` (``HEATModule``, ``HEATPredictMixin``),
:mod:`~heat_module.lightning.writer` (``AttributionWriter``), :mod:`~heat_module.lightning.progress`
(``HEATProgressBar``), :mod:`~heat_module.lightning.datamodules` and :mod:`~heat_module.lightning.cli` (``HEATCLI``).

Importing this package imports nothing; import the module you need.
"""
