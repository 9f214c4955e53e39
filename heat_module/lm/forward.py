"""Forward helpers shared by HEAT, the metrics and the baselines.

Everything maps input embeddings X (B, n, d) — left padded, with an attention mask (B, n) — to the next-token
logits at the last position p = n-1 (eq. 1). Left padding needs explicit position ids so that a padded example
sees the same positions as the unpadded one.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import nn

ForwardFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
_MEAN_CACHE: dict[int, tuple[weakref.ref, tuple, torch.Tensor]] = {}  # id(weight) -> (weight, its state, mean)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, n) position ids that start at 0 on the first real token (left padding gets 0)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp_min(0)


def check_left_padding(attention_mask: torch.Tensor) -> None:
    """Raise unless every row of the (B, n) ``attention_mask`` is left padding: 0s (padding) then 1s (real tokens).

    A mask with holes (``[1, 0, 1, 1]``) or right padding would put the scores on the wrong tokens: HEAT and the
    baselines slice each example's real tokens as the positions after its padding.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"Expected attention_mask of shape (batch, n), got {tuple(attention_mask.shape)}")
    m = attention_mask.detach()
    binary = (m == 0) | (m == 1)
    if not bool(binary.all()):
        bad = sorted({float(v) for v in m[~binary].flatten()[:5].tolist()})
        raise ValueError(f"Expected attention_mask values 0 (padding) and 1 (real tokens), got {bad}")
    m = m.long()
    rows = (m[:, 1:] < m[:, :-1]).any(-1).nonzero().flatten().tolist()
    if rows:
        b = rows[0]
        shown = m[b, :16].tolist()
        raise ValueError(
            "Expected a left-padding attention_mask (0s then 1s in every row), got row "
            f"{b} = {shown}{' ...' if m.shape[1] > 16 else ''} (a mask with holes or right padding)"
        )


def embedding_matrix(model: nn.Module) -> torch.Tensor:
    """(V, d) the input embedding matrix."""
    return model.get_input_embeddings().weight


def embed(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """(B, n) ids -> (B, n, d) the embeddings the model takes as ``inputs_embeds``.

    Models that scale their embeddings (Gemma) do it inside the embedding module, so this is exactly what the
    model's own forward would compute from ``input_ids``.
    """
    return model.get_input_embeddings()(input_ids)


def next_token_logits(
    model: nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, n, d) embeddings -> (B, V) logits of the next token after the last position: fp32 for half-precision
    models (so log-softmax and KL do not round), fp64 kept for fp64 models (the exactness tests compare at 1e-10)."""
    if attention_mask is None:
        attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
    if position_ids is None:
        position_ids = position_ids_from_mask(attention_mask)
    out = model(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        logits_to_keep=1,
    )
    logits = out.logits[:, -1]
    return logits if logits.dtype == torch.float64 else logits.float()


def make_forward_fn(model: nn.Module) -> ForwardFn:
    """A callable ``f(inputs_embeds (B, n, d), attention_mask (B, n) | None) -> logits (B, V)`` for ``model``.

    This is what the metrics take, so they work with any model, not only those HEAT loads.
    """

    def forward_fn(inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return next_token_logits(model, inputs_embeds, attention_mask)

    return forward_fn


def mask_vector(model: nn.Module, kind: str = "zero", token_id: int | None = None) -> torch.Tensor:
    """(d,) what replaces a masked token's embedding (in the space of ``inputs_embeds``)."""
    weight = model.get_input_embeddings().weight
    if kind == "zero":
        return torch.zeros(weight.shape[1], dtype=weight.dtype, device=weight.device)
    if kind == "mean":
        # keyed by id, so also check that it is still the same tensor with the same data (ids are reused after a
        # free; in-place updates bump _version; .to()/.double() on a module swap the data behind the same object)
        state = (weight._version, weight.data_ptr(), weight.dtype, weight.device)
        cached = _MEAN_CACHE.get(id(weight))
        if cached is None or cached[0]() is not weight or cached[1] != state:
            with torch.no_grad():
                total = torch.zeros(weight.shape[1], dtype=torch.float64, device=weight.device)
                for start in range(0, weight.shape[0], 8192):  # through the module: Gemma scales embeddings
                    ids = torch.arange(start, min(start + 8192, weight.shape[0]), device=weight.device)
                    total += embed(model, ids[None])[0].double().sum(0)
            cached = (weakref.ref(weight), state, (total / weight.shape[0]).to(weight.dtype))
            _MEAN_CACHE[id(weight)] = cached
        return cached[2]
    if kind == "token":
        if token_id is None or not 0 <= int(token_id) < weight.shape[0]:
            raise ValueError(f"Expected mask_token_id in [0, {weight.shape[0]}), got {token_id!r}")
        with torch.no_grad():
            return embed(model, torch.tensor([[int(token_id)]], device=weight.device))[0, 0]
    raise ValueError(f"Expected mask kind to be one of ['zero', 'mean', 'token'], got {kind!r}")


def score_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of attribution scores for a model computing in ``dtype``: float64 for float64 models (their scores
    keep the precision they were computed in), float32 for every other (bf16 / fp16 models get fp32 scores)."""
    return torch.promote_types(dtype, torch.float32)
