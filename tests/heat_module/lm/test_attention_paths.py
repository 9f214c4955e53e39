"""HEAT's own attention (the eager, differentiable path): fp32 scores for half-precision models, sinks."""

import pytest
import torch

from heat_module.lm.capture import eager_attention

pytestmark = pytest.mark.usefixtures("one_thread")


def test_eager_scores_in_fp32_for_bf16():
    gen = torch.Generator().manual_seed(0)
    q = (torch.randn(1, 2, 6, 16, generator=gen) * 8).bfloat16()
    k = (torch.randn(1, 2, 6, 16, generator=gen) * 8).bfloat16()
    v = torch.randn(1, 2, 6, 16, generator=gen).bfloat16()
    _, probs = eager_attention(q, k, v, None, 1.0)
    expected = torch.softmax(q.float() @ k.float().transpose(-1, -2), -1)  # scores of |s| ~ 250: bf16 would round
    torch.testing.assert_close(probs.float(), expected, rtol=4e-3, atol=1e-5)  # bf16 rounding of P only


def test_eager_sinks_match_gpt_oss():
    from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 5, 8, generator=gen, dtype=torch.float64)
    k, v = (torch.randn(2, 2, 5, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    mask = torch.zeros(2, 1, 5, 5, dtype=torch.float64).masked_fill(torch.ones(5, 5).triu(1).bool(), -1e300)
    sinks = torch.randn(4, generator=gen, dtype=torch.float64)
    module = torch.nn.Module()
    module.sinks, module.num_key_value_groups = torch.nn.Parameter(sinks), 2
    out, probs = eager_attention(q, k, v, mask, 0.3, sinks=sinks)
    ref_out, ref_probs = eager_attention_forward(module.eval(), q, k, v, mask, 0.3)
    torch.testing.assert_close(probs, ref_probs.detach())
    torch.testing.assert_close(out, ref_out.detach())
    assert float(probs.sum(-1).max()) < 1  # the sink takes mass
