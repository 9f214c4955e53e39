"""The cost model every result's :class:`~heat_module.result.Cost` is counted in (docs/design.md "S", "Variants").

Cost model — forward-pass equivalents (FE)
------------------------------------------
``result.cost.forward_equivalents`` counts compute in units of one forward pass of the model over the full context
of n tokens (at the context lengths HEAT is used for, the linear layers dominate, so a pass over s tokens costs s/n;
the attention part grows as s·(prefix + s), which this neglects). Per unit of work (parameters frozen throughout):

- forward pass over s tokens: ``s/n``;
- input-gradient backward pass: ``FE_BACKWARD = 1`` (one matmul per linear layer, like the forward: weights are frozen
  so no weight gradients), so a gradient (forward + backward) is ``FE_GRADIENT = 2``;
- Hessian-vector product (either mode): ``FE_HVP = 4`` (the tangent forward and tangent backward double
  the gradient's cost: Pearlmutter 1994; Griewank & Walther's "HVP ≤ 4–5 × function" bound) — times s/n when only
  a suffix of s positions is recomputed on a frozen prefix cache;
- HEAT-LS: every pass above only runs k of the L decoder layers: × k/L (plus one full forward to read h^{L-k}).

These are nominal weights; ``benchmarks/bench_variants.py`` measures the actual seconds of a forward, a gradient and a
vmapped HVP on the same machine and prints the measured ratios next to them. Counts of passes are kept too:
``forward_passes``, ``hvps``, ``gradients``; ``seconds`` holds wall time per component. The exact FE of one
estimator (:func:`exact_fe`, :func:`information_fe`) follows its runs of consecutive positions
(:func:`hvp_runs`, :func:`heat_module.lm.capture.consecutive_runs`), since a run starting at i0 recomputes only
n - i0 positions. Floors that follow: exact I costs at least Σ_i (n − i)/n = (n + 1)/2 FE, so HEAT with Fisher S
and exact I costs at least (n + 1)/2 + 2 + K FE (the unperturbed forward, the Fisher forward and K backwards);
Fisher S + Fisher I on one set of factors (:func:`heat_module.heat.s_fisher.shared_fisher`) costs 2 + K FE at
short n; at long n its K backward passes count attention's n² part (:func:`fisher_fe`), and a budget in FE
(``max_forward_equivalents`` of the Fisher estimators) picks the largest K whose factors fit it
(:func:`fisher_topk_within`).
"""

from __future__ import annotations

import math

from torch import nn

from heat_module.lm.capture import consecutive_runs
from heat_module.lm.flops import attention_flops, linear_flops_per_token

FE_FORWARD = 1.0
FE_BACKWARD = 1.0
FE_GRADIENT = FE_FORWARD + FE_BACKWARD
FE_HVP = 4.0
#: one cotangent's share of a batched blockwise attention backward, in units of the forward's attention (four
#: products against the forward's two, plus the diagonal tiles; measured ≈ 2.5 on SmolLM2 at n = 1024, one thread)
FE_ATTENTION_BACKWARD = 2.5
#: time per FLOP of attention's scores and weighted values relative to the linear layers' in a forward (one CPU
#: thread; measured ≈ 2 on SmolLM2 at n = 1024: 28 % of the time for 14 % of the FLOPs)
ATTENTION_FLOP_WEIGHT = 2.0


def hvp_runs(positions: list[int], probes: int, n: int, share: bool, graph_cost: float = 2.0) -> list[list[int]]:
    """The runs of :func:`heat_module.heat.curvature.curvature_exact`: lists of positions whose (token, probe)
    tangents share one recomputation of positions [run[0], n) (and, reverse-over-reverse, one ``create_graph``
    gradient).

    With prefix sharing a run of c tokens starting at i0 (suffix s = n − i0) costs (a + c·m)·s HVP-units for c·m
    HVPs against m·(c·s − c(c−1)/2) if every token had its own suffix and no per-run overhead: the excess per token,
    a·s/c + m·(c−1)/2, is smallest at c = √(2·a·s/m) (a = ``graph_cost``: the per-run gradient in HVP units, ≈ 2
    measured on SmolLM2, CPU). Without sharing every run recomputes all n positions, so there is one run.
    """
    positions = sorted(positions)
    if not positions:
        return []
    if not share:
        return [positions]
    runs: list[list[int]] = []
    k = 0
    while k < len(positions):
        i0 = positions[k]
        c = max(1, round(math.sqrt(2.0 * graph_cost * (n - i0) / max(1, probes))))
        run = [p for p in positions[k:] if p < i0 + c]
        runs.append(run)
        k += len(run)
    return runs


