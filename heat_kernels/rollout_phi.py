"""rollout_phi: Φ[b,h,i] = Σ_j ρ[b,j]·softmax_i(cap(scaling·q_j·k_iᵀ) + mask) (docs/design.md "M").

Φ^{l,h} = ρ^l A^{l,h} is the rollout mass that enters the prediction position through key i of head h: the
ρ-weighted column sums of the causal attention probabilities. The reference materialises the (B, H, n, n)
attention; the kernels never do.

Masks and scores, exactly as transformers' ``masking_utils`` builds them (``causal_mask_function``,
``sliding_window_overlay``, ``chunked_overlay``, ``padding_mask_function``; Gemma-2 soft-capping in the eager
attention). Query j may attend key i iff

- causal: i ≤ j;
- ``window`` (sliding window, Mistral / Gemma 2–3 / GPT-OSS): j − i < window, i.e. transformers'
  ``kv_idx > q_idx - sliding_window``. The indices are the positions in the (padded) sequence, left padding
  included, as transformers computes the window on cache positions. The window only depends on j − i, so for a
  left-padded row this is the same window as for the unpadded sequence; padding *between* real tokens counts
  toward the distance, as it does in transformers;
- ``chunk`` (Llama-4 chunked attention): (j − p_b) // chunk == (i − p_b) // chunk, p_b the number of left-padding
  positions of row b (transformers' ``chunked_overlay`` with ``left_padding_tokens``, the positions before the
  first real key), so that the chunks start at each sequence's first real token;
- key padding: key i is a real token.

``softcap`` (Gemma 2): scores = softcap·tanh(scaling·q·kᵀ / softcap), before the mask.

Kernels:

- Triton (GPU; CPU only in the interpreter): pass 1 writes each query row's log-sum-exp with an online softmax
  over key tiles (flash-attention style); pass 2 gives each program a block of key columns i and loops over the
  query rows j ≥ i, accumulating ρ_j·exp(s_ji − lse_j). Each program owns its columns: no atomics. With a window
  or chunks both loops only visit the key / query tiles inside the band.
- C++ (CPU, ``csrc/rollout_phi_cpu.cpp``): tiles of 64 query rows, one GEMM per tile against the keys it may see
  (the band of the tile's rows with a window / chunks),
  exp(s − row max) in place, one GEMV with weights ρ_j / Σ_i exp(...) into Φ — one 64 × n fp32 tile per thread.
- CUDA (``csrc/rollout_phi_cuda.cu``): the same two passes as the Triton kernel in plain CUDA.

Precision: every path accumulates in fp32 and returns fp32 whatever the input dtype (fp32/fp16/bf16). On GPU
fp16/bf16 scores use the tensor cores with fp32 accumulation and fp32 scores use IEEE fp32 (no TF32). Padding:
``key_padding_mask`` (B, n) is True at real tokens; a query row that sees no real key (a left-padded row, or a
row whose window / chunk holds only padding) contributes 0, like the reference's ``nan_to_num``. The ops have no
autograd formula (Φ is not differentiated).

File order: reference, Triton kernels, launcher, ``torch.library`` ops, dispatch.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch

from heat_kernels import extension

Backend = Literal["auto", "torch", "cpp", "cuda", "triton"]

# ----------------------------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------------------------


def left_padding(key_padding_mask: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
    """(B,) int64 number of positions before the first real key of each row (n for a row of padding only).

    transformers' ``create_chunked_causal_mask``: ``(attention_mask.cumsum(-1) == 0).sum(-1)``.
    """
    if key_padding_mask is None:
        return torch.zeros(batch, dtype=torch.int64, device=device)
    return (key_padding_mask.long().cumsum(-1) == 0).sum(-1)


def allowed_mask(
    n: int,
    key_padding_mask: torch.Tensor | None = None,
    window: int | None = None,
    chunk: int | None = None,
    batch: int = 1,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(B, 1, n, n) bool: query j (dim 2) may attend key i (dim 3); the masks of the module docstring."""
    idx = torch.arange(n, device=device)
    j, i = idx.view(1, 1, n, 1), idx.view(1, 1, 1, n)
    allowed = (i <= j).expand(batch, 1, n, n)
    if window is not None:
        allowed = allowed & (j - i < window)
    if chunk is not None:
        pad = left_padding(key_padding_mask, batch, torch.device(device)).view(batch, 1, 1, 1)
        allowed = allowed & (
            torch.div(j - pad, chunk, rounding_mode="floor") == torch.div(i - pad, chunk, rounding_mode="floor")
        )
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask.bool().view(batch, 1, 1, n)
    return allowed


