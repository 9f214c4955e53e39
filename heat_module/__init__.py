"""heat-attribution: HEAT (Hessian-enhanced attribution) for decoder-only language models.

Public API (shared/DESIGN.md): ``load_model``, ``HEAT``, ``HEATConfig``, ``AttributionResult``, ``HEATModule``,
``AttributionWriter``, ``attribute_batch``. Heavy modules (lightning, transformers) are imported lazily.
"""

from __future__ import annotations

import importlib

from heat_module.config import HEATConfig
from heat_module.result import AttributionResult

__version__ = "0.1.0"

_LAZY = {
    "load_model": "heat_module.models",
    "HEAT": "heat_module.heat",
    "attribute_batch": "heat_module.heat",
    "HEATPredictMixin": "heat_module.module",
    "HEATModule": "heat_module.module",
    "AttributionWriter": "heat_module.writer",
    "fit_weights": "heat_module.fit",
}

__all__ = ["HEATConfig", "AttributionResult", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'heat_module' has no attribute {name!r}")
