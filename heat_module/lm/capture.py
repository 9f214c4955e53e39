"""Capture of what the gate M needs, through transformers' attention interface (no per-architecture hooks).

HEAT registers an attention function ``"heat"`` in ``transformers.AttentionInterface`` and the matching mask
function in ``AttentionMaskInterface`` (without the latter the model would build no mask for an unknown
implementation and attention would silently be non-causal). Outside HEAT's own blocks (:func:`capture`,
:func:`eager_attention_mode`, :func:`prefix_cache`) both delegate to the implementation the model had, with every
keyword argument: installing HEAT leaves the model's outputs unchanged, and :func:`uninstall` restores it. Inside,
the function records, per layer, the post-RoPE queries (B, H, n, d_h), the keys and values *before* ``repeat_kv``
(B, H_kv, n, d_h), the scaling, the additive mask (B, 1, n, n) and the attention module (whose output projection
gives W_O), then computes attention either with SDPA (fast, the default), blockwise for first derivatives
(:func:`first_order_attention_mode`), or with a plain eager path (fp32 scores and softmax, soft-capping, learned
sinks), which supports forward-mode AD and double backward — needed by the Hessian-vector products of S (eq. 2–3).
Any attention keyword argument these paths do not implement raises.

Captures are named by where they live: ``layers.{l}.attn`` (TransformerLens style).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from heat_module.lm.anatomy import (
    CAUSAL,
    MaskBand,
    ModelAnatomy,
    allowed_from_additive,
    check_no_attention_bias,
    is_plain_causal,
    mask_band,
    model_anatomy,
)
from heat_module.lm.architectures import check_supported
from heat_module.lm.blockwise_attention import causal_attention, first_order_attention

ATTN_IMPLEMENTATION = "heat"
_state = threading.local()
#: id(config) -> (weak reference to the config, the attention implementation it had before `install`)
_ORIGINALS: dict[int, tuple[weakref.ref, str]] = {}
#: id(model) -> (weak reference to the model, number of `install` calls not yet matched by `uninstall`)
_INSTALLS: dict[int, tuple[weakref.ref, int]] = {}
#: every module inside a decoder layer of an installed model -> the model's anatomy
_MODULE_ANATOMY: weakref.WeakKeyDictionary[nn.Module, ModelAnatomy] = weakref.WeakKeyDictionary()
#: keyword arguments of the attention interface that HEAT's own paths may ignore: bookkeeping of the model's
#: forward, or already contained in the additive mask it receives (``sliding_window``; the mask is what is applied)
_IGNORED_KWARGS = frozenset({
    "position_ids", "use_cache", "cache_position", "output_attentions", "output_hidden_states", "return_dict",
    "output_router_logits", "past_key_values", "cache", "logits_to_keep", "layer_idx", "sliding_window",
})


def _get(name: str, default=None):
    return getattr(_state, name, default)


def _active() -> bool:
    """HEAT computes attention itself: something is captured, differentiated, or run on a frozen prefix."""
    return (_get("recorder") is not None or _get("eager", False) or _get("prefix") is not None
            or _get("first_order", False))


@dataclass
class LayerCapture:
    """What one attention layer saw in one forward pass.

    Attributes:
        name: ``layers.{l}.attn``.
        layer: the index l of the attention call (order of execution).
        query: (B, H, n, d_h) post-RoPE queries.
        key: (B, H_kv, n, d_h) post-RoPE keys, before ``repeat_kv``.
        value: (B, H_kv, n, d_v) values, before ``repeat_kv`` (d_v may differ from d_h: MLA).
        mask: (B, 1, n, n) additive float mask (0 = attend, very negative = masked) or ``None``.
        scaling: the softmax scale the model uses.
        softcap: attention logit soft-capping (Gemma 2 style) or ``None``.
        sliding_window: the ``sliding_window`` keyword the model passed (informative only: the mask is
            classified from ``mask``, see ``band``).
        module: the attention module (its output projection is W_O).
        weights: (B, H, n, n) attention probabilities, when recorded.
        sinks: (H,) learned sink logits (GPT-OSS ``s_aux``, ``sinks=``) or ``None``: the sink joins each row's
            softmax denominator and its column is dropped, so rows sum to less than one.
        decoder_layer: the index of the decoder layer that made the call (:class:`ModelAnatomy`), ``None`` if unknown.
        anatomy: the model's :class:`ModelAnatomy`, ``None`` if unknown.
        band: the mask the layer really applies, classified from ``mask`` (:func:`mask_band`).
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
    sinks: torch.Tensor | None = None
    decoder_layer: int | None = None
    anatomy: ModelAnatomy | None = None
    band: MaskBand = CAUSAL


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, n, d) -> (B, H_kv·n_rep, n, d): query head h reads kv head h // n_rep."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def attention_scores(
    query: torch.Tensor,
    key: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """(B, H, n, n_k) attention logits in fp32 (fp64 for fp64 inputs), soft-capped, plus the additive mask.

    Args: query (B, H, n, d_h), key (B, H_kv, n_k, d_h), mask (B, 1, n, n_k) additive.
    """
    dtype = torch.promote_types(query.dtype, torch.float32)
    k = repeat_kv(key, query.shape[1] // key.shape[1])
    scores = torch.matmul(query.to(dtype), k.to(dtype).transpose(2, 3)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores + mask[..., : k.shape[-2]].to(dtype)
    return scores


def attention_softmax(scores: torch.Tensor, sinks: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, n, n_k) probabilities from logits; with (H,) ``sinks`` the sink logit joins each row's denominator
    and its column is dropped (GPT-OSS), so rows sum to less than one."""
    if sinks is None:
        return torch.softmax(scores, dim=-1)
    B, H, n, _ = scores.shape
    sink = sinks.to(scores.dtype).reshape(1, H, 1, 1).expand(B, H, n, 1)
    return torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]


def eager_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention with forward-mode AD and double backward; scores and softmax in fp32 (fp64 for fp64).

    Args: query (B, H, n, d_h), key (B, H_kv, n_k, d_h), value (B, H_kv, n_k, d_v), mask (B, 1, n, n_k) additive,
        sinks (H,) sink logits.
    Returns: output (B, n, H, d_v) and probabilities (B, H, n, n_k) in the query dtype.
    """
    probs = attention_softmax(attention_scores(query, key, mask, scaling, softcap), sinks)
    v = repeat_kv(value, query.shape[1] // value.shape[1])
    out = torch.matmul(probs.to(v.dtype), v)
    return out.transpose(1, 2).contiguous(), probs.to(query.dtype)


def original_attention(module: nn.Module) -> Callable:
    """The attention function the model had before :func:`install` (the one its config names, or the eager
    function of the module's modeling file)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    name = original_implementation(getattr(module, "config", None))
    if name != "eager" and name in ALL_ATTENTION_FUNCTIONS:
        return ALL_ATTENTION_FUNCTIONS[name]
    eager = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if eager is None:
        raise TypeError(
            f"Expected the modeling module of {type(module).__name__} to define eager_attention_forward (the "
            f"attention the model had: {name!r}), got none"
        )
    return eager


def _heat_kwargs(kwargs: dict) -> tuple[float, float | None, torch.Tensor | None]:
    """(dropout, softcap, sinks) from the attention keyword arguments; raise on any HEAT does not implement."""
    dropout = float(kwargs.get("dropout", 0.0) or 0.0)
    softcap = kwargs.get("softcap")
    sinks = kwargs.get("s_aux")
    if sinks is None:
        sinks = kwargs.get("sinks")
    if dropout > 0:
        raise ValueError(f"Expected the model in eval mode (attention dropout 0) in HEAT, got dropout={dropout}")
    if kwargs.get("is_causal") is False:
        raise ValueError("Expected causal attention, got is_causal=False (bidirectional attention is not supported)")
    known = _IGNORED_KWARGS | {"scaling", "dropout", "softcap", "s_aux", "sinks", "is_causal"}
    unknown = sorted(k for k, v in kwargs.items() if k not in known and v is not None)
    if unknown:
        raise NotImplementedError(
            f"Expected only attention keyword arguments HEAT implements, got {unknown}: HEAT's own attention "
            "(captures, HVPs, prefix cache) does not apply them, and dropping them would give wrong numbers"
        )
    return dropout, softcap, sinks


def heat_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``"heat"`` attention function registered in transformers' ``AttentionInterface``.

    Outside :func:`capture`, :func:`eager_attention_mode` and :func:`prefix_cache` it calls the model's original
    attention function with every keyword argument (so the model's outputs are unchanged); inside, HEAT computes
    attention itself (SDPA, blockwise for first derivatives, or the eager path for weights / AD / soft-capping /
    sinks).
    """
    if not _active():
        return original_attention(module)(module, query, key, value, attention_mask, **kwargs)
    _, softcap, sinks = _heat_kwargs(kwargs)
    check_no_attention_bias(attention_mask, module)
    scaling = kwargs.get("scaling")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    prefix = _get("prefix")
    if prefix is not None:  # frozen KV cache of an unchanged prefix (see `prefix_cache`)
        layer = prefix.next_layer()
        key, value, attention_mask = prefix.extend(layer, key, value, attention_mask)
    recorder: list | None = _get("recorder")
    eager = (_get("eager", False) or softcap is not None or sinks is not None
             or recorder is not None and _get("weights", False))
    if eager:
        out, probs = eager_attention(query, key, value, attention_mask, scaling, softcap, sinks)
    elif _get("first_order", False):  # tiles recomputed in the backward, K cotangents batched through each
        out, probs = first_order_attention(query, key, value, attention_mask, scaling), None
    elif is_plain_causal(attention_mask, key.shape[-2]):  # SDPA's causal kernel: no mask read, the masked half skipped
        out, probs = causal_attention(query, key, value, scaling), None
    else:
        n_rep = query.shape[1] // key.shape[1]
        mask = attention_mask[..., : key.shape[-2]] if attention_mask is not None else None
        out = torch.nn.functional.scaled_dot_product_attention(
            query, repeat_kv(key, n_rep), repeat_kv(value, n_rep), attn_mask=mask, scale=scaling
        ).transpose(1, 2).contiguous()
        probs = None
    if recorder is not None:
        keep = _get("keep")
        anatomy = _MODULE_ANATOMY.get(module)
        mask = attention_mask.detach() if attention_mask is not None else None
        recorder.append(
            LayerCapture(
                name=f"layers.{len(recorder)}.attn",
                layer=len(recorder),
                query=query.detach() if keep else query,
                key=key.detach() if keep else key,
                value=value.detach() if keep else value,
                mask=mask,
                scaling=float(scaling),
                softcap=softcap,
                sliding_window=kwargs.get("sliding_window"),
                module=module,
                # probabilities only where asked for: soft-capping and sinks run eager too, but the gate
                # recomputes their rows in blocks, so no layer keeps an n × n tensor it was not asked to
                weights=None if probs is None or not _get("weights", False) else probs.detach() if keep else probs,
                sinks=None if sinks is None else sinks.detach(),
                decoder_layer=None if anatomy is None else anatomy.owner.get(id(module)),
                anatomy=anatomy,
                band=mask_band(attention_mask),  # the model's mask object: classified once per forward
            )
        )
    return out, probs


class PrefixKV:
    """Keys/values (post-RoPE, before ``repeat_kv``) of positions [0, i0) of every layer, reused as a frozen cache.

    In a causal model nothing before position i0 depends on the inputs at or after i0, so a run that changes only
    positions ≥ i0 needs to recompute just those positions on top of this cache (docs/design.md "I" and "S"). Each
    layer's mask (causal, sliding window, chunks: :class:`MaskBand`) is rebuilt over the absolute positions, so the
    prefix columns see the same window / chunks as in the full run.

    Attributes:
        keys, values: per layer (B or 1, H_kv, i0, d_h).
        valid: (B or 1, i0) bool, real prefix tokens (left padding False).
        bands: per layer the :class:`MaskBand` (default causal).
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], valid: torch.Tensor | None,
                 bands: list[MaskBand] | None = None) -> None:
        self.keys, self.values, self.valid = keys, values, valid
        self.bands = bands if bands is not None else [CAUSAL] * len(keys)
        bad = [i for i, band in enumerate(self.bands) if not band.shareable]
        if bad:
            raise ValueError(f"Expected layers whose mask the prefix cache can rebuild, got 'other' masks at {bad}")
        self._layer = 0

    @classmethod
    def from_captures(cls, captures: list[LayerCapture], i0: int, valid: torch.Tensor | None = None) -> PrefixKV:
        keys = [c.key[:, :, :i0].detach() for c in captures]
        values = [c.value[:, :, :i0].detach() for c in captures]
        return cls(keys, values, None if valid is None else valid[:, :i0].bool(), [c.band for c in captures])

    def next_layer(self) -> int:
        layer = self._layer
        self._layer = (self._layer + 1) % len(self.keys)
        return layer

    def extend(self, layer: int, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None):
        """Prepend the layer's prefix keys/values; the (B, 1, q, i0 + q) additive mask over absolute positions."""
        pk, pv = self.keys[layer], self.values[layer]
        i0 = pk.shape[2]
        if i0 == 0:
            return key, value, mask
        B, q = key.shape[0], key.shape[2]
        device = key.device
        pk = pk.expand(B, -1, -1, -1) if pk.shape[0] != B else pk
        pv = pv.expand(B, -1, -1, -1) if pv.shape[0] != B else pv
        key = torch.cat([pk.to(key.dtype), key], dim=2)
        value = torch.cat([pv.to(value.dtype), value], dim=2)
        dtype = mask.dtype if mask is not None and mask.dtype != torch.bool else key.dtype
        prefix_valid = (torch.ones(1, i0, dtype=torch.bool, device=device) if self.valid is None
                        else self.valid.to(device)).expand(B, i0)
        if mask is None:
            suffix_valid = torch.ones(B, q, dtype=torch.bool, device=device)
        else:  # a real query attends itself: the suffix keys' padding is the diagonal
            suffix_valid = allowed_from_additive(mask[..., :q].expand(B, 1, q, q))[:, 0].diagonal(dim1=-2, dim2=-1)
        valid = torch.cat([prefix_valid, suffix_valid], dim=1)  # (B, i0 + q)
        band = self.bands[layer]
        j = torch.arange(i0, i0 + q, device=device).view(1, q, 1)
        i = torch.arange(i0 + q, device=device).view(1, 1, i0 + q)
        allowed = (i <= j) & valid[:, None, :]
        if band.window is not None:
            allowed = allowed & (j - i < band.window)
        if band.chunk is not None:
            pad = (valid.long().cumsum(-1) == 0).sum(-1).view(B, 1, 1)
            allowed = allowed & (torch.div(j - pad, band.chunk, rounding_mode="floor")
                                 == torch.div(i - pad, band.chunk, rounding_mode="floor"))
        zero = torch.zeros((), dtype=dtype, device=device)
        full = torch.where(allowed[:, None], zero, torch.finfo(dtype).min)
        return key, value, full


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


def original_implementation(config: object | None) -> str:
    """The attention implementation ``config`` named before :func:`install` (``"eager"`` for a config HEAT does not
    know that names ``"heat"``, e.g. a deep copy of an installed model: every model's eager function is exact)."""
    if config is None:
        return "eager"
    entry = _ORIGINALS.get(id(config))
    if entry is not None and entry[0]() is config:
        return entry[1]
    name = getattr(config, "_attn_implementation", None)
    return "eager" if name in (None, ATTN_IMPLEMENTATION) else name


def heat_mask(*args, **kwargs):
    """The mask function of ``"heat"``: while HEAT computes attention itself, the explicit additive (B, 1, q, k)
    mask of ``eager``; otherwise the mask the original implementation would have got (``sdpa`` may return
    ``None`` for a plain causal mask, flash a 2-D padding mask)."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    if _active():
        return eager_mask(*args, **kwargs)
    name = original_implementation(kwargs.get("config"))
    if name == "eager":
        return eager_mask(*args, **kwargs)
    if name not in ALL_MASK_ATTENTION_FUNCTIONS:
        return None  # what transformers' mask creation returns for an implementation without a mask function
    return ALL_MASK_ATTENTION_FUNCTIONS[name](*args, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface  # lazy: heavy, imported when a model is installed
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, heat_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, heat_mask)


def _configs(model: nn.Module) -> list[object]:
    seen: dict[int, object] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            seen.setdefault(id(config), config)
    return list(seen.values())


def install(model: nn.Module) -> nn.Module:
    """Switch ``model`` to the ``"heat"`` attention implementation; undo with :func:`uninstall`.

    What it changes: ``model.config._attn_implementation`` becomes ``"heat"`` (the configs of its sub-modules too).
    Outside :func:`capture`, :func:`eager_attention_mode` and :func:`prefix_cache` the ``"heat"`` function calls the
    implementation the model had (eager, sdpa, flash, flex) with every keyword argument, and its mask function
    builds the mask that implementation would have got, so the model's outputs are unchanged (bit for bit on the
    CPU). Installs are counted per model: each :func:`install` needs one :func:`uninstall`, and the last one
    restores the original implementation. The model is classified once (:func:`model_anatomy`). An architecture HEAT
    is not shown exact on is refused first (:func:`heat_module.lm.architectures.check_supported`), before anything
    changes.
    """
    check_supported(model)  # refuses before anything is changed
    _register()
    anatomy = model_anatomy(model)
    entry = _INSTALLS.get(id(model))
    count = entry[1] if entry is not None and entry[0]() is model else 0
    if count == 0 and model.config._attn_implementation != ATTN_IMPLEMENTATION:
        for config in _configs(model):
            _ORIGINALS[id(config)] = (weakref.ref(config), original_implementation(config))
        model.set_attn_implementation(ATTN_IMPLEMENTATION)
    _INSTALLS[id(model)] = (weakref.ref(model), count + 1)
    for layer_module in model.modules():
        if id(layer_module) in anatomy.owner:
            _MODULE_ANATOMY[layer_module] = anatomy
    return model


def uninstall(model: nn.Module) -> nn.Module:
    """Undo one :func:`install`; the last one restores the attention implementation the model had."""
    entry = _INSTALLS.get(id(model))
    if entry is None or entry[0]() is not model:
        return model
    count = entry[1] - 1
    if count > 0:
        _INSTALLS[id(model)] = (entry[0], count)
        return model
    del _INSTALLS[id(model)]
    configs = _configs(model)
    originals = {id(c): original_implementation(c) for c in configs}
    if model.config._attn_implementation == ATTN_IMPLEMENTATION:
        model.set_attn_implementation(originals.get(id(model.config), "eager"))
    for config in configs:
        if config._attn_implementation == ATTN_IMPLEMENTATION:
            config._attn_implementation = originals[id(config)]
        _ORIGINALS.pop(id(config), None)
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


@contextlib.contextmanager
def first_order_attention_mode() -> Iterator[None]:
    """Inside the block, the ``"heat"`` attention runs
    :func:`~heat_module.lm.blockwise_attention.first_order_attention` (unless weights are recorded, or soft-capping
    or sinks need the eager path): enough for first derivatives; its backward keeps no (B, H, n, n) probabilities
    (memory grows like n instead of layers × heads × n²): SDPA's causal kernel for a plain causal mask, otherwise
    the blockwise form, which skips fully masked tiles and takes a batch of cotangents (``is_grads_batched``) through
    each tile at once. An enclosing or nested :func:`eager_attention_mode` block wins."""
    prev = _get("first_order", False)
    _state.first_order = True
    try:
        yield
    finally:
        _state.first_order = prev


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
    """Prefix sharing is exact when attention is the only token mixing (no hybrid layers, one capture per
    decoder layer), no layer computes anything from the cache's length (a suffix run has no cache: Llama 4's
    attention temperature, ``ModelAnatomy.past_length_readers``) and the prefix cache can rebuild every layer's
    mask (causal, sliding window, chunks)."""
    if not captures:
        return False
    anatomy = captures[0].anatomy
    if anatomy is not None:
        if anatomy.hybrid or anatomy.past_length_readers:
            return False
        layers = [c.decoder_layer for c in captures]
        if None in layers or len(set(layers)) != len(layers):
            return False
    return all(c.band.shareable for c in captures)


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
                sinks=c.sinks, decoder_layer=c.decoder_layer, anatomy=c.anatomy, band=c.band,
            )
        )
    return out
