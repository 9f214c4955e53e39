"""Every row of a generation matrix from one pass over the longest prefix, where a method's rows allow it exactly.

Row t of :func:`heat_module.attribution.generation.attribute_generation` explains y_t given prefix_t = prompt +
y_1..y_{t-1} (n + t tokens), i.e. the next-token prediction at position p_t = n + t − 1. In a causal model nothing at
a position ≤ p_t depends on tokens after it, so the longest prefix (N = n + T − 1 tokens) computes every row's
quantities at once:

- **the unmasked prediction** of row t is the longest prefix's logits at p_t;
- **the masked runs of I / occlusion** (x_i replaced by the mask vector): one masked forward of the longest prefix
  per position i serves every row with p_t ≥ i (row t reads position p_t) — N masked runs instead of
  Σ_t (n + t), on the prompt's frozen prefix cache like :func:`heat_module.heat.information.information`;
- **the gate M**: the top-down rollout of row t starts at e_{p_t} and only reads attention rows ≤ p_t, which the
  causal model computes identically in the longer sequence; the value–output norms of positions ≤ p_t are the
  same too. So one captured forward gives every row's M (:func:`heat_module.heat.transition.transition_from_captures`
  with ``origin``), including the ``"auto"`` sink rule (its mass shares and mean norm are taken over the row's own
  positions ≤ p_t) and the renormalisation over those positions.

This needs only that the output at position p depends on the tokens ≤ p alone, which holds for every causal decoder
(mixture-of-experts layers route each token on its own: the tiny GPT-OSS test covers one); positional encodings are
absolute positions, the same in the prefix and the longer sequence. What is shared equals the per-row calls up to the
round-off of a longer forward. :func:`shared_rows` returns the
rows for the methods where this holds exactly, and ``None`` for every other method or configuration, which then
keeps its per-row calls: HEAT with Fisher I (one K-cotangent backward per target), the first-order term α or a
contrast (foil); HEAT-WIN; gradient methods (AttnLRP, input × gradient, integrated gradients: one backward per target)
and any method not listed below. S (Hessian-vector products or Fisher factors of the row's own target) is not shared:
each row computes it on its own prefix exactly as the per-row call does (:func:`row_curvature`).

Shared here, for the exact classes (a subclass may change what a row computes, so it keeps the per-row path):

- ``heat`` (:class:`heat_module.heat.estimator.HEAT`) when its I is the exact one (or absent), without α, window or
  foil: M and I shared (M·I, ``HEATConfig.preset("mi")``, any mask, sink, normalisation or rollout layers; the
  ``transition`` / ``information`` ablations), S (any estimator: the default ``HEATConfig()``'s Fisher S,
  ``"exact"``, low-rank) per row, combined with the config (:func:`heat_module.heat.combine.combine`, its
  normalisation per row) as the per-row call does;
- ``occlusion`` (every ``measure`` and ``replacement``);
- ``gated:*``: the gate M is shared; the inner method's rows are shared when it is one of these, else per row.

Cost (:class:`~heat_module.result.Cost`): the shared work is one captured forward of the longest prefix plus N masked
runs (a run starting at i0 recomputes N − i0 positions), in FE of **one forward of the longest prefix**; every row
carries 1/T of it (so the rows sum to the whole, as per-row costs do), with ``details["shared_cost"]`` saying so.
Shared occlusion rows count their cost the same way (the per-row baseline records none); a ``gated:*`` row adds 1/T of
the gate's forward to its inner row's cost. A HEAT row with S adds its own S cost (one captured forward of its
prefix plus the S estimator's cost, in FE of that prefix's forward; ``details["curvature_cost"]``).
Reading the logits of up to T positions per masked run (the LM head over T positions instead of one) is not in the FE
count; the benchmark's seconds include it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch

from heat_module.heat.combine import Components
from heat_module.heat.cost import FE_FORWARD, information_fe, model_attention_share
from heat_module.heat.information import kl_divergence
from heat_module.heat.transition import transition_from_captures
from heat_module.lm.capture import (
    LayerCapture,
    PrefixKV,
    can_share_prefix,
    capture,
    consecutive_runs,
    install,
    prefix_cache,
    uninstall,
)
from heat_module.lm.forward import embed, mask_vector, score_dtype
from heat_module.result import AttributionResult, Cost

#: the largest masked-run logits block (copies × positions × vocabulary) held at once
LOGITS_BLOCK = 2**25


def shared_rows(method: Any, full: torch.Tensor, n: int) -> list[AttributionResult] | None:
    """The T rows of a generation matrix from one pass over the longest prefix, or ``None`` when the method's rows
    cannot be shared exactly (see the module docstring).

    Args:
        method: the attribution method.
        full: (n + T,) prompt and answer ids.
        n: the prompt length.
    Returns:
        Row t = ``method.attribute(full[:n+t], target=full[n+t])`` up to round-off, or ``None`` (also for a
        single row, T = 1, where there is nothing to share and the per-row call is exact and no dearer).
    """
    builder = row_builder(method)
    if builder is None or full.numel() - n <= 1:
        return None
    return builder(method, full, n)


def row_builder(method: Any) -> Callable[[Any, torch.Tensor, int], list[AttributionResult]] | None:
    """The shared row function for ``method``, ``None`` when its rows are computed one by one."""
    kind = _exact_class(method)
    if kind == "heat":
        cfg = method.config
        fo = cfg.alpha > 0 and cfg.ablation not in ("transition", "curvature", "information")
        if (cfg.computes_i and cfg.information.name != "exact") or fo or cfg.window is not None:
            return None
        return heat_rows
    if kind == "occlusion":
        return occlusion_rows
    if kind == "gated":
        return gated_rows
    return None


_CLASSES = {("heat_module.heat.estimator", "HEAT"): "heat",
            ("heat_module.baselines.occlusion", "Occlusion"): "occlusion",
            ("heat_module.baselines.gated", "Gated"): "gated"}


def _exact_class(method: Any) -> str | None:
    cls = type(method)
    return _CLASSES.get((cls.__module__, cls.__qualname__))


# ------------------------------------------------------------------------------------------------- shared passes
def row_positions(n: int, T: int, device: torch.device | None = None) -> torch.Tensor:
    """(T,) p_t = n + t − 1: the position whose next-token prediction row t explains."""
    return torch.arange(n - 1, n + T - 1, device=device)


def captured_logits(model: torch.nn.Module, x: torch.Tensor, keep: int) -> tuple[torch.Tensor, list[LayerCapture]]:
    """One captured no-grad forward of (1, N, d) embeddings: the logits of the last ``keep`` positions (keep, V)
    (fp32, fp64 for an fp64 model) and every layer's capture."""
    with torch.no_grad(), capture() as captures:
        logits = suffix_logits(model, x, torch.arange(x.shape[1], device=x.device)[None], keep)
    if not captures:
        raise RuntimeError("Expected the model's attention to be captured (an open HEAT object or an installed "
                           "model), got no captures")
    return logits[0], captures


