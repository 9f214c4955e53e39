"""Functional forms of the metrics, ``torchmetrics.functional`` style: ``heat_module.metrics.functional.aopc(...)``.

Each ``functional/<metric>.py`` holds the per-example values (``<metric>_values``), the running totals
(``<metric>_update``), their reduction (``<metric>_compute``) and the public function; the Metric class in
``heat_module.metrics.<metric>`` calls the same update / compute helpers. ``common`` holds what they share.
Protocol boilerplate, on purpose: the four functions have the same shape in every file, and the public function
and the class's constructor list the same options, so each metric reads whole in its own two files.

The functions share their names with the modules that define them (``aopc.py`` defines ``aopc``), so after this
package is imported ``heat_module.metrics.functional.aopc`` is the function: import helpers with
``from heat_module.metrics.functional.aopc import aopc_update`` (which resolves the module), not as attributes.
"""

from heat_module.metrics.functional.abpc import abpc
from heat_module.metrics.functional.aopc import aopc
from heat_module.metrics.functional.dsa import dsa
from heat_module.metrics.functional.evidence_recall import evidence_recall
from heat_module.metrics.functional.f1_alignment import f1_alignment
from heat_module.metrics.functional.position_controlled import position_controlled
from heat_module.metrics.functional.sensitivity import sensitivity
from heat_module.metrics.functional.soft_faithfulness import soft_faithfulness, soft_nc, soft_ns
from heat_module.metrics.functional.spearman import active_passive_robustness, spearman_rho

__all__ = [
    "abpc",
    "active_passive_robustness",
    "aopc",
    "dsa",
    "evidence_recall",
    "f1_alignment",
    "position_controlled",
    "sensitivity",
    "soft_faithfulness",
    "soft_nc",
    "soft_ns",
    "spearman_rho",
]