def rollout_phi_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    rho: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    scaling: float | None = None,
    window: int | None = None,
    softcap: float | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """Reference: materialises the (B, H, n, n) attention.

    Args:
        q: (B, H, n, d_h) post-RoPE queries.
        k: (B, H_kv, n, d_h) keys, H a multiple of H_kv.
        rho: (B, n) rollout weights of the query positions.
        key_padding_mask: (B, n) bool, True where the key is a real token (left padding is False).
        scaling: softmax scale, default d_h ** -0.5.
        window: sliding window (query j sees keys j - window < i <= j), None for none.
        softcap: logit soft-capping, scores = softcap·tanh(scores / softcap), None for none.
        chunk: chunked attention (chunks of ``chunk`` positions from the first real token), None for none.
    Returns:
        (B, H, n) fp32 Φ.

    Example:
        >>> import torch
        >>> from heat_kernels import rollout_phi_ref
        >>> q = k = torch.zeros(1, 1, 3, 4)  # equal scores: query j spreads its weight evenly over keys 0..j
        >>> rollout_phi_ref(q, k, torch.ones(1, 3))
        tensor([[[1.8333, 0.8333, 0.3333]]])
    """
    B, H, n, d = q.shape
    Hkv = k.shape[1]
    if H % Hkv != 0:
        raise ValueError(f"Expected the number of query heads ({H}) to be a multiple of key heads, got {Hkv}")
    scaling = d**-0.5 if scaling is None else scaling
    kk = k.float().repeat_interleave(H // Hkv, dim=1)
    scores = torch.matmul(q.float(), kk.transpose(-1, -2)) * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    allowed = allowed_mask(n, key_padding_mask, window, chunk, B, q.device)
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
    def _tanh(x):
        # libdevice.tanh has no interpreter implementation: an fp32 tanh within ~1.5 ulp from exp2, and for
        # |x| < 0.55 (where (1 - e^{-2|x|}) / (1 + e^{-2|x|}) cancels) its Taylor series to x^15.
        ax = tl.abs(x)
        e = tl.exp2(ax * -2.8853900817779268)  # exp(-2|x|)
        big = (1.0 - e) / (1.0 + e)
        x2 = x * x
        p = x2 * -1.4558343870513183e-03 + 3.5921280365724810e-03  # -929569/638512875, 21844/6081075
        p = p * x2 - 8.8632355299021966e-03  # 1382/155925
        p = p * x2 + 2.1869488536155203e-02  # 62/2835
        p = p * x2 - 5.3968253968253971e-02  # 17/315
        p = p * x2 + 1.3333333333333333e-01  # 2/15
        p = p * x2 - 3.3333333333333333e-01
        p = p * x2 + 1.0
        return tl.where(ax < 0.55, p * x, tl.where(x < 0, -big, big))

    @triton.jit
    def _scores(q, kt, scale_log2, cap_in, cap_out, HAS_SOFTCAP: tl.constexpr, PRECISION: tl.constexpr):
        # log2-domain scores: scaling·q·kᵀ·log2(e), or softcap·tanh(scaling·q·kᵀ / softcap)·log2(e).
        s = tl.dot(q, kt, input_precision=PRECISION)
        if HAS_SOFTCAP:
            s = _tanh(s * cap_in) * cap_out
        else:
            s = s * scale_log2
        return s

    @triton.jit
    def _band(offs_m, offs_n, n, window, chunk, shift, HAS_WINDOW: tl.constexpr, HAS_CHUNK: tl.constexpr):
        # (BLOCK_M, BLOCK_N) query j = offs_m may attend key i = offs_n: causal, window, chunk (without padding).
        ok = (offs_n[None, :] <= offs_m[:, None]) & (offs_m[:, None] < n)
        if HAS_WINDOW:
            ok = ok & (offs_m[:, None] - offs_n[None, :] < window)
        if HAS_CHUNK:
            ok = ok & ((offs_m[:, None] + shift) // chunk == (offs_n[None, :] + shift) // chunk)
        return ok

    # A @triton.jit function resolves the functions it calls among its module's globals (closures are not seen,
    # in the interpreter either): publish the helpers there, and ``tl``: with ``from __future__ import annotations``
    # the helpers' ``tl.constexpr`` annotations are strings that the GPU compiler (not the interpreter) evaluates
    # in those globals ("NameError: tl is not defined" at the first compile for a GPU otherwise).
    globals().update(tl=tl, _tanh=_tanh, _scores=_scores, _band=_band)

    @triton.jit
    def _rollout_lse_kernel(
        Q, K, MASK, SHIFT, LSE,
        H, HKV, n, d, scale_log2, cap_in, cap_out, window, chunk,
        stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
        HAS_MASK: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_CHUNK: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
        UPCAST: tl.constexpr, PRECISION: tl.constexpr,
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
        # Key tiles in the band of this tile's rows: [lo, hi), lo the first key row pid_m * BLOCK_M may see.
        hi = tl.minimum((pid_m + 1) * BLOCK_M, n)
        lo = 0
        shift = 0
        if HAS_WINDOW:
            lo = tl.maximum(lo, pid_m * BLOCK_M - window + 1)
        if HAS_CHUNK:
            shift = tl.load(SHIFT + b)
            lo = tl.maximum(lo, ((pid_m * BLOCK_M + shift) // chunk) * chunk - shift)
        lo = (lo // BLOCK_N) * BLOCK_N
        for start_n in range(lo, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            kt_ptrs = K + b * stride_kb + hk * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None]
            kt = tl.load(kt_ptrs, mask=(offs_n[None, :] < n) & (offs_d[:, None] < d), other=0.0)
            if UPCAST:
                kt = kt.to(tl.float32)
            s = _scores(q, kt, scale_log2, cap_in, cap_out, HAS_SOFTCAP, PRECISION)
            allowed = _band(offs_m, offs_n, n, window, chunk, shift, HAS_WINDOW, HAS_CHUNK)
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
        Q, K, MASK, SHIFT, RHO, LSE, OUT,
        H, HKV, n, d, scale_log2, cap_in, cap_out, window, chunk,
        stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn,
        HAS_MASK: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_CHUNK: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
        UPCAST: tl.constexpr, PRECISION: tl.constexpr,
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
        # Query rows in the band of this tile's columns: [pid_n * BLOCK_N, hi), hi past the last row that the
        # tile's last column can reach.
        last = pid_n * BLOCK_N + BLOCK_N - 1
        hi = n
        shift = 0
        if HAS_WINDOW:
            hi = tl.minimum(hi, last + window)
        if HAS_CHUNK:
            shift = tl.load(SHIFT + b)
            hi = tl.minimum(hi, ((last + shift) // chunk + 1) * chunk - shift)
        for start_m in range(pid_n * BLOCK_N, hi, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            q_ptrs = Q + b * stride_qb + (bh % H) * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :]
            q = tl.load(q_ptrs, mask=(offs_m[:, None] < n) & (offs_d[None, :] < d), other=0.0)
            if UPCAST:
                q = q.to(tl.float32)
            lse = tl.load(LSE + bh * n + offs_m, mask=offs_m < n, other=float("inf"))
            rho = tl.load(RHO + b * n + offs_m, mask=offs_m < n, other=0.0)
            s = _scores(q, kt, scale_log2, cap_in, cap_out, HAS_SOFTCAP, PRECISION)
            allowed = _band(offs_m, offs_n, n, window, chunk, shift, HAS_WINDOW, HAS_CHUNK) & key_ok[None, :]
            p = tl.where(allowed, tl.exp2(s - lse[:, None]), 0.0)
            acc += tl.sum(p * rho[:, None], 0)
        tl.store(OUT + bh * n + offs_n, acc, mask=offs_n < n)

    tuned = (None, None)
    if not interpret:  # the interpreter runs one fixed configuration (no benchmarking there)
        configs = [
            triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn, w, s in [(64, 64, 4, 2), (128, 64, 8, 2), (64, 32, 4, 3),  # fp16/bf16 (128 × 128 spilled)
                                 (32, 32, 4, 2), (32, 32, 8, 1), (16, 16, 8, 1)]  # fp32 (see prune_tiles)
        ]
        key = ["n", "BLOCK_D", "UPCAST", "PRECISION", "HAS_WINDOW", "HAS_CHUNK", "HAS_SOFTCAP"]
        tune = triton.autotune(configs=configs, key=key, prune_configs_by={"early_config_prune": prune_tiles})
        tuned = (tune(_rollout_lse_kernel), tune(_rollout_colsum_kernel))
    return _rollout_lse_kernel, _rollout_colsum_kernel, *tuned


# fp32 operands ("ieee" products, no tensor cores) are multiplied with FMAs from registers: each thread holds its
# share of the q and k tiles, (BLOCK_M + BLOCK_N)·BLOCK_D / threads values, and of the score tile,
# BLOCK_M·BLOCK_N / threads. Compiling every variant for sm_80 and sm_90 (benchmarks/gpu_preflight.py, Triton 3.6)
# spilled with 24-32 operand values per thread next to 4-32 score values (and far more at larger tiles, whose shared
# memory also exceeded a block's); every tile within 16 and 32 compiled without spills, as did 16 × 16 at
# BLOCK_D = 256 (32 operand values, 1 score value), the fallback when no tile is within the budget.
FP32_OPERANDS_PER_THREAD = 16
FP32_SCORES_PER_THREAD = 32


def fp32_tile_load(block_m: int, block_n: int, block_d: int, num_warps: int) -> tuple[float, float]:
    """(operand values, score values) per thread of a tile configuration with fp32 operands."""
    threads = 32 * num_warps
    return (block_m + block_n) * block_d / threads, block_m * block_n / threads


def prune_tiles(configs: list, named_args: dict, **kwargs) -> list:
    """The autotune configurations that compile without spills: fp32 operands (``UPCAST``) keep the tiles within
    ``FP32_OPERANDS_PER_THREAD`` / ``FP32_SCORES_PER_THREAD`` (the smallest one if none is); fp16/bf16 operands
    (tensor cores, operands in shared memory) keep 64 × 64, 128 × 64 and 64 × 32, only 64 × 32 for heads wider
    than 128 (the smaller tiles are there for fp32)."""
    meta = {**named_args, **kwargs}
    if not meta["UPCAST"]:  # at BLOCK_D = 256, 64 × 64 and 128 × 64 spilled a few bytes (sm_80)
        tiles = {(64, 64), (128, 64), (64, 32)} if meta["BLOCK_D"] < 256 else {(64, 32)}
        return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) in tiles]
    load = {id(c): fp32_tile_load(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], meta["BLOCK_D"], c.num_warps)
            for c in configs}  # fmt: skip
    budget = (FP32_OPERANDS_PER_THREAD, FP32_SCORES_PER_THREAD)
    kept = [c for c in configs if load[id(c)][0] <= budget[0] and load[id(c)][1] <= budget[1]]
    return kept or [min(configs, key=lambda c: load[id(c)])]


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
    window: int | None = None,
    softcap: float | None = None,
    chunk: int | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """Launch the two Triton passes. ``block_m``/``block_n`` fix the tiles (interpreter tests use small ones)."""
    interpret = extension.triton_interpret()
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
    has_window = window is not None and window < n  # a window of n or more is the causal mask
    has_chunk = chunk is not None and chunk < n  # chunks of n or more hold every real position
    has_softcap = softcap is not None
    # Chunk ids (i + shift) // chunk with shift = (-left padding) mod chunk ≥ 0: transformers' floor division
    # (i - left padding) // chunk up to a constant, without negative operands.
    shift = (-left_padding(key_padding_mask, B, q.device)).remainder(chunk).int() if has_chunk else rho32
    # fp32 operands (always in the interpreter, whose numpy dot has no bf16) use exact fp32 products ("ieee", not
    # TF32); fp16/bf16 operands go to the tensor cores with fp32 accumulation (the default precision setting).
    upcast = interpret or q.dtype == torch.float32
    strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2))
    cap_in, cap_out = (scaling / softcap, softcap * _LOG2E) if has_softcap else (1.0, 1.0)
    args = (H, Hkv, n, d, scaling * _LOG2E, cap_in, cap_out, window if has_window else n,
            chunk if has_chunk else 1, *strides)  # fmt: skip
    precision = "ieee" if upcast else "tf32"
    meta = dict(
        HAS_MASK=has_mask, HAS_WINDOW=has_window, HAS_CHUNK=has_chunk, HAS_SOFTCAP=has_softcap,
        UPCAST=upcast, PRECISION=precision, BLOCK_D=max(16, 1 << (d - 1).bit_length()),
    )  # fmt: skip
    if lse_tuned is None or block_m is not None or block_n is not None:
        bm, bn = block_m or 64, block_n or 64
        lse_kernel[(_cdiv(n, bm), B * H)](q, k, mask, shift, lse, *args, **meta, BLOCK_M=bm, BLOCK_N=bn)
        colsum_kernel[(_cdiv(n, bn), B * H)](q, k, mask, shift, rho32, lse, out, *args, **meta, BLOCK_M=bm,
                                             BLOCK_N=bn)  # fmt: skip
    else:
        lse_tuned[lambda c: (_cdiv(n, c["BLOCK_M"]), B * H)](q, k, mask, shift, lse, *args, **meta)
        colsum_tuned[lambda c: (_cdiv(n, c["BLOCK_N"]), B * H)](q, k, mask, shift, rho32, lse, out, *args, **meta)
    return out


# ----------------------------------------------------------------------------------------------------------------
# torch.library ops: heat_kernels::rollout_phi (C++ CPU / CUDA kernels from heat_kernels._C) and
# heat_kernels::rollout_phi_triton (the Triton launcher). Both return fp32 (B, H, n).
# ----------------------------------------------------------------------------------------------------------------

_SCHEMA = (
    "(Tensor q, Tensor k, Tensor rho, Tensor? key_padding_mask, float scaling, int? window=None, "
    "float? softcap=None, int? chunk=None) -> Tensor"
)
_lib = torch.library.Library("heat_kernels", "FRAGMENT")  # kept alive: dropping it would drop the definition
_lib.define("rollout_phi" + _SCHEMA)


@torch.library.register_fake("heat_kernels::rollout_phi")
def _rollout_phi_fake(q, k, rho, key_padding_mask, scaling, window=None, softcap=None, chunk=None):
    return q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("heat_kernels::rollout_phi_triton", mutates_args=(), schema=_SCHEMA)
def _rollout_phi_triton_op(q, k, rho, key_padding_mask, scaling, window=None, softcap=None, chunk=None):
    return _rollout_phi_triton(q, k, rho, key_padding_mask, scaling, window, softcap, chunk)


@_rollout_phi_triton_op.register_fake
def _rollout_phi_triton_fake(q, k, rho, key_padding_mask, scaling, window=None, softcap=None, chunk=None):
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


def _check_band(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Expected {name} to be None or an int >= 1, got {value!r}")
    return int(value)


def rollout_phi(
    q: torch.Tensor,
    k: torch.Tensor,
    rho: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    scaling: float | None = None,
    backend: Backend = "auto",
    *,
    window: int | None = None,
    softcap: float | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    """Φ[b,h,i] = Σ_j ρ[b,j]·A[b,h,j,i], A the attention probabilities, never materialised (docs/design.md "M").

    A is transformers' attention for the masks of the module docstring: causal, key padding, and optionally a
    sliding window, chunks and Gemma-2 soft-capping.

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
        window: sliding window: query j sees keys i with j - window < i <= j (positions in the padded sequence,
            as transformers' ``sliding_window_overlay``; with left padding the same keys as unpadded). None: none.
        softcap: scores = softcap·tanh(scaling·q·kᵀ / softcap) before the mask (Gemma 2). None: none.
        chunk: chunked attention: query j sees keys i <= j with (j - p) // chunk == (i - p) // chunk, p the
            row's left padding (transformers' ``chunked_overlay``, Llama 4). None: none.
    Returns:
        (batch, heads, n) fp32 Φ.

    Example:
        >>> import torch
        >>> from heat_kernels import rollout_phi, rollout_phi_ref
        >>> g = torch.Generator().manual_seed(0)
        >>> q, k = torch.randn(1, 4, 6, 8, generator=g), torch.randn(1, 2, 6, 8, generator=g)  # 4 query heads, 2 kv
        >>> rho = torch.rand(1, 6, generator=g)
        >>> phi = rollout_phi(q, k, rho)  # the C++ op on the CPU when built, else the reference
        >>> phi.shape, torch.allclose(phi, rollout_phi_ref(q, k, rho), atol=1e-5)
        (torch.Size([1, 4, 6]), True)
    """
    _check_inputs(q, k, rho, key_padding_mask)
    scaling = q.shape[-1] ** -0.5 if scaling is None else float(scaling)
    if not math.isfinite(scaling):
        raise ValueError(f"Expected a finite scaling, got {scaling}")
    window, chunk = _check_band("window", window), _check_band("chunk", chunk)
    if softcap is not None:
        softcap = float(softcap)
        if not (math.isfinite(softcap) and softcap > 0):
            raise ValueError(f"Expected softcap to be None or a finite float > 0, got {softcap}")
    n = q.shape[2]
    window = None if window is not None and window >= n else window  # no position is n or more apart
    chunk = None if chunk is not None and chunk >= n else chunk  # one chunk holds every real position
    if key_padding_mask is not None and key_padding_mask.dtype != torch.bool:
        key_padding_mask = key_padding_mask.bool()
    resolved = extension.resolve_backend("rollout_phi", backend, q.device.type)
    if resolved == "torch":
        return rollout_phi_ref(q, k, rho, key_padding_mask, scaling, window, softcap, chunk)
    if resolved == "triton":
        return torch.ops.heat_kernels.rollout_phi_triton(q, k, rho, key_padding_mask, scaling, window, softcap, chunk)
    extension.load()  # registers the C++/CUDA kernels of heat_kernels::rollout_phi
    return torch.ops.heat_kernels.rollout_phi(q, k, rho, key_padding_mask, scaling, window, softcap, chunk)
