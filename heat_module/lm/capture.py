"""Capture of what the gate M needs, through transformers' attention interface (no per-architecture hooks).

HEAT registers an attention function ``"heat"`` in ``transformers.AttentionInterface`` and the matching mask
function in ``AttentionMaskInterface`` (without the latter the model would build no mask for an unknown
implementation and attention would silently be non-causal). The function records, per layer, the post-RoPE
queries (B, H, n, d_h), the keys and values *before* ``repeat_kv`` (B, H_kv, n, d_h), the scaling, the additive
mask (B, 1, n, n) and the attention module (whose output projection gives W_O), then computes attention either
with SDPA (fast, the default) or with a plain eager path (matmul + softmax), which supports forward-mode AD and
double backward — needed by the Hessian-vector products of S (eq. 2–3).

Captures are named by where they live: ``layers.{l}.attn`` (TransformerLens style).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from heat_module.lm.projection import output_projection  # noqa: F401  re-export (moved to lm/projection.py)

ATTN_IMPLEMENTATION = "heat"
_state = threading.local()


def _get(name: str, default=None):
    return getattr(_state, name, default)


@dataclass
class LayerCapture:
    """What one attention layer saw in one forward pass.

    Attributes:
        name: ``layers.{l}.attn``.
        layer: the layer index l (order of execution).
        query: (B, H, n, d_h) post-RoPE queries.
        key: (B, H_kv, n, d_h) post-RoPE keys, before ``repeat_kv``.
        value: (B, H_kv, n, d_h) values, before ``repeat_kv``.
        mask: (B, 1, n, n) additive float mask (0 = attend, very negative = masked) or ``None``.
        scaling: the softmax scale the model uses.
        softcap: attention logit soft-capping (Gemma 2 style) or ``None``.
        sliding_window: the layer's sliding window or ``None``.
        module: the attention module (its output projection is W_O).
        weights: (B, H, n, n) attention probabilities, when recorded.
    """

    name: str
    layer: int
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    mask: torch.Tensor | None
    scaling: float
    softcap: float | None
    sliding_window: int | None
    module: nn.Module
    weights: torch.Tensor | None = None


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, n, d) -> (B, H_kv·n_rep, n, d): query head h reads kv head h // n_rep."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def eager_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention with forward-mode AD and double backward.

    Args: query (B, H, n, d_h), key/value (B, H_kv, n_k, d_h), mask (B, 1, n, n_k) additive.
    Returns: output (B, n, H, d_h) and probabilities (B, H, n, n_k).
    """
    n_rep = query.shape[1] // key.shape[1]
    k, v = repeat_kv(key, n_rep), repeat_kv(value, n_rep)
    scores = torch.matmul(query, k.transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores + mask[..., : k.shape[-2]]
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(probs, v)
    return out.transpose(1, 2).contiguous(), probs


def heat_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    sliding_window: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``"heat"`` attention function registered in transformers' ``AttentionInterface``."""
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    prefix = _get("prefix")
    if prefix is not None:  # frozen KV cache of an unchanged prefix (see `prefix_cache`)
        layer = prefix.next_layer()
        key, value, attention_mask = prefix.extend(layer, key, value, attention_mask)
    recorder: list | None = _get("recorder")
    eager = _get("eager", False) or softcap is not None or recorder is not None and _get("weights", False)
    if eager:
        out, probs = eager_attention(query, key, value, attention_mask, scaling, softcap)
    else:
        n_rep = query.shape[1] // key.shape[1]
        mask = attention_mask[..., : key.shape[-2]] if attention_mask is not None else None
        out = torch.nn.functional.scaled_dot_product_attention(
            query, repeat_kv(key, n_rep), repeat_kv(value, n_rep), attn_mask=mask, scale=scaling
        ).transpose(1, 2).contiguous()
        probs = None
    if recorder is not None:
        keep = _get("keep")
        recorder.append(
            LayerCapture(
                name=f"layers.{len(recorder)}.attn",
                layer=len(recorder),
                query=query.detach() if keep else query,
                key=key.detach() if keep else key,
                value=value.detach() if keep else value,
                mask=attention_mask.detach() if attention_mask is not None else None,
                scaling=float(scaling),
                softcap=softcap,
                sliding_window=sliding_window,
                module=module,
                weights=probs.detach() if probs is not None and keep else probs,
            )
        )
    return out, probs


class PrefixKV:
    """Keys/values (post-RoPE, before ``repeat_kv``) of positions [0, i0) of every layer, reused as a frozen cache.

    In a causal model nothing before position i0 depends on the inputs at or after i0, so a run that changes only
    positions ≥ i0 needs to recompute just those positions on top of this cache (docs/design.md "I" and "S").

    Attributes:
        keys, values: per layer (B or 1, H_kv, i0, d_h).
        valid: (B or 1, i0) bool, real prefix tokens (left padding False).
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], valid: torch.Tensor | None) -> None:
        self.keys, self.values, self.valid = keys, values, valid
        self._layer = 0

    @classmethod
    def from_captures(cls, captures: list[LayerCapture], i0: int, valid: torch.Tensor | None = None) -> PrefixKV:
        keys = [c.key[:, :, :i0].detach() for c in captures]
        values = [c.value[:, :, :i0].detach() for c in captures]
        return cls(keys, values, None if valid is None else valid[:, :i0].bool())

    def next_layer(self) -> int:
        layer = self._layer
        self._layer = (self._layer + 1) % len(self.keys)
        return layer

    def extend(self, layer: int, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None):
        pk, pv = self.keys[layer], self.values[layer]
        i0 = pk.shape[2]
        if i0 == 0:
            return key, value, mask
        B, q = key.shape[0], key.shape[2]
        pk = pk.expand(B, -1, -1, -1) if pk.shape[0] != B else pk
        pv = pv.expand(B, -1, -1, -1) if pv.shape[0] != B else pv
        key = torch.cat([pk.to(key.dtype), key], dim=2)
        value = torch.cat([pv.to(value.dtype), value], dim=2)
        dtype = mask.dtype if mask is not None else key.dtype
        cols = torch.zeros(1, 1, 1, i0, dtype=dtype, device=key.device)
        if self.valid is not None:
            cols = torch.where(self.valid.view(-1, 1, 1, i0), cols, torch.finfo(dtype).min)
        cols = cols.expand(B, 1, q, i0)
        if mask is None:
            mask = torch.zeros(B, 1, q, q, dtype=dtype, device=key.device)
            mask = mask.masked_fill(torch.ones(q, q, dtype=torch.bool, device=key.device).triu(1),
                                    torch.finfo(dtype).min)
        mask = torch.cat([cols, mask[..., :q].expand(B, 1, q, q)], dim=-1)
        return key, value, mask


@contextlib.contextmanager
def prefix_cache(prefix: PrefixKV | None) -> Iterator[None]:
    """Inside the block, every ``"heat"`` attention call prepends the frozen prefix keys/values of its layer.

    The model must be called on the suffix only, with explicit ``position_ids`` continuing the prefix.
    """
    prev = _get("prefix")
    _state.prefix = prefix
    if prefix is not None:
        prefix._layer = 0
    try:
        yield
    finally:
        _state.prefix = prev


def _register() -> None:
    from transformers import AttentionInterface  # lazy: heavy, imported when a model is installed
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, heat_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)


def check_supported(model: nn.Module) -> None:
    """Raise a clear error for models HEAT cannot explain (encoder-only, encoder-decoder, no attention interface)."""
    name = type(model).__name__
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"Expected a transformers PreTrainedModel with a config, got {name}")
    if getattr(config, "is_encoder_decoder", False):
        raise TypeError(f"Expected a decoder-only causal LM, got the encoder-decoder model {name}")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if name not in causal and not name.endswith("ForCausalLM") and not name.endswith("LMHeadModel"):
        raise TypeError(
            f"Expected a decoder-only causal LM (a *ForCausalLM model), got {name} "
            f"(model_type={getattr(config, 'model_type', '?')!r}); encoder-only models have no next-token prediction"
        )
    can_set = getattr(model, "_can_set_attn_implementation", None)
    if can_set is not None and not can_set():
        raise TypeError(
            f"Expected a model whose attention goes through transformers' AttentionInterface, got {name}, which "
            "computes attention in its own code; HEAT cannot capture its queries, keys and values"
        )


def install(model: nn.Module) -> nn.Module:
    """Switch ``model`` to the ``"heat"`` attention implementation (idempotent).

    Outside :func:`capture` the function simply runs SDPA, so the model's outputs are unchanged.
    """
    check_supported(model)
    _register()
    if model.config._attn_implementation != ATTN_IMPLEMENTATION:
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
    return model


@contextlib.contextmanager
def capture(weights: bool = False, keep_graph: bool = False) -> Iterator[list[LayerCapture]]:
    """Record a :class:`LayerCapture` per attention call made inside the block (in execution order).

    Args:
        weights: also compute (eager) and record the (B, H, n, n) attention probabilities.
        keep_graph: keep the recorded tensors attached to the autograd graph (default: detached).
    """
    records: list[LayerCapture] = []
    prev = (_get("recorder"), _get("weights", False), _get("keep", True))
    _state.recorder, _state.weights, _state.keep = records, weights, not keep_graph
    try:
        yield records
    finally:
        _state.recorder, _state.weights, _state.keep = prev


@contextlib.contextmanager
def eager_attention_mode(enabled: bool = True) -> Iterator[None]:
    """Inside the block, the ``"heat"`` attention runs the eager path (forward AD + double backward)."""
    prev = _get("eager", False)
    _state.eager = enabled
    try:
        yield
    finally:
        _state.eager = prev


def consecutive_runs(positions: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive runs of at most ``size`` positions (each run shares the prefix before its first position)."""
    runs: list[list[int]] = []
    for i in positions:
        if runs and len(runs[-1]) < size and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def can_share_prefix(captures: Sequence[LayerCapture]) -> bool:
    """Prefix sharing is exact unless a layer's mask is more than causal + padding over this length."""
    n = captures[0].key.shape[2]
    return all(c.softcap is None and (c.sliding_window is None or c.sliding_window >= n) for c in captures)


def slice_captures(captures: Sequence[LayerCapture], b: int, start: int) -> list[LayerCapture]:
    """The captures of batch element ``b`` without its ``start`` left-padding positions (a batch of one)."""
    out = []
    for c in captures:
        out.append(
            LayerCapture(
                name=c.name, layer=c.layer, query=c.query[b:b + 1, :, start:], key=c.key[b:b + 1, :, start:],
                value=c.value[b:b + 1, :, start:],
                mask=None if c.mask is None else c.mask[b:b + 1, :, start:, start:],
                scaling=c.scaling, softcap=c.softcap, sliding_window=c.sliding_window, module=c.module,
                weights=None if c.weights is None else c.weights[b:b + 1, :, start:, start:],
            )
        )
    return out
