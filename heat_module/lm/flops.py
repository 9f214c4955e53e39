"""Floating-point operations of one forward pass over n tokens: the linear layers (per token) and attention's
n² part (per attended query-key pair), read from the model's modules and config.

This is what the cost model (:mod:`heat_module.heat.cost`) needs to say how much of a forward at n is attention:
linear work grows like n, attention's scores and weighted values like the number of attended pairs (n(n + 1)/2
under a causal mask, about n·w under a sliding window of w).
"""

from __future__ import annotations

from torch import nn


def linear_flops_per_token(model: nn.Module) -> float:
    """2 × the weights of every linear layer except the output embedding (the logits are taken at one position).

    Counts ``nn.Linear`` and transformers' ``Conv1D`` (GPT-2); a mixture of experts counts every expert (an upper
    bound: a token runs only its top experts)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    total = 0
    for module in model.modules():
        if module is head:
            continue
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            total += module.weight.numel()
    return 2.0 * total


def attended_pairs(n: int, window: int | None = None) -> int:
    """Number of (query, key) pairs a causal mask over n positions attends: n(n + 1)/2, or Σ_i min(i + 1, w) under
    a sliding window of w."""
    if window is None or window >= n:
        return n * (n + 1) // 2
    return window * (window + 1) // 2 + (n - window) * window


def attention_flops(model: nn.Module, n: int) -> float:
    """FLOPs of attention's scores (q·k) and weighted values (p·v) over n tokens, all layers: 2·H·(d_h + d_v) per
    attended pair and layer; layers whose ``layer_types`` entry is ``"sliding_attention"`` attend a window."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads, hidden = int(config.num_attention_heads), int(config.hidden_size)  # GPT-2's n_head, n_embd map to these
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    v_dim = int(getattr(config, "v_head_dim", None) or head_dim)
    layers = int(config.num_hidden_layers)
    types = list(getattr(config, "layer_types", None) or ["full_attention"] * layers)
    window = getattr(config, "sliding_window", None)
    per_pair = 2.0 * heads * (head_dim + v_dim)
    total = 0.0
    for kind in types:
        if kind == "sliding_attention":
            total += per_pair * attended_pairs(n, window)
        elif "attention" in kind:
            total += per_pair * attended_pairs(n)
    return total
