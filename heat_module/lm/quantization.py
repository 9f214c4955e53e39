"""Quantised weights: which ones every method can use, and a clear refusal for the others.

GGUF checkpoints (SmolLM2 itself, :func:`heat_module.lm.loading.load_model`) are dequantised by transformers on load:
the model holds ordinary floating weights and every method treats it as any fp32/bf16/fp16 model.

bitsandbytes 4-bit / 8-bit layers (``Linear4bit``, ``Linear8bitLt``, from transformers' ``BitsAndBytesConfig``) are
refused before anything runs, because their gradients are silently wrong. Measured with bitsandbytes 0.50.2's CPU
backend on SmolLM2 (one 5-token prompt) against the same dequantised weights in an fp32 model: in 4-bit, the scores
of every gradient method (``"fast"``, exact S, AttnLRP, gradient norm, integrated gradients) were off by a max
relative error of ≈ 1 (torch warns that ``bitsandbytes::gemv_4bit``, the one-token matmul, has no autograd kernel),
the default M·I by 5 %; in 8-bit, ∇_X log P and its HVPs were 27–53 % off (relative L2 norm).
Only attention rollout and occlusion agreed. Load such a model unquantised instead (``dtype=torch.bfloat16`` halves
fp32's memory; ``device_map`` offloads what does not fit).
"""

from __future__ import annotations

from torch import nn

#: bitsandbytes layer classes (matched by name, so bitsandbytes need not be installed to recognise them)
BITSANDBYTES_LAYERS: tuple[str, ...] = ("Linear4bit", "LinearFP4", "LinearNF4", "Linear8bitLt")
_BITSANDBYTES_PARAMS: tuple[str, ...] = ("Params4bit", "Int8Params")


def bitsandbytes_modules(model: nn.Module) -> list[tuple[str, str]]:
    """``(name, class name)`` of every bitsandbytes-quantised module of ``model`` (by layer or parameter class)."""
    found = []
    for name, module in model.named_modules():
        kind = type(module).__name__
        params = {type(p).__name__ for p in module.parameters(recurse=False)}
        if kind in BITSANDBYTES_LAYERS or params & set(_BITSANDBYTES_PARAMS):
            found.append((name, kind))
    return found


def check_not_bitsandbytes(model: nn.Module, method: str = "this method") -> None:
    """Raise a ValueError naming the bitsandbytes-quantised layers of ``model``, if it has any."""
    found = bitsandbytes_modules(model)
    if found:
        name, kind = found[0]
        raise ValueError(
            f"Expected a model with floating-point weights for {method}, got {len(found)} bitsandbytes-quantised "
            f"layers (e.g. {name!r}: {kind}); their 4-bit/8-bit matmuls give wrong gradients (no autograd kernel "
            "for the 4-bit one-token matmul; 8-bit gradients 27-53 % off the dequantised model's). Load it without "
            "quantization_config: dtype=torch.bfloat16 halves the memory, device_map='auto' offloads the rest"
        )