def exact_fe(n: int, probes: int, chunk_size: int | None = None, share: bool = True) -> float:
    """FE of :func:`heat_module.heat.curvature.curvature_exact` over all n positions: n·m HVPs and one gradient per
    run (:func:`hvp_runs`); a run from i0 recomputes n − i0 positions. ``chunk_size`` (tangents per batched call) only
    changes memory, not work; it is accepted for callers that pass it."""
    total = 0.0
    for run in hvp_runs(list(range(n)), probes, n, share):
        start = run[0] if share else 0
        total += (len(run) * probes * FE_HVP + FE_GRADIENT) * (n - start) / n
    return total


def information_fe(n: int, batch_size: int, share: bool, attention: float = 0.0) -> float:
    """FE of :func:`heat_module.heat.information.information`: n masked forwards; a run starting at i0 recomputes
    the s = n − i0 positions of its suffix: (1 − a)·s/n of a forward's linear layers and a·(2sn − s²)/n² of its
    attention (the suffix's queries against every key up to them, (n² − i0²) of n² causal pairs), a = ``attention``,
    attention's share of one forward (:func:`attention_share`; 0 counts positions only)."""
    total = 0.0
    for run in consecutive_runs(list(range(n)), max(1, batch_size)):
        start = run[0] if share else 0
        s = n - start
        total += len(run) * FE_FORWARD * ((1.0 - attention) * s / n + attention * (2 * s * n - s * s) / (n * n))
    return total


def attention_share(linear_flops: float, attention_flops: float) -> float:
    """a, the fraction of one forward's time spent in attention's n² part: w·A / (L + w·A) with L the linear layers'
    FLOPs, A attention's (:mod:`heat_module.lm.flops`) and w = ``ATTENTION_FLOP_WEIGHT``."""
    weighted = ATTENTION_FLOP_WEIGHT * attention_flops
    return weighted / max(linear_flops + weighted, 1e-30)


def model_attention_share(model: nn.Module, n: int) -> float:
    """a(n), attention's share of one forward of ``model`` over n tokens: :func:`attention_share` of the FLOPs of
    :mod:`heat_module.lm.flops` (what the Fisher factors' and the exact I's masked runs' costs count)."""
    return attention_share(linear_flops_per_token(model) * n, attention_flops(model, n))


def forward_fe(model: nn.Module, s: int, n: int) -> float:
    """FE of one forward over s tokens in units of one over n (HEAT-WIN's windows, s < n): its linear layers and its
    attention's attended pairs, each weighted as in :func:`attention_share`: (L·s + w·A(s)) / (L·n + w·A(n)) —
    s/n when attention is negligible, less at long n, where the unit's attention grows like n²."""
    linear = linear_flops_per_token(model)
    weighted = ATTENTION_FLOP_WEIGHT
    return (linear * s + weighted * attention_flops(model, s)) / max(
        linear * n + weighted * attention_flops(model, n), 1e-30)


def first_order_backward_fe(share: float) -> float:
    """FE of one cotangent of a batched input-gradient backward: (1 − a)·``FE_BACKWARD`` for the linear layers plus
    a·``FE_ATTENTION_BACKWARD`` for attention (a = :func:`attention_share`)."""
    return (1.0 - share) * FE_BACKWARD + share * FE_ATTENTION_BACKWARD


def fisher_fe(k: int, share: float, recomputed: int = 0) -> float:
    """FE of the Fisher factors (:func:`heat_module.heat.fisher.fisher_factors`): one forward plus k cotangents of
    one batched backward, 1 + k·:func:`first_order_backward_fe` (= 1 + k when attention is negligible), plus the
    ``recomputed`` forwards of checkpointed layers (one per backward call)."""
    return FE_FORWARD * (1 + recomputed) + k * first_order_backward_fe(share)


def fisher_calls(k: int, chunk: int) -> int:
    """Backward calls of :func:`heat_module.heat.fisher.fisher_factors` for k cotangents, ``chunk`` per call:
    ⌈k / chunk⌉ (each recomputes one forward when the decoder layers are checkpointed)."""
    return -(-int(k) // max(1, int(chunk)))


def fisher_topk_within(budget: float, topk: int, share: float, chunk: int, checkpointed: bool) -> int:
    """The largest K ≤ ``topk`` whose Fisher factors cost at most ``budget`` FE by :func:`fisher_fe` (attention share
    a = ``share``; with ``checkpointed`` layers one recomputed forward per backward call, :func:`fisher_calls`);
    0 when not even K = 1 fits. The cost grows with K, so this is the last K that fits."""
    best = 0
    for k in range(1, int(topk) + 1):
        recomputed = fisher_calls(k, chunk) if checkpointed else 0
        if fisher_fe(k, share, recomputed) > budget:
            break
        best = k
    return best
