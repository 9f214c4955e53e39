"""Baseline attribution methods behind HEAT's contract, and a registry.

Every method is a class ``Method(model, tokenizer=None, **options)`` with ``attribute(text_or_ids, target=None)``
and ``attribute_batch(input_ids, attention_mask, target_ids)`` returning :class:`heat_module.AttributionResult`
(``method=`` set). Scores are for the next-token target y with g = log P(y | X) and stay raw.

======================================  ====================================================================
name                                    method
======================================  ====================================================================
``heat``                                :class:`heat_module.heat.HEAT` (options = a ``config``)
``attnlrp``                             AttnLRP (Achtibat et al. 2024): x_i ⊙ modified ∇ of the target logit
``attention_rollout``                   Abnar & Zuidema 2020 rollout of 0.5·Ā + 0.5·I, row p
``last_layer_attention``                mean over heads of the last layer's attention row p
``gradient_norm``                       ‖∇_{x_i} g‖₂ (``norm=1`` for ‖·‖₁)
``input_x_gradient``                    Σ_d x_i ⊙ ∇_{x_i} g (``absolute=True`` for its absolute value)
``integrated_gradients``                IG with zero / mean-embedding baseline, Gauss–Legendre or Riemann rules
``occlusion``                           P(y) − P(y | x_i zeroed) (``measure="kl"``: KL(P ‖ P^{(i)}))
``random``                              seeded U[0, 1) scores
``captum_feature_ablation`` …           captum ``LLMAttribution`` / ``LLMGradientAttribution`` (optional extra)
``inseq``                               scores saved by inseq (e.g. ReAGent), looked up by token ids
======================================  ====================================================================
"""

from __future__ import annotations

import importlib

_REGISTRY: dict[str, str] = {
    "heat": "heat_module.heat:HEAT",
    "attention_rollout": "heat_module.baselines.attention_rollout:AttentionRollout",
    "attnlrp": "heat_module.baselines.attnlrp:AttnLRP",
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
    """Register a method class (or a ``"module:Class"`` path) under ``name``."""
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


__all__ = ["available_methods", "get_method", "register"]
