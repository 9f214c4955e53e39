"""What a decoder is made of, classified once per model, and which mask each attention layer really applies.

HEAT's shortcuts are exact only for some decoders (docs/design.md "I" and "S"):

- prefix sharing (batched I, exact S) reuses the unmasked run's attention keys/values of positions [0, i0) as a
  frozen cache. That holds everything a prefix passes on only when every token-mixing layer is an attention layer
  (a short convolution, a state-space or linear-attention layer carries state the KV cache does not hold), and
  only for masks whose prefix columns HEAT can rebuild (causal + padding, a sliding window, chunks);
- the gate M (rollout over attention) describes the token mixing only when attention is all of it;
- HEAT-LS slices the captures by decoder layer.

:func:`model_anatomy` classifies the decoder layers once per model (:class:`ModelAnatomy`); :func:`mask_band`
classifies one attention layer's captured additive mask (:class:`MaskBand`), read from the mask itself rather than
from keyword arguments such as ``sliding_window`` (Llama 4 passes none for its chunks).
"""

from __future__ import annotations

import inspect
import re
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from heat_kernels.rollout_phi import allowed_mask
from heat_module.lm.architectures import ATTENTION_TYPES, LAYER_PATHS, MIXER_NAMES, UnsupportedArchitecture


def num_layers(model: nn.Module) -> int:
    """L, the number of decoder layers (``num_hidden_layers`` / ``n_layer`` of the config)."""
    cfg = model.config
    for name in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(cfg, name, None)
        if isinstance(value, int):
            return value
    text = getattr(cfg, "get_text_config", None)
    if text is not None and text() is not cfg:
        return int(text().num_hidden_layers)
    raise UnsupportedArchitecture(
        str(getattr(cfg, "model_type", type(cfg).__name__)),
        f"Expected the model config to have num_hidden_layers (one stack of decoder layers), got {type(cfg).__name__}",
        "Use a decoder-only causal LM with one stack of decoder layers.",
    )


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``nn.ModuleList`` of the L decoder layers, in execution order."""
    L = num_layers(model)
    for path in LAYER_PATHS:
        obj: object = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) == L:
            return obj
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == L and name.split(".")[-1] in ("layers", "h", "blocks"):
            return module
    raise UnsupportedArchitecture(
        str(getattr(model.config, "model_type", "?")),
        f"Expected {type(model).__name__} to hold its {L} decoder layers in an nn.ModuleList, got none",
        "Use a decoder-only causal LM with one stack of decoder layers.",
    )


@dataclass(eq=False)
class ModelAnatomy:
    """The decoder layers of one model.

    Attributes:
        num_layers: L.
        layer_types: per decoder layer, ``"attention"`` or the type of its non-attention token mixer (the
            config's ``layer_types`` entry such as ``"conv"`` / ``"linear_attention"``, else the mixer's class name).
        owner: id of every module inside a decoder layer -> that layer's index (maps a capture to its layer).
        past_length_readers: class names of modules inside the decoder layers whose forward reads the cache's
            length (``cache.get_seq_length(...)``) to compute something from absolute positions, such as Llama 4's
            attention temperature ``log1p(floor((arange(q) + past + 1) / floor_scale))``: a suffix-only run
            without a cache starts that count at 0, so the prefix cache cannot reproduce it
            (:func:`past_length_readers`).
    """

    num_layers: int
    layer_types: tuple[str, ...]
    owner: dict[int, int]
    past_length_readers: tuple[str, ...] = ()

    @property
    def hybrid(self) -> bool:
        """Some decoder layer mixes tokens by something other than attention."""
        return any(t != "attention" for t in self.layer_types)

    def non_attention(self) -> dict[int, str]:
        """{decoder layer index: its token-mixer type} of the layers that mix tokens without attention."""
        return {i: t for i, t in enumerate(self.layer_types) if t != "attention"}

    def describe(self) -> str:
        """A one-line description of the non-attention layers, for error messages."""
        kinds: dict[str, list[int]] = {}
        for i, t in self.non_attention().items():
            kinds.setdefault(t, []).append(i)
        return ", ".join(f"{t!r} at decoder layers {idx}" for t, idx in kinds.items())


_ANATOMIES: weakref.WeakKeyDictionary[nn.Module, ModelAnatomy] = weakref.WeakKeyDictionary()
#: a forward that reads how many tokens the cache holds (the positions before the current input)
_READS_PAST_LENGTH = re.compile(r"\.get_seq_length\(")
_PAST_LENGTH_BY_CLASS: dict[type, bool] = {}


def _reads_past_length(klass: type) -> bool:
    """Whether ``klass.forward`` (a model's own Python code) calls ``get_seq_length`` (cached per class)."""
    if klass not in _PAST_LENGTH_BY_CLASS:
        try:
            source = inspect.getsource(klass.forward)
        except (OSError, TypeError):  # no Python source: torch's own modules, C extensions
            source = ""
        _PAST_LENGTH_BY_CLASS[klass] = bool(_READS_PAST_LENGTH.search(source))
    return _PAST_LENGTH_BY_CLASS[klass]


def past_length_readers(layers: nn.ModuleList) -> tuple[str, ...]:
    """Class names of the modules in ``layers`` (outside ``torch.nn``) whose forward reads the cache's length."""
    names = {type(m).__name__ for layer in layers for m in layer.modules()
             if not type(m).__module__.startswith("torch.") and _reads_past_length(type(m))}
    return tuple(sorted(names))


def _mixer_type(layer: nn.Module) -> str | None:
    for module in layer.modules():
        name = type(module).__name__
        if MIXER_NAMES.search(name):
            return name
        if isinstance(module, nn.Conv1d) and module.kernel_size[0] > 1:
            return name
    return None


def model_anatomy(model: nn.Module) -> ModelAnatomy:
    """Classify ``model``'s decoder layers (cached per model).

    A layer is non-attention when the config's ``layer_types`` entry is not an attention type, or when it holds a
    token-mixing module that is not attention (a class whose name contains Mamba / SSM / ShortConv / LinearAttention /
    DeltaNet / RWKV, or an ``nn.Conv1d`` with a kernel wider than 1).
    """
    cached = _ANATOMIES.get(model)
    if cached is not None:
        return cached
    layers = decoder_layers(model)
    cfg = model.config
    text = getattr(cfg, "get_text_config", None)
    cfg = text() if text is not None else cfg
    declared = getattr(cfg, "layer_types", None)
    types = []
    owner: dict[int, int] = {}
    for i, layer in enumerate(layers):
        for module in layer.modules():
            owner[id(module)] = i
        kind = "attention"
        if declared is not None and i < len(declared) and str(declared[i]) not in ATTENTION_TYPES:
            kind = str(declared[i])
        else:
            mixer = _mixer_type(layer)
            if mixer is not None:
                kind = mixer
        types.append(kind)
    anatomy = ModelAnatomy(num_layers=len(layers), layer_types=tuple(types), owner=owner,
                           past_length_readers=past_length_readers(layers))
    _ANATOMIES[model] = anatomy
    return anatomy


def check_attention_only(model: nn.Module, what: str) -> None:
    """Raise unless every decoder layer of ``model`` mixes tokens by attention alone: ``what`` (a rollout over
    attention, or one layer's attention) describes the token mixing of a hybrid decoder only in part."""
    anatomy = model_anatomy(model)
    if anatomy.hybrid:
        raise ValueError(
            f"Expected a decoder whose token mixing is all attention for {what}, got a hybrid "
            f"{type(model).__name__} with {anatomy.describe()}; attention ignores these layers, so {what} would "
            "leave out part of how tokens reach the prediction"
        )


@dataclass(frozen=True)
class MaskBand:
    """The mask one attention layer applies, besides key padding.

    Attributes:
        kind: ``"causal"``, ``"window"`` (query j sees keys j - window < i <= j), ``"chunk"`` (chunks of ``chunk``
            positions from the first real token, Llama 4), or ``"other"`` (anything else: HEAT's kernels and prefix
            cache do not rebuild it).
        window: the sliding window, for ``"window"``.
        chunk: the chunk size, for ``"chunk"``.
    """

    kind: str
    window: int | None = None
    chunk: int | None = None

    @property
    def shareable(self) -> bool:
        """The prefix cache can rebuild this mask's prefix columns."""
        return self.kind != "other"


CAUSAL = MaskBand("causal")


def allowed_from_additive(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, q, k) additive float mask (0 attend, very negative masked) -> bool, True where attended."""
    if mask.dtype == torch.bool:
        return mask
    return mask > torch.finfo(mask.dtype).min / 2


#: id(mask) -> (weak reference to the mask, its version, {question: answer}): what :func:`mask_fact` computed
_MASK_FACTS: dict[int, tuple[weakref.ref, int, dict]] = {}


def mask_fact(mask: torch.Tensor, question: str, compute) -> object:
    """``compute()``, kept per mask object and version: a model passes one mask object to every layer of a forward,
    so an O(n²) question about it (its band, its bias, whether it is plain causal) is answered once per forward,
    not once per layer (at n = 8192 on SmolLM2 the per-layer answers cost ≈ 1 s a layer). A mask changed in place
    is asked again; a tensor without a version counter (made under ``torch.inference_mode``) is asked every time.
    """
    try:
        version = mask._version
    except RuntimeError:  # inference tensors do not track versions
        return compute()
    key = id(mask)
    entry = _MASK_FACTS.get(key)
    if entry is None or entry[0]() is not mask or entry[1] != version:
        def forget(ref: weakref.ref, key: int = key) -> None:
            if _MASK_FACTS.get(key, (None,))[0] is ref:
                _MASK_FACTS.pop(key, None)

        entry = (weakref.ref(mask, forget), version, {})
        _MASK_FACTS[key] = entry
    facts = entry[2]
    if question not in facts:
        facts[question] = compute()
    return facts[question]


def is_plain_causal(mask: torch.Tensor | None, n_keys: int) -> bool:
    """Whether the additive (B, 1, n, ≥ n_keys) mask, cut to its first ``n_keys`` keys, is exactly causal for every
    batch element: n = ``n_keys`` and query j attends keys 0..j — no padding, window, chunk or additive bias. Then
    SDPA's ``is_causal`` kernel computes the same attention without the mask (and skips the masked half). That is
    :func:`mask_band`'s ``"causal"`` with every token real (its diagonal all attended); answered once per mask object
    (:func:`mask_fact`), and for a mask of exactly n keys from the band the capture classifies anyway.
    """
    if mask is None or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != n_keys or mask.shape[3] < n_keys:
        return False

    def compute() -> bool:
        whole = mask.shape[3] == n_keys
        cut = mask if whole else mask[..., :n_keys]
        band = mask_band(mask) if whole else _classify_band(cut)
        return band == CAUSAL and bool(allowed_from_additive(cut).diagonal(dim1=-2, dim2=-1).all())

    return bool(mask_fact(mask, f"plain_causal:{n_keys}", compute))


def has_attention_bias(mask: torch.Tensor | None) -> bool:
    """Whether an additive (B, H_m, q, k) attention mask carries more than a pattern: one mask per head (H_m > 1), or
    finite non-zero entries on attended positions (ALiBi and other position biases added to the logits)."""
    if mask is None or mask.dtype == torch.bool:
        return False
    if mask.dim() == 4 and mask.shape[1] > 1:
        return True
    return bool(((mask != 0) & allowed_from_additive(mask)).any())


def check_no_attention_bias(mask: torch.Tensor | None, module: nn.Module) -> None:
    """Raise when the attention mask ``module`` receives carries an additive bias (:func:`has_attention_bias`): HEAT's
    gate M, prefix cache and kernels rebuild each layer's mask from its allowed pattern (0 / -inf) alone. Only the
    first example of a batch is read (every row of a batch's mask is built by the same model code), so the check
    costs O(n²) per call, not O(B·n²)."""
    if mask is None or not mask_fact(mask, "bias_first", lambda: has_attention_bias(mask[:1])):
        return
    config = getattr(module, "config", None)
    model_type = getattr(config, "model_type", None) or type(module).__name__
    raise NotImplementedError(
        f"Expected attention masks of 0 (attend) and -inf (masked) shared by all heads, got a {model_type!r} model "
        f"({type(module).__name__}, mask of shape {tuple(mask.shape)}) that uses an additive attention bias (ALiBi, "
        "or another per-head or position bias carried in the mask), which HEAT does not support: its gate M, "
        "prefix cache and kernels rebuild the mask from the allowed positions only and would drop the bias"
    )


def mask_band(mask: torch.Tensor | None) -> MaskBand:
    """Classify a captured (B, 1, n, n) additive mask: causal, sliding window w, chunks of c, or other.

    The keys' padding is read from the diagonal (a real token attends itself); only the rows of real query tokens
    are compared. The window / chunk size is the largest number of keys a query row attends. A mask with an additive
    bias (per head, or finite non-zero entries: :func:`has_attention_bias`) is ``"other"``: its pattern alone is not
    what the layer applies. Answered once per mask object (:func:`mask_fact`).
    """
    if mask is None:
        return CAUSAL
    return mask_fact(mask, "band", lambda: _classify_band(mask))


def _classify_band(mask: torch.Tensor) -> MaskBand:
    """:func:`mask_band` of a (B, 1, n, n) mask, computed."""
    B, _, q, k = mask.shape
    if q != k or has_attention_bias(mask):
        return MaskBand("other")
    allowed = allowed_from_additive(mask)[:, 0]  # (B, n, n)
    valid = allowed.diagonal(dim1=-2, dim2=-1)  # (B, n)
    rows = valid[:, :, None]
    if not valid.any():
        return CAUSAL

    def same(candidate: torch.Tensor) -> bool:
        return bool(((candidate[:, 0] == allowed) | ~rows).all())

    if same(allowed_mask(q, valid, batch=B, device=mask.device)):
        return CAUSAL
    size = int((allowed & rows).sum(-1).max())
    if same(allowed_mask(q, valid, window=size, batch=B, device=mask.device)):
        return MaskBand("window", window=size)
    if same(allowed_mask(q, valid, chunk=size, batch=B, device=mask.device)):
        return MaskBand("chunk", chunk=size)
    return MaskBand("other")
