"""W_O — the output projection of an attention module, as a dense floating matrix (docs/design.md "M").

The gate M weighs each head's value vectors by ‖v^{l,h}_i W_O^{l,h}‖₁ (Kobayashi et al., 2020), so it needs W_O as
(H·d_v, d) with the VALUE head size d_v — which differs from the query/key head size in multi-head latent attention
(DeepSeek-V2/V3: d_qk = qk_nope_head_dim + qk_rope_head_dim, d_v = v_head_dim), so the caller passes d_v from the
captured values (``value.shape[-1]``).

Handled layouts:

- ``nn.Linear`` (weight (d, H·d_v)): transposed;
- GPT-2's ``Conv1D`` (weight already (H·d_v, d));
- bitsandbytes ``Linear8bitLt`` (``Int8Params``: int8 weight (d, H·d_v) with per-row absmax scales ``SCB`` on the
  weight or in ``module.state``): W = int8 · SCB / 127, the LLM.int8() vector-wise dequantisation;
- bitsandbytes ``Linear4bit`` (``Params4bit`` with a ``quant_state``): ``bitsandbytes.functional.dequantize_4bit``;
- any other module whose weight is not a floating tensor but which exposes ``dequantize()`` (returning the dense
  (d, H·d_v) weight).

Anything else with a non-floating weight is refused with a clear error: reading quantised integers as if they were
weights would give silently wrong norms.
"""

from __future__ import annotations

import torch
from torch import nn

from heat_module.lm.architectures import PROJECTION_NAMES


def find_output_projection(module: nn.Module) -> nn.Module:
    """The output-projection submodule of an attention module (``o_proj``, ``out_proj``, ``dense``, ...)."""
    for attr in PROJECTION_NAMES:
        proj = getattr(module, attr, None)
        if isinstance(proj, nn.Module) and getattr(proj, "weight", None) is not None:
            return proj
    raise TypeError(
        f"Expected the attention module {type(module).__name__} to have an output projection named one of "
        f"{'/'.join(PROJECTION_NAMES)}, got none"
    )


def _int8_scales(proj: nn.Module, weight: torch.Tensor) -> torch.Tensor | None:
    scb = getattr(weight, "SCB", None)
    if scb is None:
        scb = getattr(getattr(proj, "state", None), "SCB", None)
    return scb


def dense_weight(proj: nn.Module) -> torch.Tensor:
    """The (out, in) floating weight of a linear-like module (``nn.Linear`` layout), dequantised if needed.

    GPT-2's ``Conv1D`` is returned transposed to that layout too.
    """
    weight = proj.weight
    kind = type(weight).__name__
    if type(proj).__name__ == "Conv1D":
        return weight.t()
    if kind == "Params4bit":
        import bitsandbytes.functional as bnbf  # installed whenever a Params4bit weight exists

        return bnbf.dequantize_4bit(weight.data, weight.quant_state)
    if torch.is_floating_point(weight):
        return weight
    scb = _int8_scales(proj, weight)
    if weight.dtype == torch.int8 and scb is not None:  # LLM.int8(): row r of W = CB[r] · SCB[r] / 127
        if scb.numel() != weight.shape[0]:
            raise ValueError(f"Expected {weight.shape[0]} int8 row scales (SCB), got {scb.numel()}")
        return weight.float() * (scb.float().view(-1, 1) / 127.0)
    if callable(getattr(proj, "dequantize", None)):
        return proj.dequantize()
    raise TypeError(
        f"Expected a floating-point or dequantisable output projection, got {type(proj).__name__} with a "
        f"{weight.dtype} weight of class {kind} (no SCB scales, no quant_state, no dequantize()); HEAT cannot read "
        "W_O from it — load the model unquantised or dequantise the attention output projections"
    )


def output_projection(module: nn.Module, value_head_dim: int | None = None) -> torch.Tensor:
    """(H·d_v, d) W_O of an attention module, as ``attn_out @ W_O``, dense and floating (dequantised if needed).

    Args:
        module: the attention module (the ``module`` of a :class:`heat_module.lm.capture.LayerCapture`).
        value_head_dim: d_v, the value head size (``capture.value.shape[-1]``); when given, the input size of W_O
            must be a multiple of it.
    Returns:
        (H·d_v, d) floating W_O (fp32 for a quantised projection, else the weight's dtype).
    """
    w_o = dense_weight(find_output_projection(module)).t()
    if value_head_dim is not None and (value_head_dim < 1 or w_o.shape[0] % value_head_dim):
        raise ValueError(
            f"Expected the output projection's input size to be a multiple of the value head size {value_head_dim}, "
            f"got {w_o.shape[0]} (W_O {tuple(w_o.shape)})"
        )
    return w_o
