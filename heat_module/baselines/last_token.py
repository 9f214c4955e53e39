"""All mass on the last context token: a prior that needs no model.

score_i = 1 for i = n − 1 (the token the prediction follows), 0 elsewhere. Every causal LM leans on its last token,
so a metric on which this prior scores as well as a method does not tell which context words drove the answer; it is
the floor a method must beat to say something beyond "the last token matters". The model is called only to pick the
greedy target when none is given.
"""

from __future__ import annotations

import torch

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import register_method


@register_method("last_token", title="Last token (prior, no model)", uses_model=False,
                 evaluation={"last_token": ("Last token (prior, no model)", {})})
class LastToken(Attributor):
    """score = 1 on the last context token, 0 on every other (no options)."""

    def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
        scores = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
        scores[:, -1] = 1.0  # left padding: the last column is every example's last real token
        return scores, None
