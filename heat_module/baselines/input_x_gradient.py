"""Input × gradient (Shrikumar et al. 2016, "Not Just a Black Box"; Kindermans et al. 2016): score_i =
Σ_d x_{i,d} · ∂g/∂x_{i,d} with g = log P(y | X) — the first-order Taylor estimate of g(X) − g(X with x_i zeroed).
Signed by default; ``absolute=True`` returns |Σ_d x_{i,d} ∂g/∂x_{i,d}|.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import register_method
from heat_module.baselines._grad import batch_gradient


@register_method("input_x_gradient", aliases=("ixg",), title="Input×Gradient",
                 evaluation={"input_x_gradient": ("Input×Gradient", {}),
                             "input_x_gradient_abs": ("|Input×Gradient|", {"absolute": True})})
class InputXGradient(Attributor):
    """Σ_d x_i ⊙ ∇_{x_i} log P(y | X) per token (https://arxiv.org/abs/1605.01713).

    Options:
        absolute: return the absolute value of the per-token sum (default False: signed).
    """

    def __init__(self, model: nn.Module, tokenizer: object | None = None, absolute: bool = False,
                 **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        if not isinstance(absolute, bool):
            raise ValueError(f"Expected absolute to be a bool, got {absolute!r}")
        self.absolute = absolute

    def options(self) -> dict:
        return {"absolute": self.absolute}

    def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
        g, grad = batch_gradient(self.model, inputs_embeds, attention_mask, targets)
        scores = (inputs_embeds.float() * grad.float()).sum(-1)
        if self.absolute:
            scores = scores.abs()
        return scores * attention_mask.float(), [{"logprob": float(v)} for v in g]
