"""AttnLRP's blockwise attention (memory linear in n) against its materialised form (the n × n probabilities kept for
autograd): the same relevance and absorbed softmax relevance in fp64 on SmolLM2 and on tiny models with GQA, sliding
windows and soft-capping, with blocks that do not divide n; and no layers × heads × n² tensor kept for the
backward."""

from __future__ import annotations

import copy

import pytest
import torch

from heat_module.baselines import get_method
from heat_module.baselines.attnlrp import attention_block_rows, attnlrp_rules
from heat_module.lm.forward import next_token_logits
from heat_module.testing import tiny_model


def relevance(model, ids, attention, block_size=None, mask=None):
    """(x·∂̃logit_7/∂x summed over d (B, n) in the model's precision, absorbed softmax relevance (B,), logit (B,)) of
    AttnLRP with the given attention form on a (B, n) batch."""
    mask = torch.ones_like(ids) if mask is None else mask
    with attnlrp_rules(model, attention, block_size) as absorbed, torch.enable_grad():
        x = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logit = next_token_logits(model, x, mask)[:, 7]
        (grad,) = torch.autograd.grad(logit.sum(), x)
    return (x * grad).sum(-1).detach(), torch.stack(absorbed).sum(0), logit.detach()


def assert_same(model, ids, block_size, mask=None):
    ref, ref_bias, ref_logit = relevance(model, ids, "materialized", mask=mask)
    got, got_bias, got_logit = relevance(model, ids, "blockwise", block_size, mask=mask)
    assert ref.dtype == torch.float64
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_bias, ref_bias, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_logit, ref_logit, rtol=1e-12, atol=1e-12)
    assert float(ref.abs().max()) > 1e-3 and float(ref_bias.abs().max()) > 1e-6  # not vacuous


IDS = torch.tensor([[5, 17, 33, 8, 61, 12, 40, 9, 22, 14, 50]])


@pytest.mark.parametrize("arch", ["llama", "mistral", "gemma2", "gemma3_sliding", "phi3"])
@pytest.mark.parametrize("block_size", [1, 3, None])
def test_blockwise_equals_materialized_on_tiny_models(arch, block_size):
    """GQA (2 kv heads for 4 query heads), gemma2's logit soft-cap and sliding window (4 < n = 11) on alternate
    layers, gemma3's sliding layers; blocks of 1 and 3 rows (3 does not divide 11) and the automatic size."""
    model = tiny_model(arch, seed=2).double()
    assert_same(model, IDS, block_size)


def test_blockwise_equals_materialized_with_left_padding():
    model = tiny_model("gemma2", seed=3).double()
    ids = torch.cat([IDS, IDS.flip(-1)])
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    assert_same(model, ids, 2, mask)


def test_blockwise_equals_materialized_on_smollm2(smollm2):
    model, tok = smollm2
    model = copy.deepcopy(model).double()
    ids = tok("The quick brown fox jumps over the lazy dog because the dog was asleep in the warm afternoon sun, "
              "and the fox", return_tensors="pt")["input_ids"]
    assert ids.shape[1] > 20
    assert_same(model, ids, 7)


def saved_square_tensors(model, ids, attention) -> list[tuple[int, ...]]:
    """Shapes of the tensors autograd keeps for AttnLRP's backward that have (heads, n, n) trailing dims."""
    n, heads = ids.shape[1], model.config.num_attention_heads
    shapes: list[tuple[int, ...]] = []

    def pack(t):
        if t.dim() >= 3 and tuple(t.shape[-3:]) == (heads, n, n):
            shapes.append(tuple(t.shape))
        return t

    with attnlrp_rules(model, attention) as _, torch.enable_grad():
        x = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            logits = next_token_logits(model, x, torch.ones_like(ids))
        torch.autograd.grad(logits[0, 7], x)
    return shapes


def test_blockwise_keeps_no_heads_by_n_by_n_tensor():
    """The materialised form keeps per-layer (B, H, n, n) probabilities and logits; the blockwise form keeps none
    (only q, k, v and the model's own (B, 1, n, n) mask, shared by the layers)."""
    model = tiny_model("llama", seed=0).double()
    assert len(saved_square_tensors(model, IDS, "materialized")) >= model.config.num_hidden_layers
    assert saved_square_tensors(model, IDS, "blockwise") == []


def test_block_rows_and_options_are_validated():
    assert attention_block_rows(1, 9, 8192) == 2**22 // (9 * 8192)
    assert attention_block_rows(4, 64, 2**20) == 1
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="attention"):
        get_method("attnlrp")(model, attention="flash")
    with pytest.raises(ValueError, match="block_size"):
        get_method("attnlrp")(model, block_size=0)
