"""HEAT-WIN: windowed attribution (paper Algorithm 1, Tables 10/12; docs/design.md "Variants").

Context tokens x_0..x_{n-2} are covered by windows [a, b) of W tokens with stride s (``HEATConfig.window``,
``effective_stride`` = W // 2 by default, i.e. 50 % overlap): starts 0, s, 2s, ... and a last window aligned to the
end so that every context token is covered. Each window's input is its tokens followed by the last context token
p = n-1 — a fresh sequence of W + 1 tokens with positions 0..W — so every window predicts the same target y, which is
fixed from the full context (greedy) unless given. Per window the components M^{[a:b]}, S^{[a:b]}, I^{[a:b]} are the
token-level ones of that input (any curvature mode, so LR+WIN, LS+WIN and Fisher+WIN compose); in particular
I^{[a:b]}_i = KL(P̃ ‖ P̃^{(i)}) with P̃ the window's own prediction (Thm 4, assumption A4: the windowed
distributions). Algorithm 1's accumulation: M̃[i], S̃[i], Ĩ[i] summed over the windows covering i (p is in every
window), ν[i] the number of such windows, M̄ = M̃ / max(1, ν) renormalised to sum to one at the end, S̄ and Ī averaged
the same way, then Attr_i = M̄[i]·(β S̄_i + γ Ī_i) (eq. 5). All windows have the same length, so they run as one
batched forward pass (one capture for every window's M).

Window leakage (``HEATConfig.window_leakage=True``): the paper's ε_M(W) (Thm 4, eq. 12) bounds
δ_M(i; W) = |M_T[i] − M̃_T[i]|, "the semantic-flow mass of paths that traverse tokens outside the window", and
Table 12's ε̂_M(W) is an empirical proxy "attribution mass discrepancy near window boundaries". Our reading: one extra
forward pass over the full context gives the unwindowed gate M (docs/design.md "M"), and we report
``extra["window_leakage"]`` = ε̂_M(W) = max_i |M[i] − M̄[i]| (the smallest ε satisfying eq. 12 on this input) and
``extra["window_leakage_tv"]`` = ½ Σ_i |M[i] − M̄[i]| (the total gate mass that moved). Both are 0 when one window
covers the whole context.

Attention sinks: a window is a fresh sequence, so its first token becomes an attention sink like position 0 of the
full context, and with ``sink="keep"`` every window start collects gate mass that the full-context M gives to
position 0 only. On SmolLM2 (n = 64, W = 16) this is most of the leakage: ε̂_M = 0.44 with ``sink="keep"`` and 0.10
with ``sink="first"`` (each window's first token left out of its M). Use ``sink="first"``/``"auto"`` with windowing
when the model has a sink.

The estimator is passed in (:class:`heat_module.heat.estimator.HEAT` calls :func:`attribute_windowed` with itself);
only its public methods are used (:class:`WindowEstimator`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

import torch

from heat_module.config import HEATConfig
from heat_module.heat.combine import Components
from heat_module.heat.cost import FE_FORWARD, forward_fe
from heat_module.heat.transition import transition_from_captures
from heat_module.lm.capture import LayerCapture, slice_captures
from heat_module.result import AttributionResult, Cost


class WindowEstimator(Protocol):
    """What HEAT-WIN needs from the estimator (the public methods of :class:`heat_module.heat.estimator.HEAT`)."""

    config: HEATConfig
    model: torch.nn.Module

    @property
    def device(self) -> torch.device: ...

    def target_id(self, target: int | str | None, logits: torch.Tensor | None) -> int: ...

    def forward_with_captures(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[LayerCapture]]: ...

    def components(self, ids: torch.Tensor, target: int, captures: Sequence[LayerCapture], logits: torch.Tensor,
                   transition: torch.Tensor | None = None) -> Components: ...

    def result_from(self, ids: torch.Tensor, target: int, parts: Components) -> AttributionResult: ...


def window_bounds(n_context: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Windows [a, b) of ``window`` tokens with ``stride`` covering context positions [0, n_context).

    The last window is aligned to the end (so it may overlap its predecessor by more than W - s); one window
    [0, n_context) when ``window >= n_context``; ``[(0, 0)]`` when there is no context before p.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"Expected window >= 1 and stride >= 1, got window={window}, stride={stride}")
    if n_context <= window:
        return [(0, max(0, n_context))]
    last = n_context - window
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return [(a, a + window) for a in starts]


def accumulate(
    n: int, positions: list[torch.Tensor], values: list[torch.Tensor | None]
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Algorithm 1's accumulation: (n,) Σ_w values_w scattered to their positions, divided by max(1, ν), and ν.

    Args:
        positions: per window, (n_w,) long indices into [0, n).
        values: per window, (n_w,) values (or ``None`` for a component that is off; then all must be ``None``).
    """
    dtype = torch.float32 if values[0] is None else torch.promote_types(values[0].dtype, torch.float32)
    nu = torch.zeros(n, dtype=dtype)
    total = None if values[0] is None else torch.zeros(n, dtype=dtype)
    for pos, val in zip(positions, values):
        nu.index_add_(0, pos.cpu(), torch.ones(pos.numel(), dtype=dtype))
        if total is not None:
            total.index_add_(0, pos.cpu(), val.detach().to(dtype).cpu())
    if total is None:
        return None, nu
    return total / nu.clamp_min(1.0), nu


