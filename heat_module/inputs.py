"""Input handling shared by HEAT and every baseline: encoding and validating a context, picking the target, and
the batch entry point ``attribute_batch`` every attribution method offers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from heat_module.result import AttributionResult

TargetIds = torch.Tensor | Sequence[int | None] | None


class AttributorInputs:
    """Mixin for attribution methods holding ``self.model`` (a causal LM) and ``self.tokenizer`` (or None)."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[0])

    @property
    def max_positions(self) -> int | None:
        cfg = getattr(self.model, "config", None)
        for name in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(cfg, name, None)
            if isinstance(value, int):
                return value
        return None

    def encode(self, text_or_ids: str | Sequence[int] | torch.Tensor) -> torch.Tensor:
        """(n,) token ids of a text (tokenizer defaults) or of given ids, validated."""
        if isinstance(text_or_ids, str):
            if not text_or_ids.strip():
                raise ValueError("Expected a non-empty text to attribute, got an empty string")
            if self.tokenizer is None:
                raise ValueError("Expected a tokenizer to encode text, got None (pass token ids instead)")
            ids = torch.tensor(self.tokenizer(text_or_ids)["input_ids"], dtype=torch.long)
        else:
            ids = torch.as_tensor(text_or_ids, dtype=torch.long).flatten()
        if ids.numel() == 0:
            raise ValueError("Expected at least one context token, got none")
        if int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size:
            raise ValueError(
                f"Expected token ids in [0, {self.vocab_size}), got range [{int(ids.min())}, {int(ids.max())}]"
            )
        limit = self.max_positions
        if limit is not None and ids.numel() > limit:
            raise ValueError(
                f"Expected a context of at most {limit} tokens (the model's maximum positions), got {ids.numel()}; "
                "use HEATConfig(window=...) with a shorter text or truncate it"
            )
        return ids.to(self.device)

    def target_id(self, target: int | str | None, logits: torch.Tensor | None) -> int:
        """The target token id: greedy from (V,) logits when ``target`` is None, else the given id / single token."""
        if target is None:
            if logits is None:
                raise ValueError("Expected logits to pick the greedy target, got None")
            return int(logits.argmax())
        if isinstance(target, str):
            if self.tokenizer is None:
                raise ValueError("Expected a tokenizer to encode a text target, got None")
            ids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise ValueError(f"Expected the target {target!r} to be exactly one token, got {len(ids)} tokens {ids}")
            target = ids[0]
        target = int(target)
        if not 0 <= target < self.vocab_size:
            raise ValueError(f"Expected a target id in [0, {self.vocab_size}), got {target}")
        return target

    def token_strings(self, ids: torch.Tensor) -> list[str]:
        if self.tokenizer is None:
            return [str(int(i)) for i in ids]
        return [self.tokenizer.decode([int(i)]) for i in ids]

    def check_batch(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate a left-padded batch ((B, n) ids and mask, default all ones) and every example's ids."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise ValueError(f"Expected input_ids of shape (batch, n), got {shape}")
        input_ids = input_ids.to(self.device)
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(self.device)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"Expected attention_mask of shape {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}"
            )
        if (attention_mask[:, -1] == 0).any():
            raise ValueError(
                "Expected left padding (the last position of every example is a real token), got right padding"
            )
        if (attention_mask.sum(-1) == 0).any():
            raise ValueError("Expected every example to have at least one real token, got an empty example")
        for row, mask in zip(input_ids, attention_mask):
            self.encode(row[mask.bool()])
        return input_ids, attention_mask

    def attribute_batch(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        target_ids: TargetIds = None,
    ) -> list[AttributionResult]:
        """Attribute a left-padded batch.

        Args:
            input_ids: (B, n) token ids, left padded.
            attention_mask: (B, n) 1 for real tokens (default all ones).
            target_ids: (B,) target ids; ``None`` (or -1 / None entries) = greedy next token.
        Returns:
            One :class:`AttributionResult` per example, over its real tokens only; equal to ``attribute`` on that
            example alone (up to float round-off of the batched forward).
        """
        input_ids, attention_mask = self.check_batch(input_ids, attention_mask)
        return self._attribute_batch(input_ids, attention_mask, target_ids)

    def _attribute_batch(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_ids: TargetIds
    ) -> list[AttributionResult]:
        """:meth:`attribute_batch` on a validated batch (ids and mask on ``self.device``)."""
        raise NotImplementedError

    @staticmethod
    def unpadded(
        input_ids: torch.Tensor, attention_mask: torch.Tensor, target_ids: TargetIds
    ) -> Iterator[tuple[torch.Tensor, int | None]]:
        """Each example's real-token ids (n_b,) and target (``None`` = greedy), for methods that go one by one."""
        for b, (row, mask) in enumerate(zip(input_ids, attention_mask)):
            yield row[mask.bool()], target_at(target_ids, b)


def target_at(target_ids, b: int) -> int | None:
    """Example b's target id from (B,) target ids, where ``None`` / -1 mean the greedy next token."""
    if target_ids is None:
        return None
    value = target_ids[b]
    if value is None:
        return None
    value = int(value)
    return None if value < 0 else value
