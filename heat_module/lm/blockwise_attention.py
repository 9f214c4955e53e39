"""Attention for first derivatives: memory linear in n, and one backward for a batch of cotangents.

The Fisher gradients u_y = ∇_X log P_y (K of them, one batched backward: ``torch.autograd.grad`` with
``is_grads_batched``) and the gradient of HEAT+FO need first derivatives only. Eager attention keeps the
(B, H, n, n) probabilities of every layer for the backward; torch's SDPA keeps none, but its CPU backward has no
batching rule, so the K cotangents run through every layer's attention one by one. :class:`BlockwiseAttention` is
plain attention (FlashAttention's algorithm, Dao et al. 2022, written in ``torch.bmm`` and elementwise ops):

- forward in blocks of query rows; it keeps q, k, v, the output and per row the max logit and the log of the
  softmax denominator (all O(n));
- backward in (query block × key block) tiles: each tile's probabilities P = exp(S − max − log Σ) are recomputed
  from q and k
  (they do not depend on the cotangent, so under a batched backward they are computed once for all K cotangents),
  then dV += Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − rowsum(dO ∘ O)), dQ += dS K·scale, dK += dSᵀ Q·scale — every op has
  a batching rule of torch's batched gradients, so the K cotangents go through each tile together;
- tiles whose mask is entirely masked are skipped (half of them under a causal mask, all but a band under a sliding
  window): they contribute exactly zero (exp of a masked logit underflows to 0 in eager attention too). A block
  with a row that attends nothing (padding) keeps every key, as eager attention's softmax over the masked row does.

Scores and softmax run in fp32 (fp64 for fp64 inputs) like :func:`heat_module.lm.capture.eager_attention`; the
result equals it up to the summation order. Peak extra memory: one tile per (batched) backward step,
K × H × :data:`BLOCK`² elements, independent of n.

Where the mask is plain causal (:func:`heat_module.lm.anatomy.is_plain_causal`: no padding, window, chunk or bias —
the usual single prompt), :func:`first_order_attention` runs SDPA's ``is_causal`` kernel instead
(:func:`causal_attention`, FlashAttention on the CPU too): it also keeps only O(n) for its backward (the output and
the log-sum-exp), skips the masked half in both directions, and under a batched backward torch runs the K
cotangents through its fused backward one after another. One SmolLM2 attention layer (9 query heads, 3 kv heads,
one CPU thread), forward / backward per cotangent of a batch of 10, in seconds: n = 2048 0.19 / 0.25 blockwise
against 0.09 / 0.21 causal SDPA; n = 8192 3.76 / 3.20 against 1.03 / 2.67. Other masks keep the blockwise form,
which skips their empty tiles.
"""

from __future__ import annotations

import torch

from heat_module.lm.anatomy import allowed_from_additive, is_plain_causal

#: rows and columns of one tile (query block × key block)
BLOCK = 128
#: run plain causal masks on SDPA's causal kernel (:func:`first_order_attention`); ``False`` keeps every mask
#: blockwise (the tests of the blockwise form set it)
FUSED_CAUSAL = True


