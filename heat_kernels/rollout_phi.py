"""rollout_phi: Φ[b,h,i] = Σ_j ρ[b,j]·softmax_i(scaling·q_j·k_iᵀ + mask) (DESIGN.md "M").

Φ^{l,h} = ρ^l A^{l,h} is the rollout mass that enters the prediction position through key i of head h: the
ρ-weighted column sums of the causal attention probabilities. The reference materialises the (B, H, n, n)
attention; the kernels never do:

- Triton (GPU; CPU only in the interpreter): pass 1 writes each query row's log-sum-exp with an online softmax
  over key tiles (flash-attention style); pass 2 gives each program a block of key columns i and loops over the
  query rows j ≥ i, accumulating ρ_j·exp(s_ji − lse_j). Each program owns its columns: no atomics.
- C++ (CPU, ``csrc/rollout_phi_cpu.cpp``): tiles of 64 query rows, one GEMM per tile against the keys it may see,
  exp(s − row max) in place, one GEMV with weights ρ_j / Σ_i exp(...) into Φ — one 64 × n fp32 tile per thread.
- CUDA (``csrc/rollout_phi_cuda.cu``): the same two passes as the Triton kernel in plain CUDA.

Precision: every path accumulates in fp32 and returns fp32 whatever the input dtype (fp32/fp16/bf16). On GPU
fp16/bf16 scores use the tensor cores with fp32 accumulation and fp32 scores use IEEE fp32 (no TF32). Padding:
``key_padding_mask`` (B, n) is True at real tokens; a query row that sees no real key (a left-padded row)
contributes 0, like the reference's ``nan_to_num``. The ops have no autograd formula (Φ is not differentiated).

File order: reference, Triton kernels, launcher, ``torch.library`` ops, dispatch.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch

from heat_kernels import _ext

Backend = Literal["auto", "torch", "cpp", "cuda", "triton"]

# ----------------------------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------------------------


def rollout_phi_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    rho: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    scaling: float | None = None,
) -> torch.Tensor:
    """Reference: materialises the (B, H, n, n) attention.

    Args:
        q: (B, H, n, d_h) post-RoPE queries.
        k: (B, H_kv, n, d_h) keys, H a multiple of H_kv.
        rho: (B, n) rollout weights of the query positions.
        key_padding_mask: (B, n) bool, True where the key is a real token (left padding is False).
        scaling: softmax scale, default d_h ** -0.5.
    Returns:
        (B, H, n) fp32 Φ.
    """
    B, H, n, d = q.shape
    Hkv = k.shape[1]
    if H % Hkv != 0:
        raise ValueError(f"Expected the number of query heads ({H}) to be a multiple of key heads, got {Hkv}")
    scaling = d**-0.5 if scaling is None else scaling
    kk = k.float().repeat_interleave(H // Hkv, dim=1)
    scores = torch.matmul(q.float(), kk.transpose(-1, -2)) * scaling
    allowed = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    allowed = allowed.view(1, 1, n, n)
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask.bool().view(B, 1, 1, n)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return torch.einsum("bj,bhji->bhi", rho.float(), probs)


# ----------------------------------------------------------------------------------------------------------------
# Triton kernels (defined lazily: triton is optional, and TRITON_INTERPRET is read when the kernels are defined)
# ----------------------------------------------------------------------------------------------------------------

_LOG2E = 1.4426950408889634


@functools.cache
def _triton_kernels(interpret: bool):
    """Define the Triton kernels; one set per interpreter mode (``interpret`` must match TRITON_INTERPRET)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _rollout_lse_kernel(
        Q, K, MASK, LSE,
        H, HKV, n, d, scale_log2,
        stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
        HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        # Program (query tile, b*H + h): log2-domain log-sum-exp of each query row over the keys it may see.
        # The last query tiles see the most keys: launch them first.
        pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
        bh = tl.program_id(1)
        b = bh // H
        hk = (bh % H) // (H // HKV)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        q_ptrs = Q + b * stride_qb + (bh % H) * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :]
        q = tl.load(q_ptrs, mask=(offs_m[:, None] < n) & (offs_d[None, :] < d), other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        hi = tl.minimum((pid_m + 1) * BLOCK_M, n)
        for start_n in range(0, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            kt_ptrs = K + b * stride_kb + hk * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None]
            kt = tl.load(kt_ptrs, mask=(offs_n[None, :] < n) & (offs_d[:, None] < d), other=0.0)
            if UPCAST:
                kt = kt.to(tl.float32)
            s = tl.dot(q, kt, input_precision=PRECISION) * scale_log2
            allowed = (offs_n[None, :] <= offs_m[:, None]) & (offs_m[:, None] < n)
            if HAS_MASK:
                key_real = tl.load(MASK + b * n + offs_n, mask=offs_n < n, other=0)
                allowed = allowed & (key_real[None, :] != 0)
            s = tl.where(allowed, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key yet: keep exp2 finite
            l_i = l_i * tl.exp2(m_i - m_safe) + tl.sum(tl.exp2(s - m_safe[:, None]), 1)
            m_i = m_new
        # +inf for a row that sees no key at all (left padding): exp2(s - lse) is then 0 in pass 2.
        lse = tl.where(l_i > 0, m_i + tl.log2(tl.where(l_i > 0, l_i, 1.0)), float("inf"))
        tl.store(LSE + bh * n + offs_m, lse, mask=offs_m < n)

    @triton.jit
    def _rollout_colsum_kernel(
        Q, K, MASK, RHO, LSE, OUT,
        H, HKV, n, d, scale_log2,
        stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
        HAS_MASK: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        # Program (key tile, b*H + h): Φ of its key columns i = Σ_{j ≥ i} ρ_j · exp2(s_ji − lse_j).
        pid_n = tl.program_id(0)
        bh = tl.program_id(1)
        b = bh // H
        hk = (bh % H) // (H // HKV)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        kt_ptrs = K + b * stride_kb + hk * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None]
        kt = tl.load(kt_ptrs, mask=(offs_n[None, :] < n) & (offs_d[:, None] < d), other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
        key_ok = offs_n < n
        if HAS_MASK:
            key_ok = key_ok & (tl.load(MASK + b * n + offs_n, mask=offs_n < n, other=0) != 0)
        acc = tl.zeros([BLOCK_N], tl.float32)
        for start_m in range(pid_n * BLOCK_N, n, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            q_ptrs = Q + b * stride_qb + (bh % H) * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :]
            q = tl.load(q_ptrs, mask=(offs_m[:, None] < n) & (offs_d[None, :] < d), other=0.0)
            if UPCAST:
                q = q.to(tl.float32)
            lse = tl.load(LSE + bh * n + offs_m, mask=offs_m < n, other=float("inf"))
            rho = tl.load(RHO + b * n + offs_m, mask=offs_m < n, other=0.0)
            s = tl.dot(q, kt, input_precision=PRECISION) * scale_log2
            allowed = (offs_n[None, :] <= offs_m[:, None]) & key_ok[None, :] & (offs_m[:, None] < n)
            p = tl.where(allowed, tl.exp2(s - lse[:, None]), 0.0)
            acc += tl.sum(p * rho[:, None], 0)
        tl.store(OUT + bh * n + offs_n, acc, mask=offs_n < n)

    tuned = (None, None)
    if not interpret:  # the interpreter runs one fixed configuration (no benchmarking there)
        configs = [
            triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn, w, s in [(64, 64, 4, 2), (128, 64, 8, 2), (64, 32, 4, 3), (128, 128, 8, 2)]
        ]
        tune = triton.autotune(configs=configs, key=["n", "BLOCK_D", "UPCAST", "PRECISION"])
        tuned = (tune(_rollout_lse_kernel), tune(_rollout_colsum_kernel))
    return _rollout_lse_kernel, _rollout_colsum_kernel, *tuned


# ----------------------------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------------------------


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _rollout_phi_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    rho: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    scaling: float,
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """Launch the two Triton passes. ``block_m``/``block_n`` fix the tiles (interpreter tests use small ones)."""
    interpret = _ext.triton_interpret()
    lse_kernel, colsum_kernel, lse_tuned, colsum_tuned = _triton_kernels(interpret)
    B, H, n, d = q.shape
    Hkv = k.shape[1]
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    rho32 = rho.float().contiguous()
    has_mask = key_padding_mask is not None
    mask = key_padding_mask.contiguous().view(torch.uint8) if has_mask else rho32  # dummy pointer when absent
    lse = torch.empty(B * H, n, device=q.device, dtype=torch.float32)
    out = torch.empty(B, H, n, device=q.device, dtype=torch.float32)
    if B * H == 0 or n == 0:
        return out.zero_()
    # fp32 operands (always in the interpreter, whose numpy dot has no bf16) use exact fp32 products ("ieee", not
    # TF32); fp16/bf16 operands go to the tensor cores with fp32 accumulation (the default precision setting).
    upcast = interpret or q.dtype == torch.float32
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2))
    args = (H, Hkv, n, d, scaling * _LOG2E, *strides)
    precision = "ieee" if upcast else "tf32"
    meta = dict(HAS_MASK=has_mask, UPCAST=upcast, PRECISION=precision, BLOCK_D=max(16, 1 << (d - 1).bit_length()))
    if lse_tuned is None or block_m is not None or block_n is not None:
        bm, bn = block_m or 64, block_n or 64
        lse_kernel[(_cdiv(n, bm), B * H)](q, k, mask, lse, *args, **meta, BLOCK_M=bm, BLOCK_N=bn)
        colsum_kernel[(_cdiv(n, bn), B * H)](q, k, mask, rho32, lse, out, *args, **meta, BLOCK_M=bm, BLOCK_N=bn)
    else:
        lse_tuned[lambda c: (_cdiv(n, c["BLOCK_M"]), B * H)](q, k, mask, lse, *args, **meta)
        colsum_tuned[lambda c: (_cdiv(n, c["BLOCK_N"]), B * H)](q, k, mask, rho32, lse, out, *args, **meta)
    return out


# ----------------------------------------------------------------------------------------------------------------
# torch.library ops: heat_kernels::rollout_phi (C++ CPU / CUDA kernels from heat_kernels._C) and
# heat_kernels::rollout_phi_triton (the Triton launcher). Both return fp32 (B, H, n).
# ----------------------------------------------------------------------------------------------------------------

_SCHEMA = "(Tensor q, Tensor k, Tensor rho, Tensor? key_padding_mask, float scaling) -> Tensor"
_lib = torch.library.Library("heat_kernels", "FRAGMENT")  # kept alive: dropping it would drop the definition
_lib.define("rollout_phi" + _SCHEMA)


@torch.library.register_fake("heat_kernels::rollout_phi")
def _rollout_phi_fake(q, k, rho, key_padding_mask, scaling):
    return q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("heat_kernels::rollout_phi_triton", mutates_args=(), schema=_SCHEMA)
def _rollout_phi_triton_op(q, k, rho, key_padding_mask, scaling):
    return _rollout_phi_triton(q, k, rho, key_padding_mask, scaling)


@_rollout_phi_triton_op.register_fake
def _rollout_phi_triton_fake(q, k, rho, key_padding_mask, scaling):
    return q.new_empty(q.shape[:3], dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------------------------


def _check_inputs(q: torch.Tensor, k: torch.Tensor, rho: torch.Tensor, key_padding_mask: torch.Tensor | None) -> None:
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"Expected q (B, H, n, d_h) and k (B, H_kv, n, d_h), got {tuple(q.shape)}, {tuple(k.shape)}")
    B, H, n, d = q.shape
    if k.shape[0] != B or k.shape[2:] != (n, d) or k.shape[1] == 0 or H % k.shape[1] != 0:
        raise ValueError(f"Expected k of shape ({B}, H_kv, {n}, {d}) with H_kv dividing {H}, got {tuple(k.shape)}")
    if rho.shape != (B, n):
        raise ValueError(f"Expected rho of shape ({B}, {n}), got {tuple(rho.shape)}")
    if key_padding_mask is not None and key_padding_mask.shape != (B, n):
        raise ValueError(f"Expected key_padding_mask of shape ({B}, {n}), got {tuple(key_padding_mask.shape)}")
    if not (q.dtype.is_floating_point and k.dtype == q.dtype and rho.dtype.is_floating_point):
        raise ValueError(
            f"Expected floating q, k of one dtype and a floating rho, got {q.dtype}, {k.dtype}, {rho.dtype}"
        )


def rollout_phi(
    q: torch.Tensor,
    k: torch.Tensor,
    rho: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    scaling: float | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Φ[b,h,i] = Σ_j ρ[b,j]·A[b,h,j,i], A the causal (and key-padded) attention probabilities, never materialised.

    Args:
        q: (batch, heads, n, d_head) post-RoPE queries, fp32/fp16/bf16.
        k: (batch, kv_heads, n, d_head) keys, same dtype; heads a multiple of kv_heads (GQA/MQA: query head h
            reads kv head h // (heads / kv_heads)).
        rho: (batch, n) rollout weights of the query positions.
        key_padding_mask: (batch, n) bool, True at real tokens (left padding False); rows that see no real key
            contribute 0.
        scaling: softmax scale, default d_head ** -0.5.
        backend: ``"auto"`` (CUDA → Triton, CPU → C++ op if built else reference), ``"torch"`` (reference),
            ``"cpp"`` (C++ op, CPU), ``"cuda"`` (CUDA op), ``"triton"`` (CUDA, or CPU with TRITON_INTERPRET=1).
    Returns:
        (batch, heads, n) fp32 Φ.
    """
    _check_inputs(q, k, rho, key_padding_mask)
    scaling = q.shape[-1] ** -0.5 if scaling is None else float(scaling)
    if not math.isfinite(scaling):
        raise ValueError(f"Expected a finite scaling, got {scaling}")
    if key_padding_mask is not None and key_padding_mask.dtype != torch.bool:
        key_padding_mask = key_padding_mask.bool()
    resolved = _ext.resolve_backend("rollout_phi", backend, q.device.type)
    if resolved == "torch":
        return rollout_phi_ref(q, k, rho, key_padding_mask, scaling)
    if resolved == "triton":
        return torch.ops.heat_kernels.rollout_phi_triton(q, k, rho, key_padding_mask, scaling)
    _ext.load()  # registers the C++/CUDA kernels of heat_kernels::rollout_phi
    return torch.ops.heat_kernels.rollout_phi(q, k, rho, key_padding_mask, scaling)
