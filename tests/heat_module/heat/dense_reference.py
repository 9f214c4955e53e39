"""Independent references for the curvature tests: an eager copy of a model that never went through HEAT's
``install``/capture code, its dense Hessian of g over the embeddings, and explicit per-token Fisher gradients."""

from __future__ import annotations

import copy

import torch
from torch import nn


def eager_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` on transformers' own ``"eager"`` attention (none of HEAT's attention code)."""
    ref = copy.deepcopy(model)
    ref.set_attn_implementation("eager")
    assert ref.config._attn_implementation == "eager"
    return ref


def log_probs(ref: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(V,) log softmax(ref(inputs_embeds=X).logits[0, -1]) for X (1, n, d)."""
    return torch.log_softmax(ref(inputs_embeds=x).logits[0, -1], -1)


def dense_hessian(ref: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """(n, d, n, d) ∇²_X g with g = log_softmax(ref(inputs_embeds=X).logits[0, -1])[y], by
    ``torch.autograd.functional.hessian``."""
    n, d = x.shape[1:]
    h = torch.autograd.functional.hessian(lambda flat: log_probs(ref, flat.view(1, n, d))[target], x.flatten())
    return h.view(n, d, n, d)


def block_norms(blocks: torch.Tensor, probes: torch.Tensor) -> torch.Tensor:
    """(n,) S_i = (1/m) Σ_k ‖B_ii r_{k,i}‖₁ from dense blocks (n, d, n, d) and probes (m, n, d)."""
    n, m = blocks.shape[0], probes.shape[0]
    return torch.stack([
        torch.stack([(blocks[i, :, i, :] @ probes[k, i]).abs().sum() for k in range(m)]).mean() for i in range(n)
    ])


def fisher_reference(ref: nn.Module, x: torch.Tensor, probes: torch.Tensor, topk: int) -> torch.Tensor:
    """(n,) S_i = (1/m) Σ_k ‖Σ_y P_y u_{y,i} (u_{y,i} · r_{k,i})‖₁ over the ``topk`` most probable tokens y, each
    u_y = ∇_X log P_y from its own ``torch.autograd.grad`` call on the eager copy."""
    logp = log_probs(ref, x).detach()
    grads = {}
    for y in torch.topk(logp, topk).indices.tolist():
        xx = x.detach().clone().requires_grad_(True)
        (u,) = torch.autograd.grad(log_probs(ref, xx)[y], xx)
        grads[y] = u[0].double()  # (n, d)
    n, m = x.shape[1], probes.shape[0]
    out = torch.zeros(n, dtype=torch.float64)
    for i in range(n):
        for k in range(m):
            r = probes[k, i].double()
            acc = sum(logp[y].exp().double() * u[i] * (u[i] @ r) for y, u in grads.items())
            out[i] += acc.abs().sum() / m
    return out


def bf16_case(module, monkeypatch) -> tuple:
    """A tiny fp32 llama, its bf16 copy, fp32 embeddings X (1, 5, 16), two Rademacher probes, and the dtypes that
    ``module.block_norm`` receives (recorded into the returned list) — shared by the bf16 precision tests."""
    from heat_kernels import block_norm
    from heat_module.heat.curvature import rademacher
    from heat_module.lm.forward import embed
    from heat_module.testing import TINY_VOCAB
    from tests.conftest import make_tiny

    model = make_tiny("llama", double=False, hidden=16)
    half = copy.deepcopy(model).to(torch.bfloat16)
    ids = torch.randint(4, TINY_VOCAB, (1, 5), generator=torch.Generator().manual_seed(0))
    x = embed(model, ids).detach()
    probes = rademacher(2, x.shape[1], x.shape[2], seed=1)
    seen: list[tuple[torch.dtype, ...]] = []

    def recording_block_norm(w, coef, r, backend="auto"):
        seen.append((w.dtype, coef.dtype, r.dtype))
        return block_norm(w, coef, r, backend=backend)

    monkeypatch.setattr(module, "block_norm", recording_block_norm)
    return model, half, x, probes, seen
