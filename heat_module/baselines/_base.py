"""The contract every baseline shares with :class:`heat_module.heat.HEAT` (captum style, one method per file).

``Method(model, tokenizer=None, **options)``; ``attribute(text_or_ids, target=None) -> AttributionResult``;
``attribute_batch(input_ids (B, n) left padded, attention_mask (B, n), target_ids (B,)) -> list[AttributionResult]``.
Scores are for the next-token target y at p = n-1 with g = log P(y | X) (DESIGN.md "Notation"); they stay raw
(normalising is the metric's job). A subclass implements :meth:`AttributionMethod._scores` on a padded batch of
embeddings; everything else (encoding, validation, greedy targets, slicing off the padding) lives here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from heat_module.forward import embed, next_token_logits
from heat_module.inputs import AttributorInputs, TargetIds, target_at
from heat_module.result import AttributionResult


class AttributionMethod(AttributorInputs):
    """Base class of the baselines.

    Subclasses set :attr:`name` (the registry name written to ``AttributionResult.method``), validate their options
    in ``__init__`` ("Expected X, got Y") and implement :meth:`_scores`.
    """

    name: ClassVar[str] = "base"
    #: whether :meth:`_scores` handles a padded batch in one go (else :meth:`attribute_batch` loops).
    batched: ClassVar[bool] = True

    def __init__(self, model: nn.Module, tokenizer: object | None = None, **options: Any) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected model to be a torch nn.Module, got {type(model).__name__}")
        if options:
            raise TypeError(f"{type(self).__name__} got unexpected options {sorted(options)}")
        self.model = model
        self.tokenizer = tokenizer

    # ------------------------------------------------------------------ helpers
    def options(self) -> dict:
        """The method's options, written to ``AttributionResult.config``."""
        return {}

    # ------------------------------------------------------------------ public
    def attribute(
        self, text_or_ids: str | Sequence[int] | torch.Tensor, target: int | str | None = None
    ) -> AttributionResult:
        """Attribute the next-token prediction after ``text_or_ids`` to its context tokens.

        Args:
            text_or_ids: a text (tokenised with the tokenizer's defaults) or (n,) token ids.
            target: the target token (id or single-token string); ``None`` = the model's greedy next token.
        """
        ids = self.encode(text_or_ids)
        if isinstance(target, str):
            target = self.target_id(target, None)
        return self.attribute_batch(ids[None], torch.ones_like(ids)[None], [target])[0]

    def _attribute_batch(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_ids: TargetIds
    ) -> list[AttributionResult]:
        if not self.batched and input_ids.shape[0] > 1:
            return [
                self._attribute_batch(ids[None], torch.ones_like(ids)[None], [target])[0]
                for ids, target in self.unpadded(input_ids, attention_mask, target_ids)
            ]
        with torch.no_grad():
            x = embed(self.model, input_ids).detach()
        wanted = [target_at(target_ids, b) for b in range(input_ids.shape[0])]
        logits = None
        if any(t is None for t in wanted):
            with torch.no_grad():
                logits = next_token_logits(self.model, x, attention_mask)
        targets = torch.tensor(
            [self.target_id(t, None if logits is None else logits[b]) for b, t in enumerate(wanted)],
            dtype=torch.long, device=self.device,
        )
        scores, extras = self._scores(input_ids, attention_mask, x, targets)
        results = []
        for b in range(input_ids.shape[0]):
            start = int((attention_mask[b] == 0).sum())
            ids = input_ids[b, start:]
            y = int(targets[b])
            results.append(
                AttributionResult(
                    tokens=self.token_strings(ids),
                    token_ids=ids.detach().cpu(),
                    target=self.token_strings(torch.tensor([y]))[0],
                    target_id=y,
                    scores=scores[b, start:].detach().float().cpu(),
                    method=self.name,
                    config=self.options(),
                    extra=extras[b] if extras else {},
                )
            )
        return results

    def _scores(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, inputs_embeds: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, list[dict] | None]:
        """(B, n) scores (padding positions arbitrary) and optional per-example extras.

        Args:
            input_ids: (B, n) left-padded ids.
            attention_mask: (B, n) 1 for real tokens.
            inputs_embeds: (B, n, d) their embeddings (detached).
            targets: (B,) target ids.
        """
        raise NotImplementedError




def chunk_rows(total: int, size: int) -> list[slice]:
    """Slices of at most ``size`` rows covering ``range(total)``."""
    if size < 1:
        raise ValueError(f"Expected a batch size >= 1, got {size}")
    return [slice(i, min(i + size, total)) for i in range(0, total, size)]
