"""HEAT, the method: one file per equation of the paper (docs/paper.md lists which).

``objective`` (g, eq. 1–2), ``transition`` (M), ``curvature`` (S, eq. 2–3, and the dispatch over ``fisher``,
``lowrank``, ``layer_sampling``), ``information`` (I, eq. 4), ``combine`` (eq. 5, Table 5), ``cost`` (the FE cost
model), ``estimator`` (class :class:`HEAT`), ``windowing`` (Algorithm 1), ``sentence`` (eq. 23–24), ``fit`` (Thm 3).
M, S and I are parts HEAT composes (``part``): the gate ``m_gate`` and the estimators ``s_exact``, ``s_fisher``,
``s_lowrank``, ``i_exact``, ``i_fisher``, one file each, the estimators registered by name
(:func:`heat_module.config.register_s_estimator`).

This file gives the package's public names (``from heat_module.heat import HEAT``); the modules of the package
import each other by their full module path.
"""

from heat_module.heat.combine import Components, combine
from heat_module.heat.estimator import HEAT, attribute_batch

__all__ = ["HEAT", "Components", "attribute_batch", "combine"]
