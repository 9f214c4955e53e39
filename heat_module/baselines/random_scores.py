"""Random scores: the floor every attribution method should beat (ReAGent reports ln(metric / metric of random)).

score_i ~ U[0, 1), drawn from a generator seeded by ``seed`` and the example's token ids, so an example gets the
same scores whatever the batch it is in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import register_method
from heat_module.hashing import digest_seed


def example_seed(seed: int, ids: torch.Tensor) -> int:
    """A 63-bit seed from ``seed`` and the (n,) token ids of one example."""
    return digest_seed(seed, ids.detach().cpu().to(torch.int64).numpy().tobytes())


@register_method("random", title="Random", uses_model=False, evaluation={"random": ("Random", {})})
class RandomScores(Attributor):
    """Seeded uniform random scores per token.

    Options:
        seed: the base seed (default 0).
    """

    def __init__(self, model: nn.Module, tokenizer: object | None = None, seed: int = 0, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"Expected seed to be an integer, got {seed!r}")
        self.seed = seed

    def options(self) -> dict:
        return {"seed": self.seed}

    def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
        scores = torch.zeros(input_ids.shape, dtype=torch.float32)
        for b in range(input_ids.shape[0]):
            start = int((attention_mask[b] == 0).sum())
            ids = input_ids[b, start:]
            g = torch.Generator().manual_seed(example_seed(self.seed, ids))
            scores[b, start:] = torch.rand(ids.numel(), generator=g)
        return scores.to(input_ids.device), None
