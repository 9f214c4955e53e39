"""Functional forms of the metrics, ``torchmetrics.functional`` style: ``heat_module.metrics.functional.aopc(...)``.

They live here rather than in ``heat_module.metrics`` because the functions share their names with the modules that
define them (``aopc.py`` defines ``aopc``): exporting them from the package would shadow those modules.
"""

from heat_module.metrics.aopc import aopc
from heat_module.metrics.dsa import dsa
from heat_module.metrics.f1_alignment import f1_alignment
from heat_module.metrics.sensitivity import sensitivity
from heat_module.metrics.soft_faithfulness import soft_faithfulness, soft_nc, soft_ns
from heat_module.metrics.spearman import active_passive_robustness, spearman_rho

__all__ = [
    "active_passive_robustness",
    "aopc",
    "dsa",
    "f1_alignment",
    "sensitivity",
    "soft_faithfulness",
    "soft_nc",
    "soft_ns",
    "spearman_rho",
]