def suffix_logits(model: torch.nn.Module, x: torch.Tensor, position_ids: torch.Tensor, keep: int) -> torch.Tensor:
    """(B, s, d) embeddings at ``position_ids`` (B, s) (on a prefix cache when one is active) -> the logits of
    their last min(keep, s) positions (B, min(keep, s), V): fp32, fp64 for an fp64 model."""
    out = model(inputs_embeds=x, attention_mask=torch.ones(x.shape[:2], dtype=torch.long, device=x.device),
                position_ids=position_ids, use_cache=False, logits_to_keep=keep)
    logits = out.logits[:, -min(keep, x.shape[1]):]
    return logits if logits.dtype == torch.float64 else logits.float()


def masked_runs(model: torch.nn.Module, x: torch.Tensor, captures: Sequence[LayerCapture], mask_value: torch.Tensor,
                first: int, batch_size: int, vocab: int) -> Iterator[tuple[list[int], torch.Tensor, int]]:
    """The masked forwards of the longest prefix: for each run of consecutive positions i (x_i replaced by
    ``mask_value``, one copy per i) the logits of positions ``first``..N−1 that a masked copy can change.

    Args:
        x: (1, N, d) embeddings of the longest prefix.
        captures: its unmasked run's captures (their keys/values are the frozen prefix cache when
            :func:`heat_module.lm.capture.can_share_prefix` allows it; else each run recomputes all N positions).
        first: the first position whose logits are wanted (n − 1).
        batch_size: masked copies per forward (capped so one logits block stays below :data:`LOGITS_BLOCK`).
        vocab: the size of the logits' last dimension.
    Yields:
        ``(run, logits, start)``: the run's positions, (c, N − start, V) logits of positions start..N−1 with
        start = max(first, run[0]) (positions before the masked token are unchanged and not recomputed).
    """
    N = x.shape[1]
    share = can_share_prefix(captures)
    device = x.device
    with torch.no_grad():
        for run in consecutive_runs(list(range(N)), run_size(N, first, batch_size, vocab)):
            i0 = run[0] if share else 0
            c = len(run)
            xm = x[:, i0:].expand(c, -1, -1).clone()
            xm[torch.arange(c, device=device), torch.tensor(run, device=device) - i0] = mask_value.to(xm.dtype)
            pos = torch.arange(i0, N, device=device)[None].expand(c, -1)
            start = max(first, run[0])
            prefix = PrefixKV.from_captures(list(captures), i0) if share and i0 > 0 else None
            with prefix_cache(prefix):
                logits = suffix_logits(model, xm, pos, N - start)
            yield run, logits, start


