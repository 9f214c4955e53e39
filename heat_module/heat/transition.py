"""M — the target-conditioned transition gate (paper §Methodology "Semantic Flow"; docs/design.md "M").

For layer l and query head h, with A^{l,h} the causal attention probabilities, the top-down rollout is
ρ^{L-1} = e_p and ρ^{l-1} = 0.5·ρ^l + 0.5·mean_h(ρ^l A^{l,h}); Φ^{l,h} = ρ^l A^{l,h} is the mass entering p at
the top from position i through head h of layer l, and

    M[i] = Σ_{l,h} Φ^{l,h}[i] · ‖v^{l,h}_i W_O^{l,h}‖₁ / Z,    Σ_i M[i] = 1,

with the value–output norm of Kobayashi et al. (2020). Φ comes from the ``rollout_phi`` op (flash-style, no n×n
attention map is kept) with the mask each layer really applies (causal, sliding window, chunks; classified from the
captured mask, :func:`heat_module.lm.anatomy.mask_band`) and its soft-capping. Layers with learned sinks (GPT-OSS)
use the torch path: the sink column takes softmax mass and is dropped, so the rows of A sum to less than one and ρ
loses that mass. Any other mask also uses the torch path (the capture's own additive mask), with one warning per
model, and so does every layer when the ``rollout_phi`` backend resolves to ``"torch"``. The torch path
(:func:`blocked_phi`) recomputes the attention of ``block`` query rows at a time from the captured queries and keys
and adds their ρ-weighted rows into Φ: its scratch is ≈ 3·H·block·n floats, never the (B, H, n, n) attention
(the memory planner, :mod:`heat_module.heat.memory_plan`, chooses ``block``).

On a hybrid decoder (convolution / state-space / linear-attention layers beside attention) the rollout over
attention does not describe the token mixing: M is refused unless ``gate="attention_only"`` (the attention-only
gate: the rollout runs over the attention layers only and ρ passes the other layers unchanged).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Sequence

import torch

from heat_kernels import extension, rollout_phi
from heat_kernels.rollout_phi import left_padding
from heat_module.config import GATES, SINKS, check_choice
from heat_module.lm.capture import LayerCapture, attention_scores, attention_softmax, repeat_kv
from heat_module.lm.offload import materialized
from heat_module.lm.projection import output_projection

_warned: weakref.WeakSet = weakref.WeakSet()  # anatomies (one per model) already warned about
_warned_names: set[str] = set()  # captures without an anatomy

#: query rows per block of the torch path (:func:`blocked_phi`) when no memory plan chose one
ROLLOUT_BLOCK = 256


def value_output_norms(cap: LayerCapture) -> torch.Tensor:
    """(B, H, n) N^{l,h}_i = ‖v^{l,h}_i W_O^{l,h}‖₁ (GQA: query head h reads kv head h // (H / H_kv))."""
    B, H, n, _ = cap.query.shape
    dv = cap.value.shape[-1]  # the value head size (MLA: differs from the query's)
    with materialized(cap.module):  # an offloaded layer holds its weights only during its forward
        w_o = output_projection(cap.module, dv).detach().to(cap.value.device)
    dtype = torch.promote_types(cap.value.dtype, torch.float32)  # fp32 products for bf16/fp16 models
    w_o = w_o.reshape(H, dv, -1).to(dtype)
    v = repeat_kv(cap.value.detach().to(dtype), H // cap.value.shape[1])  # (B, H, n, dv)
    out = torch.empty(B, H, n, dtype=torch.float32, device=v.device)
    for h in range(H):  # one head at a time keeps the (B, n, d) intermediate small
        out[:, h] = torch.matmul(v[:, h], w_o[h]).abs().sum(-1).float()
    return out


def _kernel_safe(cap: LayerCapture) -> bool:
    return cap.band.kind != "other" and cap.sinks is None and cap.weights is None


def _warn_once(cap: LayerCapture) -> None:
    key = cap.anatomy
    if key is not None:
        if key in _warned:
            return
        _warned.add(key)
    elif cap.name in _warned_names:
        return
    else:
        _warned_names.add(cap.name)
    warnings.warn(
        f"{cap.name}: the attention mask is neither causal, a sliding window nor chunked (with padding); computing "
        "Φ on the torch path (the attention recomputed in blocks of query rows, never materialised whole) instead of "
        "the rollout_phi kernel (warned once per model)",
        stacklevel=3,
    )


def allowed_rows(rows: torch.Tensor, n: int, key_padding_mask: torch.Tensor | None, window: int | None,
                 chunk: int | None, batch: int) -> torch.Tensor:
    """(B, 1, r, n) bool: query ``rows`` (r,) may attend key i: the causal / window / chunk / key-padding masks of
    :func:`heat_kernels.rollout_phi_ref` (``allowed_mask``), for a block of query rows."""
    j, i = rows.view(1, 1, -1, 1), torch.arange(n, device=rows.device).view(1, 1, 1, n)
    allowed = (i <= j).expand(batch, 1, rows.numel(), n)
    if window is not None:
        allowed = allowed & (j - i < window)
    if chunk is not None:
        pad = left_padding(key_padding_mask, batch, rows.device).view(batch, 1, 1, 1)
        allowed = allowed & (torch.div(j - pad, chunk, rounding_mode="floor")
                             == torch.div(i - pad, chunk, rounding_mode="floor"))
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask.bool().view(batch, 1, 1, n)
    return allowed


def blocked_phi(cap: LayerCapture, rho: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                block: int | None = None) -> torch.Tensor:
    """(B, H, n) Φ^{l,h} = ρ^l A^{l,h} from the attention of ``block`` query rows at a time (the torch path).

    Each block's probabilities are recomputed from the capture: ``cap.weights`` rows when recorded, else the scores
    of its queries against all keys with soft-capping and sinks, masked by the capture's additive mask (its rows of
    the block) — or, for a layer the kernels could run (causal / window / chunks, no sinks), by the band and
    ``key_padding_mask`` as :func:`heat_kernels.rollout_phi_ref` masks them (a query row that sees no real key
    contributes 0). Φ accumulates in the capture's dtype, at least fp32, and is returned in it.

    Args:
        rho: (B, n) rollout weights of the query positions.
        key_padding_mask: (B, n) bool, True at real tokens (used only with the band mask).
        block: query rows per block for one sequence (a batch of B runs max(1, block // B) rows per block, so the
            scratch, ≈ 3·B·H·rows·n floats, stays one sequence's); default :data:`ROLLOUT_BLOCK`.
    """
    B, H, n, _ = cap.query.shape
    block = ROLLOUT_BLOCK if block is None else int(block)
    if block < 1:
        raise ValueError(f"Expected a rollout block of at least 1 query row, got {block}")
    rows = max(1, block // B)
    dtype = torch.promote_types(cap.query.dtype, torch.float32)
    n_k = cap.key.shape[-2]
    band = cap.weights is None and _kernel_safe(cap)
    k = None if cap.weights is not None else repeat_kv(cap.key, H // cap.key.shape[1]).to(dtype)
    rho = rho.to(dtype)
    phi = torch.zeros(B, H, n_k, dtype=dtype, device=cap.query.device)
    for j0 in range(0, n, rows):
        j1 = min(n, j0 + rows)
        if cap.weights is not None:
            probs = cap.weights[:, :, j0:j1].to(dtype)
        elif band:
            scores = attention_scores(cap.query[:, :, j0:j1].to(dtype), k, None, cap.scaling, cap.softcap)
            allowed = allowed_rows(torch.arange(j0, j1, device=scores.device), n_k, key_padding_mask,
                                   cap.band.window, cap.band.chunk, B)
            probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
        else:
            mask = cap.mask
            if mask is not None and mask.shape[-2] != 1:
                mask = mask[:, :, j0:j1]
            scores = attention_scores(cap.query[:, :, j0:j1].to(dtype), k, mask, cap.scaling, cap.softcap)
            probs = attention_softmax(scores, cap.sinks)
        phi += torch.einsum("bj,bhji->bhi", rho[:, j0:j1], probs)
        del probs
    return phi


def layer_phi(cap: LayerCapture, rho: torch.Tensor, key_padding_mask: torch.Tensor | None,
              backend: str = "auto", block: int | None = None) -> torch.Tensor:
    """(B, H, n) Φ^{l,h} = ρ^l A^{l,h} for one layer: the ``rollout_phi`` kernel (fp32) where it applies, else
    :func:`blocked_phi` with ``block`` query rows per block (in the capture's dtype, at least fp32)."""
    if _kernel_safe(cap):
        if extension.resolve_backend("rollout_phi", backend, cap.query.device.type) == "torch":
            return blocked_phi(cap, rho, key_padding_mask, block)
        return rollout_phi(cap.query, cap.key, rho, key_padding_mask, cap.scaling, backend=backend,
                           window=cap.band.window, softcap=cap.softcap, chunk=cap.band.chunk)
    if cap.weights is None and cap.sinks is None:
        _warn_once(cap)
    return blocked_phi(cap, rho, key_padding_mask, block)


def sink_positions(phi_mass: torch.Tensor, norm_mass: torch.Tensor, valid: torch.Tensor,
                   threshold: float = 0.2, ratio: float = 0.5) -> torch.Tensor:
    """(B, n) bool: attention sinks for ``sink="auto"``.

    Rule: position i is a sink when it takes at least ``threshold`` of the rollout's attention mass
    (α_i = Σ_{l,h} Φ^{l,h}[i] / Σ_j Σ_{l,h} Φ^{l,h}[j]) while its mean value–output norm is below ``ratio`` times the
    mean over the context (ν_i = mean_{l,h} N_i / mean_j mean_{l,h} N_j): much attention, little content moved.

    Args:
        phi_mass: (B, n) Σ_{l,h} Φ^{l,h}[i].
        norm_mass: (B, n) mean_{l,h} N^{l,h}_i.
        valid: (B, n) bool, real tokens.
    """
    alpha = phi_mass * valid / (phi_mass * valid).sum(-1, keepdim=True).clamp_min(1e-30)
    counts = valid.sum(-1, keepdim=True).clamp_min(1)
    nu = norm_mass / ((norm_mass * valid).sum(-1, keepdim=True) / counts).clamp_min(1e-30)
    return (alpha >= threshold) & (nu < ratio) & valid


def renormalise(m: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """(..., n) non-negative M scaled to sum to one over the last dim; uniform over ``valid`` (bool (..., n),
    default all) where nothing is left, e.g. after every position was dropped as a sink."""
    if valid is None:
        valid = torch.ones_like(m, dtype=torch.bool)
    z = m.sum(-1, keepdim=True)
    return torch.where(z > 0, m / z.clamp_min(1e-30), valid.float() / valid.sum(-1, keepdim=True).clamp_min(1))


def transition_from_captures(
    captures: Sequence[LayerCapture],
    attention_mask: torch.Tensor | None = None,
    layers: Sequence[int] | None = None,
    sink: str = "keep",
    backend: str = "auto",
    return_parts: bool = False,
    gate: str = "full",
    origin: torch.Tensor | None = None,
    block: int | None = None,
):
    """M (B, n) from one forward pass's captures (one per layer, bottom to top).

    Args:
        captures: the :class:`LayerCapture` of every layer, in execution order.
        attention_mask: (B, n) 1 for real tokens (left padding 0); ``None`` = no padding.
        layers: sum l only over these layers (ρ still passes through every layer above).
        sink: ``"keep"``, ``"first"`` (first real token left out, M renormalised), ``"auto"``
            (:func:`sink_positions`) or ``"auto-median"`` (the ``"auto"`` positions get the median M of the others,
            :func:`median_fill`).
        backend: backend of the ``rollout_phi`` op.
        return_parts: also return a dict with the raw (un-normalised, sink-kept) M and the sink mask.
        gate: ``"full"`` (refused on hybrid decoders) or ``"attention_only"`` (the rollout over the attention
            layers only; ρ passes the non-attention layers unchanged).
        origin: (B,) the position whose next-token prediction row b explains (ρ^{L-1} = e_origin; default n − 1).
            Positions after it count as padding: in a causal model its rollout only reads attention rows at or
            before it, so it equals the rollout of the prefix ending there.
        block: query rows per block of the torch path (:func:`blocked_phi`; default :data:`ROLLOUT_BLOCK`), as the
            memory plan chooses it; the kernels stream their own 64-row tiles.
    Returns:
        (B, n) fp32 M with Σ_i M[i] = 1 over real tokens, 0 on padding.
    """
    if not captures:
        raise ValueError("Expected at least one captured attention layer, got none")
    check_choice("gate", gate, GATES)
    anatomy = captures[0].anatomy
    if anatomy is not None and anatomy.hybrid and gate != "attention_only":
        raise ValueError(
            "Expected a decoder whose token mixing is all attention for the gate M, got a hybrid with "
            f"{anatomy.describe()}; the rollout over attention ignores these layers. Use "
            "HEATConfig(gate='attention_only') for the attention-only gate (documented there)"
        )
    B, _, n, _ = captures[0].query.shape
    device = captures[0].query.device
    valid = (torch.ones(B, n, dtype=torch.bool, device=device) if attention_mask is None
             else attention_mask.bool().to(device))
    kpm = None if attention_mask is None else valid
    L = len(captures)
    if layers is not None and not all(-L <= int(x) < L for x in layers):
        raise ValueError(f"Expected rollout_layers in [-{L}, {L}) (the model has {L} attention layers), got "
                         f"{list(layers)}")
    chosen = set(range(L)) if layers is None else {int(x) % L for x in layers}
    rho = torch.zeros(B, n, dtype=torch.float32, device=device)
    if origin is None:
        rho[:, n - 1] = 1.0
    else:
        origin = origin.to(device)
        rho[torch.arange(B, device=device), origin] = 1.0
        valid = valid & (torch.arange(n, device=device)[None] <= origin[:, None])
    m = torch.zeros(B, n, dtype=torch.float32, device=device)
    phi_mass = torch.zeros_like(m)
    norm_mass = torch.zeros_like(m)
    for cap in reversed(captures):
        here = cap.query.device  # a dispatched model's layers may sit on different devices: ρ follows them
        phi = layer_phi(cap, rho.to(here), None if kpm is None else kpm.to(here), backend, block)
        phi = phi.to(device=device, dtype=torch.float32)  # (B, H, n)
        if cap.layer in chosen:
            norms = value_output_norms(cap).to(device)
            m += (phi * norms).sum(1)
            phi_mass += phi.sum(1)
            norm_mass += norms.mean(1)
        rho = 0.5 * rho + 0.5 * phi.mean(1)
    m = m * valid
    raw = m.clone()
    sinks = torch.zeros_like(valid)
    if sink == "first":
        first = valid.float().argmax(-1)
        sinks[torch.arange(B, device=device), first] = True
    elif sink in ("auto", "auto-median"):
        sinks = sink_positions(phi_mass, norm_mass, valid)
    elif sink != "keep":
        raise ValueError(f"Expected sink to be one of {list(SINKS)}, got {sink!r}")
    if sink == "auto-median":
        m = median_fill(m, sinks, valid)
    else:
        m = renormalise(m.masked_fill(sinks, 0.0), valid)
    if return_parts:
        return m, {"raw": raw, "sinks": sinks, "phi_mass": phi_mass, "norm_mass": norm_mass}
    return m


#: the sink options :func:`sink_options` returns (the ``HEATConfig`` choices, ``auto-median`` included)
GATE_OPTIONS: tuple[str, ...] = tuple(dict.fromkeys((*SINKS, "auto-median")))


def median_fill(m: torch.Tensor, sinks: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """The ``auto-median`` rule (``HEATConfig(sink="auto-median")``): (..., n) sink-kept M
    with each row's flagged positions (bool ``sinks`` (..., n)) set to the median M of its other ``valid``
    positions instead of 0, so a sink position that carries content can still be attributed; renormalised.
    A row with no flagged position, or nothing else valid, keeps its M."""
    if valid is None:
        valid = torch.ones_like(m, dtype=torch.bool)
    n = m.shape[-1]
    out = m.clone().reshape(-1, n)
    flat_m, flat_s, flat_v = m.reshape(-1, n), sinks.reshape(-1, n), valid.reshape(-1, n)
    for r in range(out.shape[0]):
        others = flat_v[r] & ~flat_s[r]
        if flat_s[r].any() and others.any():
            out[r, flat_s[r]] = flat_m[r, others].median()
    return renormalise(out.reshape(m.shape), valid)


def sink_options(m: torch.Tensor, auto_sinks: torch.Tensor, valid: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
    """M under every option of :data:`GATE_OPTIONS` from one rollout, as :func:`transition_from_captures` gives it.

    Args:
        m: (..., n) sink-kept M (``parts["raw"]`` of :func:`transition_from_captures`, or it normalised).
        auto_sinks: (..., n) bool, the positions the ``auto`` rule flags (``parts["sinks"]`` with ``sink="auto"``).
        valid: (..., n) bool real tokens (default all).
    Returns:
        ``{"keep", "first", "auto", "auto-median"}`` -> (..., n) M summing to one over ``valid``.
    """
    if valid is None:
        valid = torch.ones_like(m, dtype=torch.bool)
    m = m * valid
    first = torch.zeros_like(valid)
    first.scatter_(-1, valid.float().argmax(-1, keepdim=True), True)
    return {"keep": renormalise(m, valid), "first": renormalise(m.masked_fill(first, 0.0), valid),
            "auto": renormalise(m.masked_fill(auto_sinks, 0.0), valid),
            "auto-median": median_fill(m, auto_sinks, valid)}
