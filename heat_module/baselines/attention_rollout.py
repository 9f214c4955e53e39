"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", ACL).

With Ā^l = mean_h A^{l,h} the head-averaged attention probabilities of layer l (n×n, causal) and the residual
connection modelled as Â^l = rownorm(r·I + (1 − r)·Ā^l) (r = 0.5 in the paper; rows of Ā already sum to one), the
rollout is the bottom-up product R = Â^{L-1} ··· Â^1 Â^0 and the score of token i is R[p, i], p = n-1 the
prediction position. Only row p is needed, so it is computed top-down as ρ ← ρ Â^l from ρ = e_p (vector–matrix
products; equal to the matrix product by associativity). The target does not enter (attention is target-agnostic).

Attention probabilities come from :func:`heat_module.lm.capture.capture` (``weights=True``: the eager path records
(B, H, n, n) per layer), so any architecture HEAT supports works; left padding is exact because real queries
never attend to padded keys. HEAT's attention is installed for that one forward and removed after it, so the model
is left as it was. Hybrid decoders (convolution / state-space layers beside attention) are refused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import register_method
from heat_module.lm.anatomy import check_attention_only
from heat_module.lm.capture import capture, check_supported, install, uninstall
from heat_module.lm.forward import next_token_logits


def attention_maps(model: nn.Module, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
    """Per layer (bottom to top) the (B, H, n, n) fp32 attention probabilities of one forward pass (HEAT's attention
    is installed for it and removed after it)."""
    install(model)
    try:
        with torch.no_grad(), capture(weights=True) as caps:
            next_token_logits(model, inputs_embeds, attention_mask)
    finally:
        uninstall(model)
    if not caps or any(c.weights is None for c in caps):
        raise RuntimeError("Expected the attention capture to record attention weights, got none")
    return [c.weights.float() for c in caps]


def rollout_row(maps: list[torch.Tensor], b: int, start: int, residual: float = 0.5, head_fusion: str = "mean"
                ) -> torch.Tensor:
    """(n_real,) row p of the rollout for example ``b`` whose real tokens start at ``start``."""
    n = maps[0].shape[-1] - start
    rho = torch.zeros(n, dtype=torch.float32, device=maps[0].device)
    rho[-1] = 1.0
    eye = torch.eye(n, dtype=torch.float32, device=rho.device)
    for a in reversed(maps):
        heads = a[b, :, start:, start:]
        fused = heads.mean(0) if head_fusion == "mean" else heads.max(0).values
        hat = residual * eye + (1.0 - residual) * fused
        hat = hat / hat.sum(-1, keepdim=True)
        rho = rho @ hat
    return rho


@register_method("attention_rollout", aliases=("rollout",), title="Attention rollout",
                 evaluation={"attention_rollout": ("Attention rollout", {})})
class AttentionRollout(Attributor):
    """Attention rollout of the prediction position (Abnar & Zuidema 2020, https://arxiv.org/abs/2005.00928).

    Options:
        residual: weight r of the identity in Â = r·I + (1 − r)·Ā (default 0.5, the paper's choice), in [0, 1).
        head_fusion: ``"mean"`` over heads (the paper) or ``"max"``.

    The model keeps its attention implementation (HEAT's is installed only while the attention is recorded);
    hybrid decoders are refused.
    """

    def __init__(self, model: nn.Module, tokenizer: object | None = None, residual: float = 0.5,
                 head_fusion: str = "mean", **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        if not 0.0 <= float(residual) < 1.0:
            raise ValueError(f"Expected residual in [0, 1), got {residual!r}")
        if head_fusion not in ("mean", "max"):
            raise ValueError(f"Expected head_fusion to be one of ['mean', 'max'], got {head_fusion!r}")
        self.residual = float(residual)
        self.head_fusion = head_fusion
        check_supported(model)
        check_attention_only(model, "attention rollout")

    def options(self) -> dict:
        return {"residual": self.residual, "head_fusion": self.head_fusion}

    def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
        maps = attention_maps(self.model, inputs_embeds, attention_mask)
        scores = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        for b in range(input_ids.shape[0]):
            start = int((attention_mask[b] == 0).sum())
            scores[b, start:] = rollout_row(maps, b, start, self.residual, self.head_fusion)
        return scores, None
