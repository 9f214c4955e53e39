"""Blockwise first-order attention against plain softmax attention written here (no HEAT capture code)."""

import pytest
import torch

from heat_module.lm.blockwise_attention import active_tiles, blockwise_attention

N, BLOCK = 13, 4


def additive(allowed: torch.Tensor, dtype=torch.float64) -> torch.Tensor:
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


def band(n: int, window: int | None = None, pad: int = 0, batch: int = 1) -> torch.Tensor:
    """(batch, 1, n, n) bool: causal, within ``window``, and the last batch element left-padded by ``pad``."""
    i = torch.arange(n)
    allowed = i[None, :] <= i[:, None]
    if window is not None:
        allowed = allowed & (i[:, None] - i[None, :] < window)
    allowed = allowed[None, None].expand(batch, 1, n, n).clone()
    allowed[-1, :, :, :pad] = False
    return allowed


def reference(q, k, v, mask, scaling):
    """(B, n, H, d_v) softmax(q kᵀ·scaling + mask) v with kv heads repeated, in q's dtype."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    probs = torch.softmax(q @ k.transpose(-1, -2) * scaling + mask, -1)
    return (probs @ v).transpose(1, 2)


def operands(batch=1, heads=6, kv_heads=2, n=N, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, n, 8, generator=g, dtype=dtype).requires_grad_(True)
    k = torch.randn(batch, kv_heads, n, 8, generator=g, dtype=dtype).requires_grad_(True)
    v = torch.randn(batch, kv_heads, n, 5, generator=g, dtype=dtype).requires_grad_(True)
    return q, k, v


CASES = {
    "causal": dict(),
    "sliding_window": dict(window=5),
    "left_padding": dict(pad=3, batch=2),  # padded rows attend nothing: softmax over the whole masked row
    "window_and_padding": dict(window=3, pad=6, batch=2),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kv_heads", [1, 2, 6])
def test_values_and_batched_gradients_equal_plain_attention(case, kv_heads):
    """Output and the gradients of a batch of 3 cotangents (one ``is_grads_batched`` backward, as the Fisher
    gradients take it) equal plain attention's in fp64, with tiles of 4 over 13 positions (partial last tile)."""
    allowed = band(N, **CASES[case])
    q, k, v = operands(batch=allowed.shape[0], kv_heads=kv_heads)
    mask = additive(allowed)
    ref = reference(q, k, v, mask, 0.3)
    got = blockwise_attention(q, k, v, mask, 0.3, block=BLOCK)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    cot = torch.randn(3, *ref.shape, dtype=ref.dtype, generator=torch.Generator().manual_seed(1))
    want = torch.autograd.grad(ref, (q, k, v), cot, is_grads_batched=True)
    have = torch.autograd.grad(got, (q, k, v), cot, is_grads_batched=True)
    for name, a, b in zip("qkv", have, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"gradient w.r.t. {name}")


def test_gradients_without_mask_and_a_longer_key_range():
    """No mask (everything attended) and a query block over a longer key range (a frozen prefix of 5 keys)."""
    q, k, v = operands(n=N)
    q2 = q[:, :, 5:].detach().requires_grad_(True)
    ref = reference(q2, k, v, torch.zeros(()), 0.5)
    got = blockwise_attention(q2, k, v, None, 0.5, block=BLOCK)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    cot = torch.randn(2, *ref.shape, dtype=ref.dtype)
    for a, b in zip(torch.autograd.grad(got, (q2, k, v), cot, is_grads_batched=True),
                    torch.autograd.grad(ref, (q2, k, v), cot, is_grads_batched=True)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_bf16_inputs_compute_in_fp32():
    """bf16 q, k, v: the output is bf16 and within bf16 rounding of fp32 attention of the same (rounded) inputs."""
    q, k, v = (t.detach().bfloat16() for t in operands())
    mask = additive(band(N), torch.float32)
    got = blockwise_attention(q, k, v, mask, 0.3, block=BLOCK)
    assert got.dtype == torch.bfloat16
    ref = reference(q.float(), k.float(), v.float(), mask, 0.3)
    torch.testing.assert_close(got.float(), ref, rtol=1e-2, atol=1e-2)


def test_fully_masked_tiles_are_skipped():
    """Causal: a query block sees its own and earlier key blocks; a window of 3 only the band around the diagonal;
    a block with a row that attends nothing (padding) keeps every key block."""
    assert active_tiles(additive(band(12)), 12, 12, 4) == [[0], [0, 1], [0, 1, 2]]
    assert active_tiles(additive(band(12, window=3)), 12, 12, 4) == [[0], [0, 1], [1, 2]]
    assert active_tiles(additive(band(12, pad=5)), 12, 12, 4) == [[0, 1, 2], [0, 1, 2], [1, 2]]  # rows 0-4 padding
    assert active_tiles(None, 5, 9, 4) == [[0, 1, 2], [0, 1, 2]]
    with pytest.raises(ValueError, match="Expected a mask of shape"):
        active_tiles(additive(band(12)), 12, 13, 4)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kv_heads", [1, 2, 6])
def test_first_order_attention_equals_plain_attention_on_either_path(case, kv_heads, monkeypatch):
    """The dispatcher: a plain causal mask goes to SDPA's causal kernel (no mask read), every other mask blockwise;
    values and the batched gradients of 3 cotangents equal plain attention's in fp64 either way."""
    from heat_module.lm import blockwise_attention as module

    calls = []
    causal = module.causal_attention
    monkeypatch.setattr(module, "causal_attention", lambda *a: calls.append(1) or causal(*a))
    allowed = band(N, **CASES[case])
    q, k, v = operands(batch=allowed.shape[0], kv_heads=kv_heads)
    mask = additive(allowed)
    got = module.first_order_attention(q, k, v, mask, 0.3)
    assert bool(calls) == (case == "causal")
    ref = reference(q, k, v, mask, 0.3)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    cot = torch.randn(3, *ref.shape, generator=torch.Generator().manual_seed(1), dtype=ref.dtype)
    want = torch.autograd.grad(ref, (q, k, v), cot, is_grads_batched=True)
    have = torch.autograd.grad(got, (q, k, v), cot, is_grads_batched=True)
    for a, b in zip(have, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_causal_kernel_computes_in_fp32_for_half_precision():
    """bf16 operands: the causal kernel runs in fp32 (as the blockwise form does) and returns bf16 — equal to fp32
    attention rounded once, not to attention computed in bf16."""
    from heat_module.lm.blockwise_attention import first_order_attention

    q, k, v = (t.detach().to(torch.bfloat16) for t in operands(n=64, kv_heads=2))
    mask = additive(band(64), torch.float32)
    got = first_order_attention(q, k, v, mask, 0.3)
    want = reference(q.float(), k.float(), v.float(), mask, 0.3).to(torch.bfloat16)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=0)
