"""S — Hessian sensitivity (paper eq. 2–3; docs/design.md "S"), and the dispatch over its estimators.

H = ∇²_X g with g(X) = log P(y | X) and S_i = (1/m) Σ_k ‖(H Π_i r_k)_i‖₁, r_k Rademacher on token i's block.

``curvature_exact`` computes the block HVPs by forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``),
vmapped over (token, probe) tangents in chunks. Tokens are processed in runs of consecutive positions [i0, i1): in a
causal model nothing before i0 depends on x_{i0..}, so the run differentiates only w.r.t. X[i0:i1] and recomputes
positions i0..n-1 on the frozen KV cache of the prefix (from the unperturbed forward) — half the work of a full
recompute on average. ``curvature_naive`` is the authors'-code-style loop (one double backward per token and
probe), kept as the reference and the benchmark baseline.

:class:`heat_module.heat.estimator.HEAT` runs S through the estimator parts that call these functions (``s_exact``
here, ``s_fisher`` :mod:`heat_module.heat.fisher`, ``s_lowrank`` :mod:`heat_module.heat.lowrank`), each optionally
w.r.t. the residual stream entering layer L-k (HEAT-LS, :func:`heat_module.heat.part.on_residual_stream`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from heat_module.heat.cost import hvp_runs
from heat_module.heat.objective import batched_hvp, resolve_hvp_mode, target_logprob_fn
from heat_module.lm.capture import LayerCapture, PrefixKV, can_share_prefix
from heat_module.lm.forward import position_ids_from_mask
from heat_module.lm.offload import offloaded_modules


def rademacher(m: int, n: int, d: int, seed: int = 0, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(m, n, d) Rademacher probes (±1) from a generator seeded with ``seed``."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    r = torch.randint(0, 2, (m, n, d), generator=gen, dtype=torch.int8) * 2 - 1
    return r.to(device=device, dtype=dtype)


def curvature_naive(
    model: nn.Module,
    inputs_embeds: torch.Tensor,
    target: int,
    probes: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference: for every token i and probe k, a full forward, ∇g with ``create_graph`` and a second backward.

    Args:
        inputs_embeds: (1, n, d); probes: (m, n, d); attention_mask: (1, n).
    Returns:
        (n,) fp32 S_i (0 on padding).
    """
    _, n, _ = inputs_embeds.shape
    m = probes.shape[0]
    if attention_mask is None:
        attention_mask = torch.ones(1, n, dtype=torch.long, device=inputs_embeds.device)
    g = target_logprob_fn(model, target, attention_mask, position_ids_from_mask(attention_mask))
    out = torch.zeros(n, dtype=torch.float32, device=inputs_embeds.device)
    valid = attention_mask[0].bool()
    with torch.enable_grad():
        for i in range(n):
            if not valid[i]:
                continue
            for k in range(m):
                x = inputs_embeds.detach().clone().requires_grad_(True)
                (gx,) = torch.autograd.grad(g(x), x, create_graph=True)
                (hv,) = torch.autograd.grad((gx[0, i] * probes[k, i]).sum(), x)
                out[i] += hv[0, i].abs().sum().float() / m
    return out


