"""The one registry of attribution methods by name: HEAT and every baseline (and methods users register).

Names map to ``"module:Class"`` paths, imported on first use (so listing methods imports no model code and an
optional dependency such as captum is only needed by the method that uses it). Aliases (``ig``, ``rollout``, ...)
map to registered names. :func:`build` is what ``HEATModule(method=...)`` and the evaluation call: it builds the
method with :meth:`heat_module.attribution.base.Attributor.from_options`, so HEAT takes the ``config`` and a baseline
its ``options``.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

_REGISTRY: dict[str, str] = {
    "heat": "heat_module.heat.estimator:HEAT",
    "attnlrp": "heat_module.baselines.attnlrp:AttnLRP",
    "attention_rollout": "heat_module.baselines.attention_rollout:AttentionRollout",
    "last_layer_attention": "heat_module.baselines.last_layer_attention:LastLayerAttention",
    "gradient_norm": "heat_module.baselines.gradient_norm:GradientNorm",
    "input_x_gradient": "heat_module.baselines.input_x_gradient:InputXGradient",
    "integrated_gradients": "heat_module.baselines.integrated_gradients:IntegratedGradients",
    "occlusion": "heat_module.baselines.occlusion:Occlusion",
    "random": "heat_module.baselines.random_scores:RandomScores",
    "captum_feature_ablation": "heat_module.baselines.captum_llm:CaptumFeatureAblation",
    "captum_shapley_value_sampling": "heat_module.baselines.captum_llm:CaptumShapleyValueSampling",
    "captum_lime": "heat_module.baselines.captum_llm:CaptumLime",
    "captum_layer_integrated_gradients": "heat_module.baselines.captum_llm:CaptumLayerIntegratedGradients",
    "inseq": "heat_module.baselines.inseq_import:InseqScores",
    "gated": "heat_module.baselines.gated:Gated",
}
_ALIASES = {
    "rollout": "attention_rollout",
    "attention": "last_layer_attention",
    "last_attention": "last_layer_attention",
    "saliency": "gradient_norm",
    "grad_norm": "gradient_norm",
    "ixg": "input_x_gradient",
    "ig": "integrated_gradients",
    "loo": "occlusion",
    "leave_one_out": "occlusion",
}


def available_methods() -> list[str]:
    """The registered method names (aliases excluded)."""
    return sorted(_REGISTRY)


def register(name: str, target: str | type) -> None:
    """Register a method class (an :class:`~heat_module.attribution.base.Attributor` subclass, or anything called as
    ``target(model, tokenizer, **options)``) or its ``"module:Class"`` path under ``name``."""
    if isinstance(target, type):
        target = f"{target.__module__}:{target.__qualname__}"
    if ":" not in target:
        raise ValueError(f"Expected a class or a 'module:Class' path, got {target!r}")
    _REGISTRY[name] = target


def get_method(name: str) -> type:
    """The method class registered under ``name`` (case-insensitive; ``-`` and ``_`` are equivalent).

    Raises:
        KeyError: naming the known methods when ``name`` is unknown.
        ImportError: when the method's optional dependency (captum) is missing.
    """
    if not isinstance(name, str):
        raise TypeError(f"Expected a method name string, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise KeyError(
            f"Expected a method name in {available_methods()} (or an alias in {sorted(_ALIASES)}), got {name!r}"
        )
    module, _, attr = _REGISTRY[key].partition(":")
    return getattr(importlib.import_module(module), attr)




def build(name: str, model: nn.Module, tokenizer: Any = None, config: Any = None, **options: Any) -> Any:
    """The method registered under ``name``, built for ``model``: ``Class.from_options(model, tokenizer, config,
    **options)`` for an :class:`~heat_module.attribution.base.Attributor`, else ``target(model, tokenizer,
    **options)``. ``"gated:<name>"`` builds :class:`heat_module.baselines.gated.Gated` (M · scores) around the
    method ``<name>``.

    Raises:
        ValueError: when ``name`` is unknown (the message lists the known methods).
    """
    if isinstance(name, str) and name.strip().lower().startswith("gated:"):  # "gated:attnlrp" = M · AttnLRP
        options = {**options, "method": name.strip().split(":", 1)[1]}
        name = "gated"
    try:
        target = get_method(name)
    except KeyError as e:
        raise ValueError(e.args[0] if e.args else str(e)) from None
    from_options = getattr(target, "from_options", None)
    if from_options is not None:
        return from_options(model, tokenizer, config, **options)
    return target(model, tokenizer, **options)
