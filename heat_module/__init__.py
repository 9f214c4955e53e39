"""heat-attribution: HEAT (Hessian-enhanced attribution) for decoder-only language models.

Public API (README "Public API"): ``load_model``, ``HEAT``, ``HEATConfig``, ``AttributionResult``, ``Cost``,
``HEATModule``, ``HEATPredictMixin``, ``AttributionWriter``, ``attribute_batch``, ``fit_weights``,
``GenerationResult``, ``check_supported``. Heavy modules
(lightning, transformers) are imported lazily, on first access of the name.
"""

from __future__ import annotations

import importlib

from heat_module.config import HEATConfig
from heat_module.result import AttributionResult, Cost

__version__ = "0.1.0"

_LAZY = {
    "load_model": "heat_module.lm.loading",
    "HEAT": "heat_module.heat.estimator",
    "attribute_batch": "heat_module.heat.estimator",
    "HEATPredictMixin": "heat_module.lightning.module",
    "HEATModule": "heat_module.lightning.module",
    "AttributionWriter": "heat_module.lightning.writer",
    "fit_weights": "heat_module.heat.fit",
    "GenerationResult": "heat_module.generation_result",
    "check_supported": "heat_module.lm.architectures",
}

__all__ = ["HEATConfig", "AttributionResult", "Cost", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'heat_module' has no attribute {name!r}")