def run_size(N: int, first: int, batch_size: int, vocab: int) -> int:
    """Masked copies per forward of :func:`masked_runs`: ``batch_size``, capped so that the (copies, N − first,
    vocab) logits stay below :data:`LOGITS_BLOCK` elements."""
    return max(1, min(batch_size, LOGITS_BLOCK // max(1, (N - first) * vocab)))


def masked_runs_fe(N: int, first: int, batch_size: int, vocab: int, share: bool, attention: float = 0.0) -> float:
    """FE (in forwards of N tokens) of :func:`masked_runs`: N masked forwards, a run from i0 recomputing N − i0
    positions (:func:`heat_module.heat.cost.information_fe` over the same runs; ``attention``: attention's share)."""
    return information_fe(N, run_size(N, first, batch_size, vocab), share, attention)


def expand_captures(captures: Sequence[LayerCapture], B: int) -> list[LayerCapture]:
    """The captures of a batch of one repeated B times (views, no copies)."""
    def ex(v: torch.Tensor | None) -> torch.Tensor | None:
        return None if v is None else v.expand(B, *v.shape[1:])
    return [replace(c, query=ex(c.query), key=ex(c.key), value=ex(c.value), mask=ex(c.mask), weights=ex(c.weights))
            for c in captures]


def shared_transition(captures: Sequence[LayerCapture], n: int, T: int, **options: Any) -> torch.Tensor:
    """(T, N) every row's M from the longest prefix's captures: row t is the gate of prefix_t (its columns < n + t;
    0 after). ``options``: those of :func:`heat_module.heat.transition.transition_from_captures`."""
    device = captures[0].query.device
    return transition_from_captures(expand_captures(captures, T), None, origin=row_positions(n, T, device), **options)


def split_cost(total: Cost, T: int, N: int) -> list[Cost]:
    """Each row's 1/T of the shared ``total`` (forward passes spread as integers so the rows sum to the whole)."""
    out = []
    for t in range(T):
        passes = total.forward_passes // T + (1 if t < total.forward_passes % T else 0)
        out.append(Cost(forward_passes=passes, forward_equivalents=total.forward_equivalents / T,
                        seconds={k: v / T for k, v in total.seconds.items()},
                        details={"shared_cost": f"1/{T} of one computation shared by {T} rows; FE in forwards of "
                                                f"the longest prefix ({N} tokens)"}))
    return out


# ----------------------------------------------------------------------------------------------- per method
def _information_rows(model: torch.nn.Module, x: torch.Tensor, captures: Sequence[LayerCapture],
                      ref_logits: torch.Tensor, mask_value: torch.Tensor, n: int, batch_size: int,
                      measure: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                      dtype: torch.dtype) -> torch.Tensor:
    """(T, N) per row t the score of masking each position i ≤ p_t: ``measure(ref_logp (k, V), logq (c, k, V),
    positions (k,))`` → (c, k) for the rows at those positions; 0 elsewhere."""
    N = x.shape[1]
    T = N - n + 1
    ref = torch.log_softmax(ref_logits.to(torch.promote_types(ref_logits.dtype, torch.float32)), -1)  # (T, V)
    out = torch.zeros(T, N, dtype=dtype, device=x.device)
    for run, logits, start in masked_runs(model, x, captures, mask_value, n - 1, batch_size, ref.shape[-1]):
        logq = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, dtype)), -1)
        rows = torch.arange(start - (n - 1), T, device=x.device)  # the rows whose position p_t >= start
        value = measure(ref[rows], logq, rows)  # (c, len(rows))
        for k, i in enumerate(run):
            keep = rows >= i - (n - 1)  # row t sees position i when p_t >= i
            out[rows[keep], i] = value[k, keep].to(dtype)
    return out