def attribute_windowed(heat: WindowEstimator, ids: torch.Tensor, target: int | str | None = None,
                       rollout_block: int | None = None) -> AttributionResult:
    """HEAT-WIN of one context (Algorithm 1).

    Args:
        heat: the estimator (its config gives W, s and every other setting).
        ids: (n,) context token ids (validated).
        target: the target id / single-token string; ``None`` = greedy from the full context.
        rollout_block: query rows per block of the gate's torch path (the memory plan's ``rollout_block``, split
            between the batched windows); ``None``: the gate's default.
    Returns:
        An :class:`AttributionResult` over the n tokens with ``extra["windows"]`` ([a, b) per window),
        ``extra["coverage"]`` (ν), and the leakage proxies when ``config.window_leakage``.
    """
    cfg = heat.config
    if cfg.window is None:
        raise ValueError("Expected HEATConfig(window=W) for windowed attribution, got window=None")
    ids = ids.to(heat.device).flatten()
    n = ids.numel()
    W, stride = cfg.window, cfg.effective_stride
    cost = Cost()
    t0 = time.perf_counter()
    full_logits = full_caps = None
    if target is None or cfg.window_leakage:
        full_logits, full_caps = heat.forward_with_captures(ids[None], torch.ones_like(ids)[None])
        cost.forward_passes += 1
        cost.forward_equivalents += FE_FORWARD
    target_id = heat.target_id(target, None if full_logits is None else full_logits[0])
    bounds = window_bounds(n - 1, W, stride)
    positions = [torch.cat([torch.arange(a, b, device=ids.device), ids.new_tensor([n - 1])]) for a, b in bounds]
    batch = torch.stack([ids[pos] for pos in positions])  # (num_windows, W + 1): same length for all
    logits, captures = heat.forward_with_captures(batch, torch.ones_like(batch))
    m_all = transition_from_captures(captures, None, cfg.rollout_layers, cfg.sink, cfg.backend, gate=cfg.gate,
                                     block=rollout_block)
    cost.seconds["windows_forward"] = time.perf_counter() - t0
    parts = []
    for b, pos in enumerate(positions):
        part = heat.components(batch[b], target_id, slice_captures(captures, b, 0), logits[b], m_all[b])
        cost.add(part.cost, scale=forward_fe(heat.model, pos.numel(), n))  # a window's FE are its own forwards
        parts.append(part)
    pos_list = [p.cpu() for p in positions]
    m_bar, nu = accumulate(n, pos_list, [p.transition for p in parts])
    m_bar = m_bar / m_bar.sum().clamp_min(1e-30)  # "M renormalised at the end"
    s_bar, _ = accumulate(n, pos_list, [p.curvature for p in parts])
    i_bar, _ = accumulate(n, pos_list, [p.information for p in parts])
    fo_bar, _ = accumulate(n, pos_list, [p.first_order for p in parts])
    dev = ids.device
    merged = Components(m_bar.to(dev), None if s_bar is None else s_bar.to(dev),
                        None if i_bar is None else i_bar.to(dev), None if fo_bar is None else fo_bar.to(dev), cost)
    extra: dict = {"windows": [list(x) for x in bounds], "window": W, "stride": stride,
                   "coverage": nu.tolist()}
    if cfg.window_leakage:
        m_full = transition_from_captures(full_caps, None, cfg.rollout_layers, cfg.sink, cfg.backend,
                                          gate=cfg.gate, block=rollout_block)[0].to(m_bar.dtype).cpu()
        delta = (m_full - m_bar).abs()
        extra["window_leakage"] = float(delta.max())
        extra["window_leakage_tv"] = float(0.5 * delta.sum())
    cost.seconds["total"] = time.perf_counter() - t0
    result = heat.result_from(ids, target_id, merged)
    result.extra.update(extra)
    return result
