"""HEAT-LS: curvature w.r.t. the residual stream entering decoder layer L-k (paper Table 9/12 "HEAT-LS";
docs/design.md "S", ``layers``).

Instead of X (the input embeddings) the variable is h^{L-k} ∈ R^{n×d}, the hidden states entering decoder layer
L-k, and g(h) = log softmax(logits_p)_y is computed through the last k decoder layers, the final norm and the LM
head only. S_i is eq. 3 over the token blocks of h: S_i = (1/m) Σ_k ‖(∇²_h g · Π_i r_k)_i‖₁.

Generic across architectures, without per-architecture forward code: :func:`residual_stream` is a context manager
under which ``model(inputs_embeds=Z, ...)`` means "Z is the residual stream entering layer ``start``":

- a forward pre-hook on the top-level model remembers the ``inputs_embeds`` it is called with;
- the decoder layers below ``start`` are replaced by a pass-through (their instance ``forward`` is overridden for the
  duration of the block), so they cost nothing;
- a forward pre-hook on layer ``start`` replaces whatever hidden states reach it (embeddings plus, for GPT-2, the
  learned position embeddings, through the skipped layers) with Z.

Everything the model computes from the positions and the attention mask (RoPE tables, causal/sliding masks) is
unchanged, and the ``"heat"`` attention (eager path, frozen prefix caches) works as usual — so every curvature
estimator written for "the model on ``inputs_embeds``" (exact block HVPs with prefix sharing, Fisher, low rank)
runs unchanged on h^{L-k}. With ``start = 0`` (k = L), h^0 is the residual stream entering layer 0: the embeddings
for Llama-style models, embeddings + position embeddings for GPT-2 (an additive constant, so ∂h^0/∂X = I and S is
identical to the exact S w.r.t. X).

The decoder layers are found as the ``nn.ModuleList`` with ``num_hidden_layers`` entries at the usual places
(``model.layers``, ``transformer.h``, ``gpt_neox.layers``, ...), else by searching the module tree
(:mod:`heat_module.lm.anatomy`). The captures of the layers at and above ``start`` are chosen by the decoder layer
that made them (``LayerCapture.decoder_layer``), not by their position in the list, so hybrids (whose
convolution / state-space layers make no attention call) are sliced right; prefix sharing is refused on them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from heat_module.lm.anatomy import decoder_layers, num_layers
from heat_module.lm.forward import next_token_logits

__all__ = ["check_start", "decoder_layers", "num_layers", "residual_input", "residual_stream", "start_layer"]

def _hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    raise TypeError("Expected a decoder layer to receive hidden_states (first positional argument), got neither")


def check_start(model: nn.Module, start: int) -> int:
    """Validate a layer index 0 <= start < L and return it."""
    L = num_layers(model)
    if not isinstance(start, int) or not 0 <= start < L:
        raise ValueError(f"Expected a layer index in [0, {L}), got {start!r}")
    return start


def start_layer(model: nn.Module, k: int) -> int:
    """L-k for HEAT-LS with the last ``k`` layers (1 <= k <= L)."""
    L = num_layers(model)
    if not isinstance(k, int) or not 1 <= k <= L:
        raise ValueError(f"Expected layers (the number of last layers HEAT-LS differentiates through) in [1, {L}], "
                         f"got {k!r}")
    return L - k


@contextlib.contextmanager
def residual_stream(model: nn.Module, start: int) -> Iterator[None]:
    """Inside the block, ``model(inputs_embeds=Z, ...)`` runs layers ``start``..L-1 (+ final norm + head) on Z.

    Z (B, s, d) is taken as the hidden states entering decoder layer ``start``; layers below are skipped.
    Works under ``torch.func`` transforms (vmap/jvp/grad): the hooks only route tensors.
    """
    layers = decoder_layers(model)
    check_start(model, start)
    state: dict[str, torch.Tensor] = {}

    def remember(module: nn.Module, args: tuple, kwargs: dict):
        z = kwargs.get("inputs_embeds")
        if z is None:
            raise ValueError("Expected the model to be called with inputs_embeds inside residual_stream(), got none")
        state["z"] = z

    def enter(module: nn.Module, args: tuple, kwargs: dict):
        if "z" not in state:
            raise RuntimeError("Expected the model's forward to run before its decoder layers, got a bare layer call")
        z = state["z"]
        if args:
            return (z,) + tuple(args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = z
        return args, kwargs

    def skip(*args, **kwargs):
        return _hidden_of(args, kwargs)

    handles = [model.register_forward_pre_hook(remember, with_kwargs=True),
               layers[start].register_forward_pre_hook(enter, with_kwargs=True)]
    skipped = list(layers)[:start]
    for layer in skipped:
        layer.forward = skip
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for layer in skipped:
            if "forward" in layer.__dict__:
                del layer.forward
        state.clear()


def residual_input(
    model: nn.Module,
    inputs_embeds: torch.Tensor,
    start: int,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, n, d) h^{start}: the hidden states entering decoder layer ``start`` for X = ``inputs_embeds``.

    One forward pass (no grad), read by a pre-hook on that layer.
    """
    layers = decoder_layers(model)
    check_start(model, start)
    seen: list[torch.Tensor] = []

    def record(module: nn.Module, args: tuple, kwargs: dict):
        seen.append(_hidden_of(args, kwargs).detach())

    handle = layers[start].register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            next_token_logits(model, inputs_embeds, attention_mask, position_ids)
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"Expected decoder layer {start} to run, got no call")
    return seen[0]