def active_tiles(mask: torch.Tensor | None, n: int, n_k: int, block: int) -> list[list[int]]:
    """Per query block, the key blocks whose tile the mask does not mask entirely.

    Args:
        mask: (B, 1, n, n_k) additive (0 attend, very negative masked) or bool, or ``None`` (attend everything).
    Returns:
        ``tiles[qb]`` = sorted key-block indices; a query block containing a row that attends nothing gets all.
    """
    n_qb, n_kb = -(-n // block), -(-n_k // block)
    if mask is None:
        return [list(range(n_kb)) for _ in range(n_qb)]
    if mask.dim() != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != (n, n_k):
        raise ValueError(f"Expected a mask of shape (B, 1, {n}, {n_k}), got {tuple(mask.shape)}")
    allowed = allowed_from_additive(mask).any(0)[0]  # (n, n_k): attended in any batch element
    empty_row = ~allowed_from_additive(mask).any(-1)[:, 0].all(0)  # (n,) a row of some batch element attends nothing
    padded = torch.zeros(n_qb * block, n_kb * block, dtype=torch.bool, device=mask.device)
    padded[:n, :n_k] = allowed
    any_tile = padded.view(n_qb, block, n_kb, block).any(3).any(1)  # (n_qb, n_kb)
    rows = torch.zeros(n_qb * block, dtype=torch.bool, device=mask.device)
    rows[:n] = empty_row
    any_tile |= rows.view(n_qb, block).any(1)[:, None]
    return [torch.nonzero(row).flatten().tolist() for row in any_tile.cpu()]


class BlockwiseAttention(torch.autograd.Function):
    """``apply(query (B, H, n, d_h), key (B, H_kv, n_k, d_h), value (B, H_kv, n_k, d_v), mask (B, 1, n, n_k) | None,
    scaling, block) -> (B, n, H, d_v)`` softmax(q kᵀ·scaling + mask) v, query head h reading kv head
    h // (H / H_kv); see the module docstring. First derivatives w.r.t. query, key and value (the mask gets none).

    Internally the H / H_kv query heads of a kv head are rows of one matrix, (B·H_kv, n·rep, ·) with row i·rep + r
    for position i and head r, so a query block is a contiguous slice and GQA needs no ``repeat_kv`` copy.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(query, key, value, mask, scaling, block):
        B, H, n, _ = query.shape
        rep = H // key.shape[1]
        q, k, v, _ = _operands(query, key, value, scaling)
        outs, stats = [], []
        for qb, kbs in enumerate(active_tiles(mask, n, key.shape[2], block)):
            i0, i1 = qb * block, min(n, (qb + 1) * block)
            j0, j1 = kbs[0] * block, min(key.shape[2], (kbs[-1] + 1) * block)
            s = _scores(q, k, mask, i0, i1, j0, j1, B, rep)  # (B·H_kv, rows, kr)
            row_max = s.amax(-1, keepdim=True)  # subtracted first, as softmax does (a fully masked row stays finite)
            p = torch.exp(s - row_max)
            total = p.sum(-1, keepdim=True)
            outs.append(torch.bmm(p, v[:, j0:j1]) / total)
            stats.append(torch.cat([row_max, total.log()], -1))
        out = _from_rows(torch.cat(outs, 1), B, n)
        return out.to(query.dtype), torch.cat(stats, 1)  # stats (B·H_kv, n·rep, 2)

    @staticmethod
    def setup_context(ctx, inputs, output):
        query, key, value, mask, scaling, block = inputs
        out, stats = output
        ctx.save_for_backward(query, key, value, mask, stats, out)
        ctx.scaling, ctx.block = scaling, block
        ctx.mark_non_differentiable(stats)

    @staticmethod
    def backward(ctx, grad_out, _grad_stats):
        query, key, value, mask, stats, out = ctx.saved_tensors
        scaling, block = ctx.scaling, ctx.block
        B, H, n, dh = query.shape
        Hkv, n_k, dv = key.shape[1], key.shape[2], value.shape[3]
        rep = H // Hkv
        q, k, v, dtype = _operands(query, key, value, scaling)
        ks = k * scaling
        g = _to_rows(grad_out.to(dtype), Hkv)  # (B·H_kv, n·rep, d_v), batched like the cotangents
        delta = (g * _to_rows(out.to(dtype), Hkv)).sum(-1, keepdim=True)  # rowsum(dO ∘ O)
        g_aug = torch.cat([g, -delta], -1)  # dO·Vᵀ − rowsum(dO ∘ O) as one product with [V, 1]
        v_aug = torch.cat([v, torch.ones_like(v[..., :1])], -1)
        n_kb = -(-n_k // block)
        dk: list[torch.Tensor | None] = [None] * n_kb
        dvs: list[torch.Tensor | None] = [None] * n_kb
        dq = []
        for qb, kbs in enumerate(active_tiles(mask, n, n_k, block)):
            i0, i1 = qb * block, min(n, (qb + 1) * block)
            r0, r1 = i0 * rep, i1 * rep
            qq, gg, ga = _rows(q, r0, r1), _rows(g, r0, r1), _rows(g_aug, r0, r1)
            max_b, log_sum_b = stats[:, r0:r1, :1], stats[:, r0:r1, 1:]
            dq_b = None
            for kb in kbs:
                j0, j1 = kb * block, min(n_k, (kb + 1) * block)
                s = _scores(q, k, mask, i0, i1, j0, j1, B, rep)
                p = torch.exp((s - max_b) - log_sum_b)  # the tile's probabilities, (B·H_kv, rows, bk)
                ds = p * torch.bmm(ga, v_aug[:, j0:j1].transpose(1, 2))
                dv_t = torch.bmm(p.transpose(1, 2), gg)
                dk_t = torch.bmm(ds.transpose(1, 2), qq)
                dq_t = torch.bmm(ds, ks[:, j0:j1])
                dvs[kb] = dv_t if dvs[kb] is None else dvs[kb] + dv_t
                dk[kb] = dk_t if dk[kb] is None else dk[kb] + dk_t
                dq_b = dq_t if dq_b is None else dq_b + dq_t
            dq.append(dq_b)
        zero = (delta * 0).sum((0, 1, 2), keepdim=True)  # batched like the cotangent: for key blocks no query attends
        width = [min(n_k, (kb + 1) * block) - kb * block for kb in range(n_kb)]
        d_key = torch.cat([zero.expand(B * Hkv, width[kb], dh) if t is None else t for kb, t in enumerate(dk)], 1)
        d_value = torch.cat([zero.expand(B * Hkv, width[kb], dv) if t is None else t for kb, t in enumerate(dvs)], 1)
        d_query = _from_rows(torch.cat(dq, 1), B, n).transpose(1, 2)  # (B, H, n, d_h)
        return (d_query.to(query.dtype), d_key.view(B, Hkv, n_k, dh).to(key.dtype),
                d_value.view(B, Hkv, n_k, dv).to(value.dtype), None, None, None)


def _operands(query, key, value, scaling):
    """q·scaling as rows (B·H_kv, n·rep, d_h), k (B·H_kv, n_k, d_h), v (B·H_kv, n_k, d_v), in the compute dtype
    (at least fp32)."""
    B, H, n, dh = query.shape
    Hkv = key.shape[1]
    dtype = torch.promote_types(query.dtype, torch.float32)
    q = _to_rows((query.to(dtype) * scaling).transpose(1, 2), Hkv)
    return q, key.to(dtype).reshape(B * Hkv, -1, dh), value.to(dtype).reshape(B * Hkv, -1, value.shape[3]), dtype


def _to_rows(x: torch.Tensor, Hkv: int) -> torch.Tensor:
    """(B, n, H, d) -> (B·H_kv, n·rep, d), row i·rep + r = position i, query head r of the kv head."""
    B, n, H, d = x.shape
    return x.reshape(B, n, Hkv, H // Hkv, d).permute(0, 2, 1, 3, 4).reshape(B * Hkv, n * (H // Hkv), d)


def _from_rows(x: torch.Tensor, B: int, n: int) -> torch.Tensor:
    """(B·H_kv, n·rep, d) -> (B, n, H, d), the inverse of :func:`_to_rows`."""
    Hkv, rep, d = x.shape[0] // B, x.shape[1] // n, x.shape[2]
    return x.reshape(B, Hkv, n, rep, d).permute(0, 2, 1, 3, 4).reshape(B, n, Hkv * rep, d)


def _rows(t: torch.Tensor, r0: int, r1: int) -> torch.Tensor:
    """Rows [r0, r1) (dim 1) of a tensor the batched backward may hand over: a slice over the whole dim is an alias,
    which the batched tensors of ``is_grads_batched`` cannot take."""
    return t if (r0, r1) == (0, t.shape[1]) else t[:, r0:r1]


def _scores(q, k, mask, i0, i1, j0, j1, B, rep):
    """(B·H_kv, (i1 − i0)·rep, j1 − j0) logits of one tile (query positions [i0, i1), keys [j0, j1)) plus the mask;
    q is already scaled."""
    s = torch.bmm(_rows(q, i0 * rep, i1 * rep), k[:, j0:j1].transpose(1, 2))
    if mask is None:
        return s
    m = mask[:, :, i0:i1, j0:j1]
    if m.dtype == torch.bool:
        m = torch.zeros((), dtype=s.dtype, device=s.device).masked_fill(~m, torch.finfo(s.dtype).min)
    s = s.view(B, -1, i1 - i0, rep, j1 - j0) + m.to(s.dtype)[:, :, :, None, :]
    return s.view(q.shape[0], (i1 - i0) * rep, j1 - j0)


def blockwise_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    block: int | None = None,
) -> torch.Tensor:
    """(B, n, H, d_v) attention output (the layout transformers' attention functions return) for first
    derivatives, in the query dtype.

    Args: query (B, H, n, d_h) post-RoPE, key (B, H_kv, n_k, d_h), value (B, H_kv, n_k, d_v) before ``repeat_kv``,
        mask (B, 1, n, n_k) additive or ``None``; block: tile size (default :data:`BLOCK`).
    """
    if query.shape[1] % key.shape[1]:
        raise ValueError(f"Expected query heads a multiple of kv heads, got {query.shape[1]} and {key.shape[1]}")
    if mask is not None:
        mask = mask[..., : key.shape[-2]]
    out, _ = BlockwiseAttention.apply(query, key, value, mask, float(scaling), int(block or BLOCK))
    return out


def causal_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """(B, n, H, d_v) softmax(q kᵀ·scaling + causal mask) v through SDPA's ``is_causal`` kernel, contiguous, in the
    query dtype: the attention of a plain causal mask without materialising it.

    Args: query (B, H, n, d_h), key (B, H_kv, n, d_h), value (B, H_kv, n, d_v) before ``repeat_kv`` (the kv heads are
        repeated for the kernel); dtype: compute in this dtype (``None``: the query's).
    """
    B, H, n, _ = query.shape
    if key.shape[2] != n:
        raise ValueError(f"Expected as many keys as queries for causal attention, got {key.shape[2]} and {n}")
    if H % key.shape[1]:
        raise ValueError(f"Expected query heads a multiple of kv heads, got {H} and {key.shape[1]}")
    dtype = dtype or query.dtype
    rep = H // key.shape[1]
    k, v = key.to(dtype), value.to(dtype)
    if rep > 1:
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    out = torch.nn.functional.scaled_dot_product_attention(query.to(dtype), k, v, is_causal=True, scale=scaling)
    return out.transpose(1, 2).contiguous().to(query.dtype)


def first_order_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    """(B, n, H, d_v) attention for first derivatives in the query dtype, scores and softmax in at least fp32: SDPA's
    causal kernel where the mask is plain causal (:func:`causal_attention`), otherwise :func:`blockwise_attention`.

    Args: as :func:`blockwise_attention`.
    """
    if FUSED_CAUSAL and is_plain_causal(mask, key.shape[2]):
        return causal_attention(query, key, value, scaling, torch.promote_types(query.dtype, torch.float32))
    return blockwise_attention(query, key, value, mask, scaling)
