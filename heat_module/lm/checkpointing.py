"""Activation checkpointing per decoder layer for first-derivative passes: memory linear in n with a small slope.

A backward through the model keeps every decoder layer's activations (norms, projections, MLP hidden states:
about 1 MB per token on SmolLM2, 9 GB at n = 8192). Under :func:`checkpointed_layers` each layer runs inside
``torch.utils.checkpoint`` (non-reentrant): the graph keeps only the layer's inputs, and the backward recomputes
the layer's forward when it reaches it — one more forward pass per backward call, the same values (the recomputed
forward runs the same first-order attention, :func:`heat_module.lm.capture.first_order_attention_mode`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from heat_module.lm.anatomy import decoder_layers
from heat_module.lm.capture import first_order_attention_mode


def _first_order(forward):
    def run(*args, **kwargs):
        with first_order_attention_mode():
            return forward(*args, **kwargs)

    def checkpointed(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return checkpoint(run, *args, use_reentrant=False, **kwargs)

    return checkpointed


@contextlib.contextmanager
def checkpointed_layers(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Inside the block, every decoder layer of ``model`` is checkpointed (first-order attention in its forward and
    in the recomputation); the layers are restored on exit. Only first derivatives may be taken through them."""
    if not enabled:
        yield
        return
    layers = list(decoder_layers(model))
    saved = [layer.__dict__.get("forward") for layer in layers]  # accelerate's hooks set an instance forward
    for layer in layers:
        layer.forward = _first_order(layer.forward)
    try:
        yield
    finally:
        for layer, forward in zip(layers, saved):
            if forward is None:
                del layer.forward
            else:
                layer.forward = forward