def hvp_chunk(model: nn.Module, suffix: int, memory_mb: float | None, chunk_size: int | None,
              itemsize: int = 4) -> int:
    """Tangents per batched HVP call over ``suffix`` recomputed positions: ``chunk_size`` if given, else as many
    as fit in ``memory_mb``, at ~16 activation tensors of width (hidden + intermediate) per layer and position per
    tangent (measured on SmolLM2: ≈ 200 MB per tangent at 48 positions)."""
    if chunk_size is not None:
        return max(1, int(chunk_size))
    cfg = getattr(model, "config", None)
    hidden = int(getattr(cfg, "hidden_size", 1024) or 1024)
    inter = int(getattr(cfg, "intermediate_size", 4 * hidden) or 4 * hidden)
    layers = int(getattr(cfg, "num_hidden_layers", 12) or 12)
    per_tangent = 16 * suffix * layers * (hidden + inter) * itemsize
    budget = (memory_mb if memory_mb is not None else 2048.0) * 2**20
    return max(1, int(budget // max(1, per_tangent)))


def curvature_exact(
    model: nn.Module,
    inputs_embeds: torch.Tensor,
    target: int,
    probes: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    captures: Sequence[LayerCapture] | None = None,
    chunk_size: int | None = None,
    positions: Sequence[int] | None = None,
    mode: str = "auto",
    memory_mb: float | None = None,
    foil: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> torch.Tensor:
    """Batched exact block HVPs (eq. 3), (token, probe) tangents batched across tokens.

    Positions are grouped into runs (:func:`heat_module.heat.cost.hvp_runs`: c ≈ √(2·a·(n − i0)/m) tokens from i0,
    balancing the recompute of positions i0..i−1 against the per-run gradient); each run recomputes positions
    i0..n−1 on the frozen prefix KV cache and all its c·m tangents go through one HVP function in chunks.

    Args:
        inputs_embeds: (1, n, d) one example (left padding allowed).
        target: the target token id y.
        probes: (m, n, d) probe vectors (Rademacher for eq. 3).
        attention_mask: (1, n) 1 for real tokens.
        captures: the unperturbed run's captures; their keys/values are the frozen prefix cache (``None``: every
            run recomputes all n positions).
        chunk_size: (token, probe) tangents per batched call; ``None``: from ``memory_mb`` (:func:`hvp_chunk`).
        positions: which positions to score (default every real token).
        mode: ``"forward_over_reverse"`` (``vmap`` of ``jvp(grad(g))``), ``"reverse_over_reverse"`` (one ``grad``
            with ``create_graph`` per run, then batched second backwards over its tangents with ``is_grads_batched``)
            or ``"auto"`` (:func:`resolve_hvp_mode`). Same numbers.
        memory_mb: activation budget of one batched call when ``chunk_size`` is ``None`` (default 2048).
        foil: contrastive g = log P(target) − log P(foil) (:func:`~heat_module.heat.objective.target_logprob_fn`).
        progress: called with the number of HVPs after each run (a progress bar's ``update``).
    Returns:
        (n,) fp32 S_i (0 on padding and on positions not asked for).
    """
    _, n, d = inputs_embeds.shape
    m = probes.shape[0]
    device = inputs_embeds.device
    mode = resolve_hvp_mode(mode, device)
    if attention_mask is None:
        attention_mask = torch.ones(1, n, dtype=torch.long, device=device)
    valid = attention_mask[0].bool()
    if positions is None:
        positions = [i for i in range(n) if valid[i]]
    share = captures is not None and can_share_prefix(captures)
    full_pos = position_ids_from_mask(attention_mask)
    x_all = inputs_embeds.detach()
    out = torch.zeros(n, dtype=torch.float32, device=device)
    for run in hvp_runs(list(positions), m, n, share):
        i0, i1 = (run[0], run[-1] + 1)
        start = i0 if share else 0
        prefix = PrefixKV.from_captures(list(captures), start, attention_mask) if share and start > 0 else None
        g_full = target_logprob_fn(model, target, attention_mask[:, start:], full_pos[:, start:], prefix, foil)
        head, tail = x_all[:, start:i0], x_all[:, i1:]

        def g_run(xr: torch.Tensor, head=head, tail=tail, g_full=g_full) -> torch.Tensor:
            return g_full(torch.cat([head, xr, tail], dim=1))

        rows = torch.tensor(run, device=device).repeat_interleave(m) - i0  # tangent t -> its token (run-relative)
        ks = torch.arange(m, device=device).repeat(len(run))
        chunk = hvp_chunk(model, n - start, memory_mb, chunk_size, x_all.element_size())
        with torch.enable_grad():
            hvp = batched_hvp(g_run, x_all[:, i0:i1], mode)
            norms = []
            for c0 in range(0, rows.numel(), chunk):
                r, k = rows[c0:c0 + chunk], ks[c0:c0 + chunk]
                t = torch.arange(r.numel(), device=device)
                tangents = torch.zeros(r.numel(), 1, i1 - i0, d, dtype=x_all.dtype, device=device)
                tangents[t, 0, r] = probes[k, r + i0].to(x_all.dtype)
                hv = hvp(tangents)  # (chunk, 1, i1 - i0, d)
                norms.append(hv[t, 0, r].abs().sum(-1).float())  # ‖(H Π_i r_k)_i‖₁
        out[torch.tensor(run, device=device)] = torch.cat(norms).view(len(run), m).mean(-1)
        if progress is not None:
            progress(len(run) * m)
    return out


def offload_hvp_mode(model: nn.Module, mode: str, device: torch.device) -> str:
    """The HVP mode for ``model``: :func:`resolve_hvp_mode`, except on a model whose weights accelerate offloads (to
    the CPU or to disk), where ``"auto"`` becomes ``"reverse_over_reverse"`` and ``"forward_over_reverse"`` is
    refused: ``torch.func.jvp`` runs the forward inside a transform, where accelerate cannot load the weights."""
    offloaded = offloaded_modules(model)
    if not offloaded:
        return resolve_hvp_mode(mode, device)
    if mode == "forward_over_reverse":
        raise ValueError(
            "Expected hvp_mode='reverse_over_reverse' or 'auto' for a model whose weights accelerate offloads "
            f"({len(offloaded)} modules, e.g. {offloaded[0]!r}), got 'forward_over_reverse': torch.func.jvp runs the "
            "forward inside a transform where accelerate's offload hooks cannot load the weights"
        )
    resolve_hvp_mode(mode, device)  # validates the name
    return "reverse_over_reverse"
