"""Last-layer attention: the head-averaged attention of the prediction position in the top layer.

Score of token i = mean_h A^{L-1,h}[p, i], p = n-1 (a common "raw attention" baseline, e.g. Jain & Wallace 2019,
"Attention is not Explanation", NAACL). Target-agnostic. Uses the same attention capture as
:mod:`heat_module.baselines.attention_rollout`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import register_method
from heat_module.baselines.attention_rollout import attention_maps
from heat_module.lm.anatomy import check_attention_only
from heat_module.lm.capture import check_supported


@register_method("last_layer_attention", aliases=("attention", "last_attention"), title="Last-layer attention",
                 evaluation={"last_layer_attention": ("Last-layer attention", {})})
class LastLayerAttention(Attributor):
    """Mean over heads of the last layer's attention row p (https://arxiv.org/abs/1902.10186).

    Options:
        layer: which layer's attention (default -1, the last).

    The model keeps its attention implementation; hybrid decoders are refused.
    """

    def __init__(self, model: nn.Module, tokenizer: object | None = None, layer: int = -1, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise ValueError(f"Expected layer to be an integer, got {layer!r}")
        self.layer = layer
        check_supported(model)
        check_attention_only(model, "last-layer attention")

    def options(self) -> dict:
        return {"layer": self.layer}

    def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
        maps = attention_maps(self.model, inputs_embeds, attention_mask)
        if not -len(maps) <= self.layer < len(maps):
            raise ValueError(f"Expected layer in [-{len(maps)}, {len(maps)}), got {self.layer}")
        a = maps[self.layer]  # (B, H, n, n)
        scores = a[:, :, -1, :].mean(1) * attention_mask.float()
        return scores.to(torch.float32), None
