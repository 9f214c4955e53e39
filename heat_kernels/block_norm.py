"""block_norm: s[i] = (1/m)·Σ_k ‖Σ_y coef_y·w[i,y]·(w[i,y]·r[k,i])‖₁ (DESIGN.md "S", fisher/lowrank).

Placeholder with the pure-torch reference only; the kernels issue adds the Triton/C++/CUDA paths.
"""

from __future__ import annotations

import torch


def block_norm_ref(w: torch.Tensor, coef: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Reference.

    Args:
        w: (n, K, d) per-token factors.
        coef: (K,) weights.
        r: (m, n, d) probes.
    Returns:
        (n,) fp32 s.
    """
    wf, rf = w.float(), r.float()
    proj = torch.einsum("nkd,mnd->mnk", wf, rf) * coef.float()
    out = torch.einsum("mnk,nkd->mnd", proj, wf)
    return out.abs().sum(-1).mean(0)


def block_norm(w, coef, r, backend: str = "auto") -> torch.Tensor:
    return block_norm_ref(w, coef, r)
