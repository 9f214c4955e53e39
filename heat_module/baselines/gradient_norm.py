"""Gradient norm ("saliency", Simonyan et al. 2014; for text Li et al. 2016, "Visualizing and Understanding Neural
Models in NLP", NAACL): score_i = ‖∇_{x_i} g‖_q with g = log P(y | X), q = 2 (default) or 1.

The q = 1 variant equals HEAT+FO's first-order term (:func:`heat_module.heat.objective.gradient_norms`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import register_method
from heat_module.baselines._grad import batch_gradient


@register_method("gradient_norm", aliases=("saliency", "grad_norm"), title="Gradient norm",
                 evaluation={"gradient_norm": ("Gradient norm (L2)", {"norm": 2})})
class GradientNorm(Attributor):
    """‖∇_{x_i} log P(y | X)‖_q per token (https://arxiv.org/abs/1312.6034, https://arxiv.org/abs/1506.01066).

    Options:
        norm: 2 (default, Euclidean) or 1.
    """

    def __init__(self, model: nn.Module, tokenizer: object | None = None, norm: int = 2, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        if norm not in (1, 2):
            raise ValueError(f"Expected norm to be 1 or 2, got {norm!r}")
        self.norm = int(norm)

    def options(self) -> dict:
        return {"norm": self.norm}

    def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
        g, grad = batch_gradient(self.model, inputs_embeds, attention_mask, targets)
        scores = grad.float().norm(p=self.norm, dim=-1) * attention_mask.float()
        return scores, [{"logprob": float(v)} for v in g]
