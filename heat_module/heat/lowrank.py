"""HEAT-LR: S from a randomized rank-k eigendecomposition of the whole Hessian (paper Thm 4, Tables 9/12;
docs/design.md "S", ``lowrank``).

H = ∇²_X g ∈ R^{nd×nd} is approximated by H_k = U Λ Uᵀ (U: nd×k orthonormal, Λ the k eigenvalues of largest |λ|)
with the two-pass randomized range finder of Halko, Martinsson & Tropp (2011, Alg. 4.1 + 5.3), using only
full-support Hessian-vector products (forward-over-reverse ``jvp(grad(g))`` vmapped in chunks, or — with
``LowRankS(hvp_mode="reverse_over_reverse")`` — batched second backward passes through one retained ∇g graph):

1. Ω ∈ R^{nd×ℓ} Gaussian, ℓ = min(k + oversample, nd);  Y = H Ω          (ℓ HVPs)
2. Q = orth(Y) (thin QR);  B = Qᵀ H Q, symmetrised                         (ℓ HVPs)
3. B = V Θ Vᵀ;  keep the k eigenpairs of largest |θ|;  U = Q V_k, Λ = Θ_k.

Then S_i = (1/m) Σ_k ‖(U_i Λ U_iᵀ) r_{k,i}‖₁ with U_i (d×k) token i's rows of U — the block-restricted product
Π_i H_k Π_iᵀ r — computed by ``heat_kernels.block_norm(w = U_i columns (n, k, d), coef = Λ, r = probes)``.
Thm 4: |S_i − S̃_i| ≤ √d · τ_k with τ_k the Frobenius tail beyond rank k. With k ≥ nd (and ℓ = nd) Q is a full
orthonormal basis, so H_k = H and S is exact (the test's check).

Cost: 2ℓ full-length HVPs (no prefix sharing: the probes have full support), independent of the probe count m.

Precision: the HVPs run in the model's dtype, but for a bf16/fp16 model everything else — Ω, Y, Q, B, U, Λ and the
probes' products U_i Λ U_iᵀ r — is kept in fp32 (:func:`compute_dtype`); a bf16 U would carry only ~3 significant
digits into every S_i.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from heat_kernels import block_norm
from heat_module.heat.objective import batched_hvp, target_logprob_fn


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the factors are kept in: fp32 for bf16/fp16 (and fp32) inputs, fp64 stays fp64."""
    return torch.promote_types(dtype, torch.float32)