def heat_rows(method: Any, full: torch.Tensor, n: int) -> list[AttributionResult]:
    """HEAT's rows: M and the exact I from one captured forward and N masked runs of the longest prefix, S (when the
    config computes it) per row (:func:`row_curvature`)."""
    cfg = method.config
    model = method.model
    T = full.numel() - n
    N = n + T - 1
    ids = full[:N].to(method.device)
    t0 = time.perf_counter()
    x = embed(model, ids[None]).detach()
    ref_logits, captures = captured_logits(model, x, T)
    m = shared_transition(captures, n, T, layers=cfg.rollout_layers, sink=cfg.sink, backend=cfg.backend,
                          gate=cfg.gate)
    cost = Cost(forward_passes=1, forward_equivalents=FE_FORWARD)
    cost.seconds["transition"] = time.perf_counter() - t0
    dt = score_dtype(x.dtype)
    info = None
    if cfg.computes_i:
        t0 = time.perf_counter()
        mask = mask_vector(model, cfg.information.mask, cfg.information.mask_token_id)
        info = _information_rows(model, x, captures, ref_logits, mask, n, cfg.information.batch_size,
                                 lambda ref, logq, rows: kl_divergence(ref, logq), dt)
        cost.forward_passes += N
        cost.forward_equivalents += masked_runs_fe(N, n - 1, cfg.information.batch_size, ref_logits.shape[-1],
                                                   can_share_prefix(captures), model_attention_share(model, N))
        cost.seconds["information"] = time.perf_counter() - t0
    rows = []
    for t, row_cost in enumerate(split_cost(cost, T, N)):
        k = n + t
        curv = None
        if cfg.computes_s:
            curv, s_cost = row_curvature(method, full[:k].to(method.device), int(full[k]))
            curv = curv.to(dt)
            row_cost.add(s_cost)
            row_cost.details["curvature_cost"] = (f"S of this row alone: one captured forward of its prefix ({k} "
                                                  "tokens) and the S estimator's own cost, in FE of that forward")
        parts = Components(m[t, :k].to(dt), curv, None if info is None else info[t, :k].clone(), None, row_cost)
        if cfg.check_finite:
            for name in ("transition", "curvature", "information"):
                value = getattr(parts, name)
                if value is not None and not torch.isfinite(value).all():
                    bad = (~torch.isfinite(value)).nonzero().flatten().tolist()
                    raise FloatingPointError(
                        f"Expected finite values from the {name} component, got NaN/inf at token positions "
                        f"{bad[:10]} of row {t} (try fp32 weights, or HEATConfig(check_finite=False))")
        rows.append(method.result_from(full[:k].to(method.device), int(full[k]), parts))
    return rows


def row_curvature(method: Any, ids: torch.Tensor, target: int) -> tuple[torch.Tensor, Cost]:
    """(k,) S of one row (ids: (k,) its prefix, ``target`` its token) as :meth:`heat_module.heat.estimator.HEAT.
    components` computes it: one captured forward of the prefix, the memory plan's S estimator on it; and the cost
    (that forward plus the estimator's own cost, timed under ``seconds["curvature"]``)."""
    t0 = time.perf_counter()
    x = embed(method.model, ids[None]).detach()
    _, captures = method.forward_with_captures(ids[None], torch.ones_like(ids)[None])
    cost = Cost(forward_passes=1, forward_equivalents=FE_FORWARD)
    values = method.curvature(x, target, captures, cost)
    cost.seconds["curvature"] = time.perf_counter() - t0
    return values, cost


