"""FLOP counts of a forward: linear layers per token, attention per attended pair."""

import torch

from heat_module.lm.flops import attended_pairs, attention_flops, linear_flops_per_token
from tests.conftest import make_tiny


def test_attended_pairs_causal_and_windowed():
    assert attended_pairs(5) == 15
    assert attended_pairs(5, window=2) == 1 + 2 + 2 + 2 + 2
    assert attended_pairs(5, window=9) == 15


def test_linear_flops_count_every_linear_layer_but_the_output_embedding():
    model = make_tiny("llama")
    weights = sum(m.weight.numel() for name, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear) and name != "lm_head")
    assert linear_flops_per_token(model) == 2 * weights > 0
    gpt2 = make_tiny("gpt2")  # Conv1D projections
    assert linear_flops_per_token(gpt2) >= 2 * 12 * gpt2.config.n_embd ** 2 * gpt2.config.n_layer


def test_attention_flops_per_layer_and_window():
    """2·H·(d_h + d_v) per attended pair and layer; gemma3_sliding's sliding layers attend a window of 4."""
    model = make_tiny("llama")
    c = model.config
    per_pair = 2 * c.num_attention_heads * 2 * (c.hidden_size // c.num_attention_heads)
    assert attention_flops(model, 10) == c.num_hidden_layers * per_pair * 55
    sliding = make_tiny("gemma3_sliding")
    c = sliding.config
    per_pair = 2 * c.num_attention_heads * 2 * c.head_dim
    assert c.layer_types == ["sliding_attention", "full_attention"]
    assert attention_flops(sliding, 10) == per_pair * (attended_pairs(10, 4) + 55)
