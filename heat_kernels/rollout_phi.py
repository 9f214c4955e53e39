"""rollout_phi: Φ[b,h,i] = Σ_j ρ[b,j]·softmax_i(scaling·q_j·k_iᵀ + mask) (DESIGN.md "M").

Placeholder with the pure-torch reference only; the kernels issue adds the Triton/C++/CUDA paths.
"""

from __future__ import annotations

import torch


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


def rollout_phi(q, k, rho, key_padding_mask=None, scaling=None, backend: str = "auto") -> torch.Tensor:
    return rollout_phi_ref(q, k, rho, key_padding_mask, scaling)
