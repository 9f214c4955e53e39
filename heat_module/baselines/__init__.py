"""Baseline attribution methods behind HEAT's contract, and a registry.

Every method is a class ``Method(model, tokenizer=None, **options)`` with ``attribute(text_or_ids, target=None)``
and ``attribute_batch(input_ids, attention_mask, target_ids)`` returning :class:`heat_module.AttributionResult`
(``method=`` set). Scores are for the next-token target y with g = log P(y | X) and stay raw.

======================================  ====================================================================
name                                    method
======================================  ====================================================================
``heat``                                :class:`heat_module.heat.estimator.HEAT` (options = a ``config``)
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

Every method subclasses :class:`heat_module.attribution.base.Attributor` (``AttributionMethod`` is kept as an alias of
it for code written against the old name); the registry functions are those of :mod:`heat_module.attribution.registry`.
"""

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import available_methods, get_method, register

#: The former name of :class:`heat_module.attribution.base.Attributor` (kept for compatibility).
AttributionMethod = Attributor

__all__ = ["AttributionMethod", "Attributor", "available_methods", "get_method", "register"]
