"""block_norm: s[i] = (1/m)·Σ_k ‖Σ_y coef_y·w[i,y]·(w[i,y]·r[k,i])‖₁ (docs/design.md "S", eq. 2–3).

The block-restricted HVP norm that ends the ``fisher`` (w = per-token gradients u_y, coef = P_y) and ``lowrank``
(w = U_i, coef = Λ) curvature modes: for each token i, the L1 norm of its block of G·r_k with G_ii = Σ_y coef_y
w_{i,y} w_{i,y}ᵀ, averaged over the m probes. The reference forms the (m, n, d) product; the kernels never do:

- Triton (GPU; CPU only in the interpreter): one program per token; pass 1 over d-chunks forms the (m, K)
  projections, pass 2 over d-chunks forms each output chunk and adds its magnitude.
- C++ (CPU, ``csrc/block_norm_cpu.cpp``): the same per token, tokens in parallel, fp32 scratch of K + 2·d floats.
- CUDA (``csrc/block_norm_cuda.cu``): one block per token, warps share the projections.

Precision: inputs fp32/fp16/bf16 are converted to fp32 on load; all accumulation and the output are fp32. Limits:
the Triton kernel holds an (m, K, d-chunk) product in registers, fine for the few probes and small K (top-K tokens,
low rank) it is meant for; the CUDA kernel keeps m·K projections in shared memory. No autograd formula.

File order: reference, Triton kernel, launcher, ``torch.library`` ops, dispatch.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch

from heat_kernels import extension

Backend = Literal["auto", "torch", "cpp", "cuda", "triton"]

# ----------------------------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------------------------


def block_norm_ref(w: torch.Tensor, coef: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Reference.

    Args:
        w: (n, K, d) per-token factors.
        coef: (K,) weights.
        r: (m, n, d) probes.
    Returns:
        (n,) fp32 s.

    Example:
        >>> import torch
        >>> from heat_kernels import block_norm_ref
        >>> w = torch.tensor([[[1.0, 2.0]]])  # n = 1 token, K = 1 factor, d = 2
        >>> block_norm_ref(w, torch.tensor([0.5]), torch.tensor([[[1.0, 1.0]]]))  # 0.5·(w·r)·‖w‖₁ = 0.5·3·3
        tensor([4.5000])
    """
    wf, rf = w.float(), r.float()
    proj = torch.einsum("nkd,mnd->mnk", wf, rf) * coef.float()
    out = torch.einsum("mnk,nkd->mnd", proj, wf)
    return out.abs().sum(-1).mean(0)


# ----------------------------------------------------------------------------------------------------------------
# Triton kernel (defined lazily: triton is optional, and TRITON_INTERPRET is read when the kernel is defined)
# ----------------------------------------------------------------------------------------------------------------


