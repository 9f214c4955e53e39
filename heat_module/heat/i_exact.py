"""The exact I (eq. 4): n masked forward passes on the prefix cache (:func:`heat_module.heat.information.information`),
costing :func:`heat_module.heat.cost.information_fe`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from heat_module.config import IEstimator, MaskKind, check_mask, positive_int, register_i_estimator
from heat_module.heat.cost import information_fe, model_attention_share
from heat_module.heat.information import information
from heat_module.heat.part import Example, PartOutput
from heat_module.lm.capture import can_share_prefix
from heat_module.lm.forward import mask_vector
from heat_module.result import Cost


@register_i_estimator("exact")
@dataclass(frozen=True)
class ExactI(IEstimator):
    """I_i = KL(P(·|X) ‖ P(·|X with x_i masked)) by masked forward passes (eq. 4); with a foil, |Δ_i| of the
    contrast log P(target) − log P(foil).

    Attributes:
        mask: what replaces x_i's embedding: ``"zero"`` (the paper's), ``"mean"`` embedding row, or ``"token"``.
        mask_token_id: the token id whose embedding is used when ``mask == "token"``.
        batch_size: how many masked variants are run in one forward pass. ≥ 1.
    """

    mask: MaskKind = "zero"
    mask_token_id: int | None = None
    batch_size: int = 8

    grows_with_n = True
    contrastive = True

    def __post_init__(self) -> None:
        check_mask(self.mask, self.mask_token_id)
        positive_int("batch_size", self.batch_size)

    def estimate(self, ex: Example) -> PartOutput:
        n = ex.n
        logits = ex.logits
        logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
        info = information(
            ex.model, ex.x, ex.captures, logp, None, mask_vector(ex.model, self.mask, self.mask_token_id),
            self.batch_size, contrast=None if ex.foil is None else (ex.target, ex.foil), progress=ex.progress,
        )
        return PartOutput(info, Cost(forward_passes=n, forward_equivalents=information_fe(
            n, self.batch_size, can_share_prefix(ex.captures), model_attention_share(ex.model, n))))
