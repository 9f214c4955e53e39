"""The one contract every attribution method implements: :class:`Attributor` (HEAT and every baseline).

``Method(model, tokenizer=None, **options)``; ``attribute(text_or_ids, target=None) -> AttributionResult``;
``attribute_batch(input_ids (B, n) left padded, attention_mask (B, n), target_ids (B,)) -> list[AttributionResult]``.
Scores are for the next-token target y at p = n-1 with g = log P(y | X) (docs/design.md "Notation"); they stay raw
(normalising is the metric's job). Everything shared — encoding and validating a context, picking the greedy target,
validating a batch, slicing off the padding — lives here. A method implements ONE hook:

- :meth:`Attributor._scores` ((B, n) scores on a padded batch of embeddings; the baselines), or
- :meth:`Attributor._attribute_batch` (a validated batch to results; HEAT, which needs captures and per-example
  components).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from heat_module.attribution.generation import attribute_generation
from heat_module.generation_result import GenerationResult
from heat_module.lm.forward import check_left_padding, embed, next_token_logits, score_dtype
from heat_module.lm.offload import input_device
from heat_module.lm.quantization import check_not_bitsandbytes
from heat_module.result import AttributionResult

TargetIds = torch.Tensor | Sequence[int | None] | None


class Attributor:
    """Base class of every attribution method: holds ``self.model`` (a causal LM) and ``self.tokenizer`` (or None).

    Subclasses declare their registry entry with
    :func:`@register_method(name, ...) <heat_module.attribution.registry.register_method>`, which sets :attr:`name`
    (written to ``AttributionResult.method``); they validate their options in ``__init__`` ("Expected X, got Y") and
    implement :meth:`_scores` (or override :meth:`_attribute_batch`).

    Example: a method that scores each token by its position (a recency prior), registered by name.

        >>> import torch
        >>> from heat_module.attribution.base import Attributor
        >>> from heat_module.attribution.registry import build, register_method, unregister_method
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> @register_method("position_demo", uses_model=False)
        ... class PositionDemo(Attributor):
        ...     def _scores(self, input_ids, attention_mask, inputs_embeds, targets):  # (B, n) scores, extras
        ...         return torch.arange(1.0, input_ids.shape[1] + 1).expand(input_ids.shape[0], -1), None
        >>> res = build("position_demo", tiny_model("llama"), tiny_tokenizer()).attribute("the cat sat")
        >>> res.method, res.scores.tolist()
        ('position_demo', [1.0, 2.0, 3.0])
        >>> unregister_method("position_demo")
    """

    name: ClassVar[str] = "base"
    #: whether :meth:`_scores` handles a padded batch in one go (else :meth:`attribute_batch` loops).
    batched: ClassVar[bool] = True

    def __init__(self, model: nn.Module, tokenizer: object | None = None, **options: Any) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected model to be a torch nn.Module, got {type(model).__name__}")
        if options:
            raise TypeError(f"{type(self).__name__} got unexpected options {sorted(options)}")
        check_not_bitsandbytes(model, type(self).__name__)
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    def from_options(cls, model: nn.Module, tokenizer: Any = None, config: Any = None, **options: Any) -> Attributor:
        """Build the method the way the registry and ``HEATModule(method=...)`` do: a baseline takes its
        ``options`` and ignores the HEAT ``config``; :class:`heat_module.heat.estimator.HEAT` takes the config."""
        return cls(model, tokenizer, **options)

    def options(self) -> dict:
        """The method's options, written to ``AttributionResult.config``."""
        return {}

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embedding's device (its execution device on a dispatched model)."""
        return input_device(self.model)

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
        """(n,) token ids of a text or of given ids, validated. A text is tokenised with the tokenizer's defaults,
        except that a text which already starts with a special token (a BOS, a chat-template marker such as
        ``<|im_start|>``: a prompt rendered by ``apply_chat_template(..., tokenize=False)``) gets no special tokens
        added, so it is not given a second BOS."""
        if isinstance(text_or_ids, str):
            if not text_or_ids.strip():
                raise ValueError("Expected a non-empty text to attribute, got an empty string")
            if self.tokenizer is None:
                raise ValueError("Expected a tokenizer to encode text, got None (pass token ids instead)")
            ids = torch.tensor(self.tokenizer(text_or_ids, add_special_tokens=not has_special_prefix(
                self.tokenizer, text_or_ids))["input_ids"], dtype=torch.long)
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
        check_left_padding(attention_mask)
        if (attention_mask.sum(-1) == 0).any():
            raise ValueError("Expected every example to have at least one real token, got an empty example")
        for row, mask in zip(input_ids, attention_mask):
            self.encode(row[mask.bool()])
        return input_ids, attention_mask

    def attribute(
        self,
        text_or_ids: str | Sequence[int] | torch.Tensor | Sequence[str | Sequence[int] | torch.Tensor],
        target: int | str | None = None,
        *,
        targets: Sequence[int | str | None] | None = None,
        batch_size: int = 1,
    ) -> AttributionResult | list[AttributionResult]:
        """Attribute the next-token prediction after ``text_or_ids`` to its context tokens.

        Args:
            text_or_ids: a text (tokenised with the tokenizer's defaults) or (n,) token ids; or a list of these
                (then a list of results, see :meth:`attribute_list`).
            target: the target token (id or single-token string); ``None`` = the model's greedy next token.
            targets, batch_size: for list input only (:meth:`attribute_list`).
        """
        if is_list_input(text_or_ids):
            if target is not None:
                raise ValueError(f"Expected targets=[...] with a list of texts, got target={target!r}")
            return self.attribute_list(text_or_ids, targets, batch_size)
        if targets is not None:
            raise ValueError("Expected a list of texts with targets=[...], got a single text")
        ids = self.encode(text_or_ids)
        if isinstance(target, str):
            target = self.target_id(target, None)
        return self.attribute_batch(ids[None], torch.ones_like(ids)[None], [target])[0]

    def attribute_list(
        self,
        items: Sequence[str | Sequence[int] | torch.Tensor],
        targets: Sequence[int | str | None] | None = None,
        batch_size: int = 1,
    ) -> list[AttributionResult]:
        """One result per item, equal to ``[self.attribute(item, target) for ...]``.

        Args:
            items: texts or (n,) token ids.
            targets: one target per item (id, string, ``None`` = greedy; default all greedy). A text target of several
                tokens goes through :meth:`attribute` on its own (HEAT: sentence level).
            batch_size: items per :meth:`attribute_batch` call (left padded); 1 = :meth:`attribute` per item.
        """
        items = list(items)
        targets = [None] * len(items) if targets is None else list(targets)
        if len(targets) != len(items):
            raise ValueError(f"Expected one target per item ({len(items)}), got {len(targets)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Expected batch_size to be an integer >= 1, got {batch_size!r}")
        if batch_size == 1:
            return [self.attribute(item, target) for item, target in zip(items, targets)]
        out: list[AttributionResult | None] = [None] * len(items)
        single: list[tuple[int, torch.Tensor, int | None]] = []
        for k, (item, target) in enumerate(zip(items, targets)):
            if isinstance(target, str) and self.tokenizer is not None and len(
                    self.tokenizer(target, add_special_tokens=False)["input_ids"]) > 1:
                out[k] = self.attribute(item, target)
            else:
                single.append((k, self.encode(item), None if target is None else self.target_id(target, None)))
        for rows in chunk_rows(len(single), batch_size):
            chunk = single[rows]
            width = max(ids.numel() for _, ids, _ in chunk)
            input_ids = torch.zeros(len(chunk), width, dtype=torch.long, device=self.device)
            mask = torch.zeros_like(input_ids)
            for b, (_, ids, _) in enumerate(chunk):
                input_ids[b, width - ids.numel():] = ids
                mask[b, width - ids.numel():] = 1
            results = self.attribute_batch(input_ids, mask, [t for _, _, t in chunk])
            for (k, _, _), result in zip(chunk, results):
                out[k] = result
        return out

    def attribute_generation(self, prompt: Any = None, **kwargs: Any) -> GenerationResult | list[GenerationResult]:
        """The T × (n + T) attribution matrix of a generated or given answer: see
        :func:`heat_module.attribution.generation.attribute_generation` (same arguments after ``prompt``)."""
        return attribute_generation(self, prompt, **kwargs)

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
        """:meth:`attribute_batch` on a validated batch (ids and mask on ``self.device``); by default through
        :meth:`_scores`."""
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
                    scores=scores[b, start:].detach().to(score_dtype(scores.dtype)).cpu(),
                    method=self.name,
                    config=self.options(),
                    extra=extras[b] if extras else {},
                )
            )
        return results

    def _scores(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, inputs_embeds: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, list[dict] | None]:
        """The hook of a scores-based method: (B, n) scores (padding positions arbitrary) and optional
        per-example extras.

        Args:
            input_ids: (B, n) left-padded ids.
            attention_mask: (B, n) 1 for real tokens.
            inputs_embeds: (B, n, d) their embeddings (detached).
            targets: (B,) target ids.
        """
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


def chunk_rows(total: int, size: int) -> list[slice]:
    """Slices of at most ``size`` rows covering ``range(total)`` (batching of perturbed copies)."""
    if size < 1:
        raise ValueError(f"Expected a batch size >= 1, got {size}")
    return [slice(i, min(i + size, total)) for i in range(0, total, size)]


def is_list_input(value: Any) -> bool:
    """True for a list of texts / id sequences (not a single sequence of ids)."""
    if isinstance(value, (str, torch.Tensor)) or not isinstance(value, Sequence) or not value:
        return False
    return isinstance(value[0], (str, torch.Tensor, Sequence))


def has_special_prefix(tokenizer: Any, text: str) -> bool:
    """True when ``text`` already starts with one of the tokenizer's special tokens (BOS, chat markers)."""
    return any(tok and text.startswith(tok) for tok in (getattr(tokenizer, "all_special_tokens", None) or []))