def hvp_fn(
    model: nn.Module,
    inputs_embeds: torch.Tensor,
    target: int,
    chunk_size: int = 16,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    mode: str = "forward_over_reverse",
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``hvp(V (c, n, d)) -> (c, n, d) H V`` at X = ``inputs_embeds`` (1, n, d), full-support directions.

    The product is formed in the model's dtype and returned in the dtype of V (fp32 factors stay fp32).

    Chunks of ``chunk_size`` directions go through :func:`heat_module.heat.objective.batched_hvp` (``mode``:
    forward-over-reverse, or reverse-over-reverse through one retained ∇g graph; same values).
    """
    primal = inputs_embeds.detach()
    chunk_hvp = batched_hvp(target_logprob_fn(model, target, attention_mask, position_ids), primal, mode)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.enable_grad():
            for c0 in range(0, v.shape[0], max(1, chunk_size)):
                t = v[c0:c0 + chunk_size].to(primal.dtype)[:, None]  # (c, 1, n, d)
                out.append(chunk_hvp(t)[:, 0].detach().to(v.dtype))
        return torch.cat(out, 0)

    return hvp


@dataclass
class LowRank:
    """H_k = U Λ Uᵀ.

    Attributes:
        u: (nd, k) orthonormal columns (row index = token·d + feature).
        eigenvalues: (k,) Λ, by decreasing |λ|.
        hvps: how many Hessian-vector products were spent (2ℓ).
    """

    u: torch.Tensor
    eigenvalues: torch.Tensor
    hvps: int

    def token_factors(self, n: int, d: int) -> torch.Tensor:
        """(n, k, d) w with w[i, j] = U_i[:, j] (token i's block of eigenvector j)."""
        return self.u.reshape(n, d, -1).permute(0, 2, 1)

    def dense(self) -> torch.Tensor:
        """(nd, nd) U Λ Uᵀ (tests only)."""
        return self.u @ torch.diag(self.eigenvalues) @ self.u.T


def randomized_eig(
    hvp: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    d: int,
    rank: int,
    oversample: int = 8,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> LowRank:
    """Two-pass randomized eigendecomposition of a symmetric (nd × nd) operator given by ``hvp``.

    Args:
        hvp: (c, n, d) -> (c, n, d) the operator applied to c directions.
        rank: k (clipped to nd); oversample: p, ℓ = min(k + p, nd).
        seed: seed of the Gaussian test matrix Ω.
    Returns:
        :class:`LowRank` with k = min(rank, nd) eigenpairs of largest |λ|.
    """
    N = n * d
    k = min(int(rank), N)
    ell = min(k + int(oversample), N)
    gen = torch.Generator(device="cpu").manual_seed(int(seed) + 7919)  # distinct from the Rademacher probe stream
    omega = torch.randn(ell, n, d, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)
    Y = hvp(omega).reshape(ell, N).T  # (N, ℓ)
    Q, _ = torch.linalg.qr(Y.double())  # (N, ℓ)
    Q = Q.to(dtype)
    HQ = hvp(Q.T.reshape(ell, n, d)).reshape(ell, N).T  # (N, ℓ)
    B = (Q.T.double() @ HQ.double())
    B = 0.5 * (B + B.T)
    theta, V = torch.linalg.eigh(B)
    order = torch.argsort(theta.abs(), descending=True)[:k]
    U = (Q.double() @ V[:, order]).to(dtype)
    return LowRank(U, theta[order].to(dtype), hvps=2 * ell)


def lowrank_block_norms(lr: LowRank, probes: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """(n,) S_i = (1/m) Σ_k ‖U_i Λ U_iᵀ r_{k,i}‖₁ through ``heat_kernels.block_norm``, in at least fp32.

    Args:
        probes: (m, n, d).
    """
    _, n, d = probes.shape
    dtype = compute_dtype(lr.u.dtype)
    w = lr.token_factors(n, d).to(dtype)
    return block_norm(w, lr.eigenvalues.to(dtype), probes.to(dtype), backend=backend)


def curvature_lowrank(
    model: nn.Module,
    inputs_embeds: torch.Tensor,
    target: int,
    probes: torch.Tensor,
    rank: int = 16,
    oversample: int = 8,
    chunk_size: int = 16,
    seed: int = 0,
    backend: str = "auto",
    mode: str = "forward_over_reverse",
) -> tuple[torch.Tensor, LowRank]:
    """(n,) fp32 HEAT-LR S and the low-rank factorisation used (U, Λ in fp32 for a bf16/fp16 model).

    Args:
        inputs_embeds: (1, n, d) X (or h^{L-k} under :func:`heat_module.heat.layer_sampling.residual_stream`).
        probes: (m, n, d) the same Rademacher probes as the exact estimator (eq. 3).
        mode: how the HVPs are formed (see :func:`hvp_fn`).
    """
    if inputs_embeds.dim() != 3 or inputs_embeds.shape[0] != 1:
        raise ValueError(f"Expected inputs_embeds of shape (1, n, d), got {tuple(inputs_embeds.shape)}")
    _, n, d = inputs_embeds.shape
    hvp = hvp_fn(model, inputs_embeds, target, chunk_size, mode=mode)
    lr = randomized_eig(hvp, n, d, rank, oversample, seed, compute_dtype(inputs_embeds.dtype), inputs_embeds.device)
    return lowrank_block_norms(lr, probes, backend), lr
