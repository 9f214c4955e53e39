"""Occlusion / leave-one-out (Zeiler & Fergus 2014; for text Li, Monroe & Jurafsky 2016, "Understanding Neural
Networks through Representation Erasure"): the change of the prediction when token i's embedding is replaced.

With P the next-token distribution and P^{(i)} the same with x_i replaced by the ``replacement`` vector
(``"zero"``, default, as HEAT's I; or the ``"mean"`` embedding row):

- ``measure="prob"`` (default): score_i = P(y) − P^{(i)}(y), the probability drop;
- ``measure="logprob"``: score_i = log P(y) − log P^{(i)}(y);
- ``measure="kl"``: score_i = KL(P ‖ P^{(i)}) — the same quantity as HEAT's I (eq. 4) with the same mask.

All n masked copies of every example are batched, ``batch_size`` rows per forward (no KV-cache sharing here: the
literal definition, one full forward per masked copy).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from heat_module.attribution.base import Attributor, chunk_rows
from heat_module.attribution.registry import register_method
from heat_module.heat.information import kl_divergence
from heat_module.lm.forward import mask_vector, next_token_logits


@register_method("occlusion", aliases=("loo", "leave_one_out"), title="Occlusion",
                 evaluation={"occlusion": ("Occlusion (ΔP)", {"measure": "prob"})})
class Occlusion(Attributor):
    """Leave-one-token-out occlusion of the input embeddings (https://arxiv.org/abs/1612.08220).

    Options:
        measure: ``"prob"`` (P(y) drop, default), ``"logprob"`` (log P(y) drop) or ``"kl"`` (KL(P ‖ P^{(i)})).
        replacement: ``"zero"`` (default) or ``"mean"`` embedding.
        batch_size: masked copies per forward pass (default 32).
    """

    def __init__(self, model: nn.Module, tokenizer: object | None = None, measure: str = "prob",
                 replacement: str = "zero", batch_size: int = 32, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        if measure not in ("prob", "logprob", "kl"):
            raise ValueError(f"Expected measure to be one of ['prob', 'logprob', 'kl'], got {measure!r}")
        if replacement not in ("zero", "mean"):
            raise ValueError(f"Expected replacement to be one of ['zero', 'mean'], got {replacement!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Expected batch_size to be an integer >= 1, got {batch_size!r}")
        self.measure, self.replacement, self.batch_size = measure, replacement, batch_size

    def options(self) -> dict:
        return {"measure": self.measure, "replacement": self.replacement}

    def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
        x = inputs_embeds
        vec = mask_vector(self.model, self.replacement).to(x.dtype)
        rows = attention_mask.nonzero().tolist()  # (b, i) of every real token
        scores = torch.zeros(x.shape[:2], dtype=torch.float32, device=x.device)
        with torch.no_grad():
            ref = torch.log_softmax(next_token_logits(self.model, x, attention_mask), -1)
            for sl in chunk_rows(len(rows), self.batch_size):
                chunk = torch.tensor(rows[sl], dtype=torch.long, device=x.device)
                b, i = chunk[:, 0], chunk[:, 1]
                xm = x[b].clone()
                xm[torch.arange(len(b), device=x.device), i] = vec
                logq = torch.log_softmax(next_token_logits(self.model, xm, attention_mask[b]), -1)
                logp = ref[b]
                y = targets[b]
                r = torch.arange(len(b), device=x.device)
                if self.measure == "prob":
                    value = logp[r, y].exp() - logq[r, y].exp()
                elif self.measure == "logprob":
                    value = logp[r, y] - logq[r, y]
                else:
                    value = kl_divergence(logp, logq)
                scores[b, i] = value.float()
        return scores, None
