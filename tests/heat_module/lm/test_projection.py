"""W_O as a dense (H·d_v, d) matrix: nn.Linear, GPT-2 Conv1D, int8 (LLM.int8() layout) and dequantize() modules,
refusal of what cannot be read; value–output norms on an MLA model (d_v ≠ d_qk) against the weights directly."""

import pytest
import torch
from torch import nn

from heat_module.heat.transition import value_output_norms
from heat_module.lm.capture import capture, install
from heat_module.lm.projection import dense_weight, output_projection
from heat_module.testing import TINY_VOCAB

pytestmark = pytest.mark.usefixtures("one_thread")


def attention_with(proj: nn.Module, name: str = "o_proj") -> nn.Module:
    attn = nn.Module()
    setattr(attn, name, proj)
    return attn


def test_linear_and_conv1d():
    from transformers.pytorch_utils import Conv1D

    lin = nn.Linear(12, 5, bias=False)
    torch.testing.assert_close(output_projection(attention_with(lin), 3), lin.weight.t())
    conv = Conv1D(5, 12)  # GPT-2: weight (in=12, out=5), y = x @ W + b
    w_o = output_projection(attention_with(conv, "c_proj"), 4)
    assert w_o.shape == (12, 5)
    x = torch.randn(2, 12)
    torch.testing.assert_close(x @ w_o, conv(x) - conv.bias)
    with pytest.raises(ValueError, match="multiple of the value head size 5, got 12"):
        output_projection(attention_with(lin), 5)


class FakeLinear8bitLt(nn.Module):
    """Mimics bitsandbytes' Linear8bitLt after quantisation: int8 weight (out, in) and per-row absmax scales SCB
    (on the weight, or in ``state`` as older releases keep them)."""

    def __init__(self, weight: torch.Tensor, scales_on_state: bool = False) -> None:
        super().__init__()
        scb = weight.abs().amax(1)
        cb = torch.round(weight * 127 / scb[:, None]).to(torch.int8)
        self.weight = nn.Parameter(cb, requires_grad=False)
        if scales_on_state:
            self.state = type("MatmulLtState", (), {"SCB": scb})()
        else:
            self.weight.SCB = scb


@pytest.mark.parametrize("scales_on_state", [False, True])
def test_int8_projection_is_dequantised(scales_on_state):
    w = torch.tensor([[0.5, -1.0, 0.25], [2.0, 0.0, -0.5]])  # (out=2, in=3); row absmax 1.0 and 2.0
    proj = FakeLinear8bitLt(w, scales_on_state)
    # by hand: row 0 = round([63.5, -127, 31.75]) = [64, -127, 32] (round half to even: 63.5 -> 64) · 1.0 / 127
    #          row 1 = [127, 0, -32] · 2.0 / 127 (-31.75 -> -32)
    expected = torch.tensor([[64.0, -127.0, 32.0], [127.0, 0.0, -32.0]]) * torch.tensor([[1.0], [2.0]]) / 127
    torch.testing.assert_close(dense_weight(proj), expected)
    w_o = output_projection(attention_with(proj), 1)
    assert w_o.dtype == torch.float32 and w_o.shape == (3, 2)
    torch.testing.assert_close(w_o, expected.t())
    torch.testing.assert_close(w_o, w.t(), atol=2.0 / 254, rtol=0)  # within half a quantisation step


class FakeQuantized(nn.Module):
    """A quantised projection of an unknown library: packed uint8 weight, ``dequantize()`` gives the dense one."""

    def __init__(self, dense: torch.Tensor) -> None:
        super().__init__()
        self.dense = dense
        self.weight = nn.Parameter(torch.zeros(dense.numel() // 2, 1, dtype=torch.uint8), requires_grad=False)

    def dequantize(self) -> torch.Tensor:
        return self.dense


def test_dequantize_method_is_used_and_raw_integers_are_refused():
    dense = torch.randn(4, 6)
    torch.testing.assert_close(output_projection(attention_with(FakeQuantized(dense)), 2), dense.t())
    raw = nn.Module()
    raw.weight = nn.Parameter(torch.zeros(4, 6, dtype=torch.int8), requires_grad=False)  # int8, no scales
    with pytest.raises(TypeError, match="Expected a floating-point or dequantisable output projection"):
        output_projection(attention_with(raw))
    with pytest.raises(TypeError, match="to have an output projection named one of"):
        output_projection(nn.Module())


def tiny_deepseek_v3():
    import transformers as tf

    cfg = tf.DeepseekV3Config(
        vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
        q_lora_rank=None, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=6,
        intermediate_size=64, moe_intermediate_size=16, n_routed_experts=4, num_experts_per_tok=2,
        first_k_dense_replace=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    model = tf.AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float64).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def test_mla_value_output_norms_equal_the_weights_directly():
    """DeepSeek-V3 MLA: d_qk = 8 + 4 = 12 but d_v = 6. N^{l,h}_i = ‖v^{l,h}_i W_O^{l,h}‖₁ with v computed here from
    the layer input and the kv projections, W_O^{l,h} = o_proj.weight[:, h·d_v:(h+1)·d_v]ᵀ."""
    model = install(tiny_deepseek_v3())
    ids = torch.randint(4, TINY_VOCAB, (2, 7), generator=torch.Generator().manual_seed(1))
    inputs = {}
    hooks = [layer.self_attn.register_forward_pre_hook(
        lambda mod, args, kwargs, i=i: inputs.__setitem__(i, kwargs["hidden_states"]), with_kwargs=True)
        for i, layer in enumerate(model.model.layers)]
    with torch.no_grad(), capture() as records:
        model(ids)
    for h in hooks:
        h.remove()
    assert len(records) == 2 and records[0].query.shape[-1] == 12 and records[0].value.shape[-1] == 6
    H, dqk_nope, dv, rank = 4, 8, 6, 16
    for i, layer in enumerate(model.model.layers):
        attn = layer.self_attn
        x = inputs[i]  # (B, n, d) the attention's input (after the input layernorm)
        latent = attn.kv_a_layernorm(x @ attn.kv_a_proj_with_mqa.weight.t()[:, :rank])
        kv = (latent @ attn.kv_b_proj.weight.t()).view(2, 7, H, dqk_nope + dv)
        v = kv[..., dqk_nope:]  # (B, n, H, d_v)
        expected = torch.stack([
            (v[:, :, h] @ attn.o_proj.weight[:, h * dv:(h + 1) * dv].t()).abs().sum(-1) for h in range(H)
        ], 1)  # (B, H, n)
        torch.testing.assert_close(value_output_norms(records[i]).double(), expected, rtol=1e-5, atol=1e-6)