@functools.cache
def _triton_kernel(interpret: bool):
    """Define the Triton kernel; one per interpreter mode (``interpret`` must match TRITON_INTERPRET)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _block_norm_kernel(
        W, COEF, R, S,
        n, K, d, m,
        stride_wn, stride_wk, stride_rm, stride_rn,
        BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        # Program i: token i. BLOCK_M >= m and BLOCK_K >= K hold all probes and factors; d is looped over.
        i = tl.program_id(0)
        offs_m = tl.arange(0, BLOCK_M)
        offs_k = tl.arange(0, BLOCK_K)
        offs_d = tl.arange(0, BLOCK_D)
        w_base = W + i.to(tl.int64) * stride_wn + offs_k[:, None] * stride_wk
        r_base = R + offs_m[:, None].to(tl.int64) * stride_rm + i.to(tl.int64) * stride_rn
        # Pass 1: proj[p, y] = coef_y · (w[i,y] · r[p,i]).
        proj = tl.zeros([BLOCK_M, BLOCK_K], tl.float32)
        for d0 in range(0, d, BLOCK_D):
            dd = d0 + offs_d
            w = tl.load(w_base + dd[None, :], mask=(offs_k[:, None] < K) & (dd[None, :] < d), other=0.0)
            r = tl.load(r_base + dd[None, :], mask=(offs_m[:, None] < m) & (dd[None, :] < d), other=0.0)
            proj += tl.sum(r.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :], axis=2)
        coef = tl.load(COEF + offs_k, mask=offs_k < K, other=0.0)
        proj = proj * coef[None, :]
        # Pass 2: ‖Σ_y proj[p, y]·w[i,y]‖₁ chunk by chunk (padded probes have proj = 0 and add nothing).
        total = tl.zeros([BLOCK_M], tl.float32)
        for d0 in range(0, d, BLOCK_D):
            dd = d0 + offs_d
            w = tl.load(w_base + dd[None, :], mask=(offs_k[:, None] < K) & (dd[None, :] < d), other=0.0)
            out = tl.sum(proj[:, :, None] * w.to(tl.float32)[None, :, :], axis=1)
            total += tl.sum(tl.abs(out), axis=1)
        tl.store(S + i, tl.sum(total, axis=0) / m)

    return _block_norm_kernel


# ----------------------------------------------------------------------------------------------------------------
# Launcher
# ----------------------------------------------------------------------------------------------------------------


def _pow2(x: int) -> int:
    return 1 << max(0, x - 1).bit_length()


def _block_norm_triton(w: torch.Tensor, coef: torch.Tensor, r: torch.Tensor, block_d: int | None = None):
    """Launch one program per token. ``block_d`` fixes the d-chunk (tests use a small one to exercise the loop)."""
    interpret = extension.triton_interpret()
    kernel = _triton_kernel(interpret)
    n, K, d = w.shape
    m = r.shape[0]
    w = w if w.stride(-1) == 1 else w.contiguous()
    r = r if r.stride(-1) == 1 else r.contiguous()
    coef32 = coef.float().contiguous()
    s = torch.empty(n, device=w.device, dtype=torch.float32)
    if n == 0:
        return s
    bm, bk = _pow2(m), _pow2(K)
    # (m, K, d-chunk) fp32 product per program: ~8K elements on a GPU (registers), more in the interpreter.
    budget = 1 << (16 if interpret else 13)
    # fp16 inputs with d-chunks of 512 or more spilled registers (sm_80 and sm_90, Triton 3.6: the compile of every
    # variant in benchmarks/gpu_preflight.py); 256 never did. bf16 takes the same cap.
    widest = 1 << 30 if interpret or w.element_size() > 2 else 256
    bd = block_d or max(16, min(_pow2(d), budget // (bm * bk), widest))
    kernel[(n,)](
        w, coef32, r, s, n, K, d, m, w.stride(0), w.stride(1), r.stride(0), r.stride(1),
        BLOCK_M=bm, BLOCK_K=bk, BLOCK_D=bd, num_warps=4,
    )  # fmt: skip
    return s


# ----------------------------------------------------------------------------------------------------------------
# torch.library ops: heat_kernels::block_norm (C++ CPU / CUDA kernels from heat_kernels._C) and
# heat_kernels::block_norm_triton (the Triton launcher). Both return fp32 (n,).
# ----------------------------------------------------------------------------------------------------------------

_SCHEMA = "(Tensor w, Tensor coef, Tensor r) -> Tensor"
_lib = torch.library.Library("heat_kernels", "FRAGMENT")  # kept alive: dropping it would drop the definition
_lib.define("block_norm" + _SCHEMA)


@torch.library.register_fake("heat_kernels::block_norm")
def _block_norm_fake(w, coef, r):
    return w.new_empty(w.shape[:1], dtype=torch.float32)


@torch.library.custom_op("heat_kernels::block_norm_triton", mutates_args=(), schema=_SCHEMA)
def _block_norm_triton_op(w, coef, r):
    return _block_norm_triton(w, coef, r)


@_block_norm_triton_op.register_fake
def _block_norm_triton_fake(w, coef, r):
    return w.new_empty(w.shape[:1], dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------------------------


def _check_inputs(w: torch.Tensor, coef: torch.Tensor, r: torch.Tensor) -> None:
    if w.dim() != 3:
        raise ValueError(f"Expected w of shape (n, K, d), got {tuple(w.shape)}")
    n, K, d = w.shape
    if coef.shape != (K,):
        raise ValueError(f"Expected coef of shape ({K},), got {tuple(coef.shape)}")
    if r.dim() != 3 or r.shape[1:] != (n, d) or r.shape[0] == 0:
        raise ValueError(f"Expected r of shape (m, {n}, {d}) with m >= 1, got {tuple(r.shape)}")
    if not (w.dtype.is_floating_point and coef.dtype.is_floating_point and r.dtype.is_floating_point):
        raise ValueError(f"Expected floating w, coef, r, got {w.dtype}, {coef.dtype}, {r.dtype}")


def block_norm(
    w: torch.Tensor,
    coef: torch.Tensor,
    r: torch.Tensor,
    backend: Backend = "auto",
) -> torch.Tensor:
    """s[i] = (1/m)·Σ_k ‖Σ_y coef_y·w[i,y]·(w[i,y]·r[k,i])‖₁ without forming the (m, n, d) product.

    Args:
        w: (n, K, d) per-token factors (fisher: the K gradients u_y restricted to token i; lowrank: U_i).
        coef: (K,) weights (fisher: P_y; lowrank: the eigenvalues).
        r: (m, n, d) probes.
        backend: ``"auto"`` (CUDA → Triton, CPU → C++ op if built else reference), ``"torch"`` (reference),
            ``"cpp"`` (C++ op, CPU), ``"cuda"`` (CUDA op), ``"triton"`` (CUDA, or CPU with TRITON_INTERPRET=1).
    Returns:
        (n,) fp32 s.

    Example:
        >>> import torch
        >>> from heat_kernels import block_norm, block_norm_ref
        >>> g = torch.Generator().manual_seed(0)
        >>> w, coef = torch.randn(5, 3, 8, generator=g), torch.rand(3, generator=g)  # n = 5, K = 3, d = 8
        >>> r = torch.randn(2, 5, 8, generator=g)  # m = 2 probes
        >>> s = block_norm(w, coef, r)  # the C++ op on the CPU when built, else the reference
        >>> s.shape, torch.allclose(s, block_norm_ref(w, coef, r), atol=1e-5)
        (torch.Size([5]), True)
    """
    _check_inputs(w, coef, r)
    resolved = extension.resolve_backend("block_norm", backend, w.device.type)
    if resolved == "torch":
        return block_norm_ref(w, coef, r)
    if resolved == "triton":
        return torch.ops.heat_kernels.block_norm_triton(w, coef, r)
    extension.load()  # registers the C++/CUDA kernels of heat_kernels::block_norm
    return torch.ops.heat_kernels.block_norm(w, coef, r)