@contextlib.contextmanager
def _installed(model: torch.nn.Module) -> Iterator[None]:
    """HEAT's attention installed for the block (the capture and the prefix cache need it), then removed: the model
    is left as it was (as :meth:`heat_module.baselines.gated.Gated.gate` does)."""
    install(model)
    try:
        yield
    finally:
        uninstall(model)


def occlusion_rows(method: Any, full: torch.Tensor, n: int) -> list[AttributionResult]:
    """Occlusion's rows from one captured forward and N masked runs of the longest prefix (on its prefix cache)."""
    model = method.model
    T = full.numel() - n
    N = n + T - 1
    ids = full[:N].to(method.device)
    targets = full[n:].to(method.device)
    with torch.no_grad():
        x = embed(model, ids[None]).detach()
    vec = mask_vector(model, method.replacement)
    dt = score_dtype(x.dtype)

    def measure(ref: torch.Tensor, logq: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if method.measure == "kl":
            return kl_divergence(ref, logq)
        y = targets[rows]
        r = torch.arange(len(rows), device=ref.device)
        p, q = ref[r, y][None], logq[:, r, y]
        return p.exp() - q.exp() if method.measure == "prob" else p - q

    t0 = time.perf_counter()
    with _installed(model):
        ref_logits, captures = captured_logits(model, x, T)
        scores = _information_rows(model, x, captures, ref_logits, vec, n, method.batch_size, measure, dt)
        fe = masked_runs_fe(N, n - 1, method.batch_size, ref_logits.shape[-1], can_share_prefix(captures),
                            model_attention_share(model, N))
    cost = Cost(forward_passes=1 + N, forward_equivalents=FE_FORWARD + fe,
                seconds={"occlusion": time.perf_counter() - t0})
    return [_plain_row(method, full, n, t, scores[t, : n + t].float(), cost=c)
            for t, c in enumerate(split_cost(cost, T, N))]


def _plain_row(method: Any, full: torch.Tensor, n: int, t: int, scores: torch.Tensor,
               extra: dict | None = None, cost: Cost | None = None) -> AttributionResult:
    """Row t as :meth:`heat_module.attribution.base.Attributor._attribute_batch` builds a baseline's result."""
    ids = full[: n + t]
    y = int(full[n + t])
    return AttributionResult(tokens=method.token_strings(ids), token_ids=ids.detach().cpu(),
                             target=method.token_strings(torch.tensor([y]))[0], target_id=y,
                             scores=scores.detach().to(score_dtype(scores.dtype)).cpu(), method=method.name,
                             config=method.options(), extra=extra or {}, cost=cost or Cost())


def gated_rows(method: Any, full: torch.Tensor, n: int) -> list[AttributionResult]:
    """``gated:*`` rows: every row's gate M from one captured forward of the longest prefix; the inner method's
    rows shared when it allows it (:func:`shared_rows`), else one call per row."""
    model = method.model
    T = full.numel() - n
    N = n + T - 1
    t0 = time.perf_counter()
    inner = shared_rows(method.inner, full, n)
    if inner is None:
        inner = [method.inner.attribute(full[: n + t].to(method.device), int(full[n + t])) for t in range(T)]
    t1 = time.perf_counter()
    ids = full[:N].to(method.device)
    with torch.no_grad():
        x = embed(model, ids[None]).detach()
    with _installed(model):
        _, captures = captured_logits(model, x, 1)
    m = shared_transition(captures, n, T, sink=method.sink)
    t2 = time.perf_counter()
    gate_cost = split_cost(Cost(forward_passes=1, forward_equivalents=FE_FORWARD, seconds={"gate": t2 - t1}), T, N)
    rows = []
    for t, res in enumerate(inner):
        scores = res.scores.to(m.device).float() * m[t, : n + t].float()
        extra = {**{k: v for k, v in res.extra.items() if isinstance(v, (int, float))},
                 "inner_seconds": (t1 - t0) / T, "gate_seconds": (t2 - t1) / T}
        cost = Cost.from_dict(res.cost.to_dict() if isinstance(res.cost, Cost) else res.cost).add(gate_cost[t])
        rows.append(_plain_row(method, full, n, t, scores, extra, cost))
    return rows
