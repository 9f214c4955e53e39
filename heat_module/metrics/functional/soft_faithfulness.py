"""Soft normalised comprehensiveness and sufficiency (Soft-NC, Soft-NS), functional forms (classes in
:mod:`heat_module.metrics.soft_faithfulness`).

Zhao & Aletras 2023 ("Incorporating attribution importance for improving faithfulness metrics", ACL), as adapted
to generative LMs by ReAGent (Zhao & Shan 2024, arXiv 2402.00794); definitions fixed in docs/design.md.

``definition="reagent"`` (default). Scores s (real tokens only) are clipped at 0 and normalised to sum to one.
A mask keeps every embedding *element* of token i independently with probability s_i (sufficiency) or 1 − s_i
(comprehensiveness) and zeroes it otherwise. With q the original next-token distribution, p_0 the one with every
real token's embedding zeroed, and D(p, q) = Σ_v (√p_v − √q_v)² / √2 over the full vocabulary,

    Soft-NS = max(0, 1 − D(p_s, q) / D(p_0, q)),      Soft-NC = D(p_c, q) / D(p_0, q),

averaged over ``num_masks`` masks per example, then over examples. The mask draws u ~ U[0, 1)^(num_masks, n, d)
come from the per-example generator (``common.example_generator``); element (m, i, j) is kept when
u[m, i, j] < s_i (NS) or < 1 − s_i (NC). The same draws serve NC and NS, the method's scores and the random
baseline (common random numbers). Draw order per example: random scores torch.rand(n_real), then
u torch.rand(num_masks, n_real, d).

``definition="heta"`` reproduces the definition in the HEAT authors' code: with the real tokens ranked by their
raw score (ties: earlier position first), NC = mean over k ∈ {10, 20, 30}% of KL(q ‖ p with the top-k% tokens'
embeddings zeroed) and NS = −mean over the same k of KL(q ‖ p with only the top-k% kept, all other real tokens
zeroed). It is deterministic (``num_masks`` is unused). The top-k% count is ceil(k·n/100), at least one token
(our rounding; the authors' code was not available to check it).

Random baseline (ReAGent's summary ln(metric / metric of random scores)): each example is also scored with random
scores r ~ U[0, 1)^n from the per-example generator, normalised to sum one. ``compute`` returns, for each kind
(``nc``, ``ns``), ``soft_<kind>`` (mean over examples), ``soft_<kind>_random`` and
``soft_<kind>_log_ratio`` = ln(soft_<kind> / soft_<kind>_random) of the means (NaN or ±inf when a mean is 0 or
the two have opposite signs). The heta NS is ≤ 0 by construction, so there both means are negative and a better
method gives a log ratio below 0: read it with the sign flipped.

``scores_transform`` separates concentration from correctness: a score vector with all its mass on one
token removes that token whole and so gains on Soft-NC/NS by being peaked. With ``"rank"`` the scores are replaced
by their normalised ranks (r_i / Σ r, a linear ramp: only the order counts), with ``"entropy"`` by the distribution
of the same order with entropy ``entropy_fraction``·ln n (:func:`heat_module.metrics.functional.common.
entropy_scores`); the random baseline's scores get the same transform. ``"none"`` is ReAGent's definition.

Over the context (:mod:`heat_module.metrics.functional.context`): with ``exclude_last=k`` the final k real tokens
(and any ``protected`` positions) are never masked; "real tokens" above then means the context tokens: the scores
are clipped and renormalised over them (the random scores too), p_0 zeroes every context token and keeps the
final ones, and the heta top-k% counts are taken of the context. The draws are u ~ U[0, 1)^(num_masks, n_ctx, d)
and random scores U[0, 1)^n_ctx from the same per-example generator (seeded by all real tokens), so with
``exclude_last=0`` and nothing protected the values are exactly the standard ones. A score vector with all its
mass on the excluded tokens leaves nothing on the context and is scored as uniform scores are.

Perturbed copies of the whole batch are pushed through ``forward_fn`` in chunks of ``batch_size`` rows: two
reference rows per example (original, all zeroed; one for heta) in a first pass, then all masked copies.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from heat_module.heat.information import kl_divergence
from heat_module.metrics.functional.common import (
    EPS,
    SCORES_TRANSFORMS,
    Block,
    ForwardFn,
    IndexSpec,
    ScoresTransform,
    check_model_batch,
    chunked_forward,
    example_generator,
    hellinger_sq,
    ranking,
    topk_count,
    transform_scores,
)
from heat_module.metrics.functional.context import check_exclude_last, context_mask

SoftKind = Literal["nc", "ns"]
SoftDefinition = Literal["reagent", "heta"]
HETA_PERCENTS = (10, 20, 30)


@dataclass(frozen=True)
class SoftOptions:
    """The options of :func:`soft_faithfulness` (documented there), checked on construction."""

    kinds: Sequence[SoftKind] = ("nc", "ns")
    definition: SoftDefinition = "reagent"
    num_masks: int = 10
    seed: int = 0
    batch_size: int = 64
    random_baseline: bool = True
    scores_transform: ScoresTransform = "none"
    entropy_fraction: float = 0.8
    exclude_last: int = 0

    def __post_init__(self) -> None:
        check_exclude_last(self.exclude_last)
        if self.scores_transform not in SCORES_TRANSFORMS:
            raise ValueError(
                f"Expected scores_transform to be one of {list(SCORES_TRANSFORMS)}, got {self.scores_transform!r}"
            )
        if not 0.0 < float(self.entropy_fraction) <= 1.0:
            raise ValueError(f"Expected entropy_fraction in (0, 1], got {self.entropy_fraction!r}")
        kinds = tuple(self.kinds)
        object.__setattr__(self, "kinds", kinds)
        if not kinds or any(k not in ("nc", "ns") for k in kinds) or len(set(kinds)) != len(kinds):
            raise ValueError(f"Expected kinds to be distinct values of ('nc', 'ns'), got {kinds}")
        if self.definition not in ("reagent", "heta"):
            raise ValueError(f"Expected definition 'reagent' or 'heta', got {self.definition!r}")
        if self.num_masks < 1:
            raise ValueError(f"Expected num_masks >= 1, got {self.num_masks}")

    @property
    def state_keys(self) -> list[str]:
        """``soft_<kind>`` (and ``soft_<kind>_random`` with the random baseline) for each kind."""
        keys = []
        for k in self.kinds:
            keys.append(f"soft_{k}")
            if self.random_baseline:
                keys.append(f"soft_{k}_random")
        return keys


def soft_faithfulness_values(
    scores: torch.Tensor, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, forward_fn: ForwardFn,
    protected: IndexSpec | None = None, **options: Any,
) -> dict[str, torch.Tensor]:
    """Per-example Soft-NC / Soft-NS values.

    Args:
        scores: (batch, n) attribution scores (any scale; padding ignored).
        inputs_embeds: (batch, n, d) left-padded input embeddings.
        attention_mask: (batch, n) 1 on real tokens, or ``None``.
        forward_fn: ``f(inputs_embeds (rows, n, d), attention_mask (rows, n)) -> logits (rows, V)``.
        protected: positions never masked (bool (batch, n) or per-example index lists), or ``None``.
        options: the keyword options of :func:`soft_faithfulness` (``kinds``, ``definition``, ``num_masks``,
            ``seed``, ``batch_size``, ``random_baseline``, ``scores_transform``, ``entropy_fraction``,
            ``exclude_last``).
    Returns:
        ``{"soft_<kind>": (batch,), "soft_<kind>_random": (batch,)}`` for each kind (``_random`` only with
        ``random_baseline``), fp32.
    """
    opts = SoftOptions(**options)
    real, mask = check_model_batch(scores, inputs_embeds, attention_mask)
    ctx = context_mask(real, opts.exclude_last, protected)
    batch, n, d = inputs_embeds.shape
    device = inputs_embeds.device
    scores = scores.to(device)
    variants = ["method", "random"] if opts.random_baseline else ["method"]

    with torch.no_grad():
        # pass 1: the original prediction q (and p_0 for "reagent") of every example
        def reference_blocks() -> Iterator[Block]:
            for b in range(batch):
                rows = [inputs_embeds[b]]
                if opts.definition == "reagent":
                    zeroed = inputs_embeds[b].clone()
                    zeroed[ctx[b]] = 0.0
                    rows.append(zeroed)
                x = torch.stack(rows)
                yield x, mask[b].expand(len(rows), n), lambda logp: logp

        refs = chunked_forward(forward_fn, reference_blocks(), opts.batch_size)
        log_q = torch.stack([r[0] for r in refs])  # (batch, V)
        d0 = torch.stack([hellinger_sq(r[1], r[0]) for r in refs]) if opts.definition == "reagent" else None

        # pass 2: all perturbed copies, reduced block by block
        keys: list[tuple[int, str, str]] = []

        def perturbed_blocks() -> Iterator[Block]:
            for b in range(batch):
                g = example_generator(opts.seed, inputs_embeds[b, real[b]])  # seeded by every real token
                x_ctx = inputs_embeds[b, ctx[b]]  # (n_ctx, d): the tokens that may be masked
                n_ctx = x_ctx.shape[0]
                raw = {"method": scores[b, ctx[b]].float(), "random": torch.rand(n_ctx, generator=g, device=device)}
                if opts.definition == "reagent":
                    u = torch.rand(opts.num_masks, n_ctx, d, generator=g, device=device)
                for variant in variants:
                    for kind in opts.kinds:
                        if opts.definition == "reagent":
                            s = transform_scores(raw[variant], opts.scores_transform, opts.entropy_fraction)
                            keep_prob = s if kind == "ns" else 1.0 - s
                            x = inputs_embeds[b].expand(opts.num_masks, n, d).clone()
                            x[:, ctx[b]] = x_ctx * (u < keep_prob[None, :, None])
                            reduce = _reagent_reducer(kind, log_q[b], d0[b])
                        else:
                            x = _heta_rows(inputs_embeds[b], ctx[b], raw[variant], kind)
                            reduce = _heta_reducer(kind, log_q[b])
                        keys.append((b, variant, kind))
                        yield x, mask[b].expand(len(x), n), reduce

        values = chunked_forward(forward_fn, perturbed_blocks(), opts.batch_size)

    out = {key: torch.zeros(batch, dtype=torch.float32, device=device) for key in opts.state_keys}
    for (b, variant, kind), v in zip(keys, values):
        out[f"soft_{kind}" + ("_random" if variant == "random" else "")][b] = v
    return out


def _reagent_reducer(kind: str, log_q: torch.Tensor, d0: torch.Tensor):
    def reduce(log_p: torch.Tensor) -> torch.Tensor:  # (num_masks, V) -> ()
        ratio = hellinger_sq(log_p, log_q) / d0.clamp_min(EPS)
        return ratio.mean() if kind == "nc" else (1.0 - ratio).clamp_min(0.0).mean()

    return reduce


def _heta_rows(x: torch.Tensor, ctx: torch.Tensor, s: torch.Tensor, kind: str) -> torch.Tensor:
    """(n, d) one example, (n, ) bool context, (n_ctx,) raw scores -> (len(HETA_PERCENTS), n, d): the top-k%
    context tokens zeroed (nc) or only they kept, the other context tokens zeroed (ns)."""
    pos = ctx.nonzero().flatten()
    order = pos[ranking(s)]
    rows = []
    for pct in HETA_PERCENTS:
        top = order[: topk_count(pct, len(pos))]
        row = x.clone()
        if kind == "nc":
            row[top] = 0.0
        else:
            drop = ctx.clone()
            drop[top] = False
            row[drop] = 0.0
        rows.append(row)
    return torch.stack(rows)


def _heta_reducer(kind: str, log_q: torch.Tensor):
    def reduce(log_p: torch.Tensor) -> torch.Tensor:  # (len(HETA_PERCENTS), V) -> ()
        kl = kl_divergence(log_q, log_p).mean()  # KL(q ‖ p): q the original prediction, p the perturbed one
        return kl if kind == "nc" else -kl

    return reduce


def soft_faithfulness_update(
    scores: torch.Tensor, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, forward_fn: ForwardFn,
    protected: IndexSpec | None = None, **options: Any,
) -> tuple[dict[str, torch.Tensor], int]:
    """Running totals: ``({key: sum over the batch (scalar)}, number of examples)``; arguments as
    :func:`soft_faithfulness_values`."""
    values = soft_faithfulness_values(scores, inputs_embeds, attention_mask, forward_fn, protected, **options)
    return {k: v.sum() for k, v in values.items()}, inputs_embeds.shape[0]


def soft_faithfulness_compute(
    sums: dict[str, torch.Tensor], total: torch.Tensor | int, kinds: Sequence[SoftKind], random_baseline: bool
) -> dict[str, torch.Tensor]:
    """Means over examples, and ln(mean / mean of random scores) per kind."""
    out = {k: v / total for k, v in sums.items()}
    if random_baseline:
        for k in kinds:
            out[f"soft_{k}_log_ratio"] = torch.log(out[f"soft_{k}"] / out[f"soft_{k}_random"])
    return out


def soft_faithfulness(
    scores: torch.Tensor,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    forward_fn: ForwardFn,
    kinds: Sequence[SoftKind] = ("nc", "ns"),
    definition: SoftDefinition = "reagent",
    num_masks: int = 10,
    seed: int = 0,
    batch_size: int = 64,
    random_baseline: bool = True,
    scores_transform: ScoresTransform = "none",
    entropy_fraction: float = 0.8,
    exclude_last: int = 0,
    protected: IndexSpec | None = None,
) -> dict[str, torch.Tensor]:
    """Soft-NC and/or Soft-NS of a batch (module docstring), sharing the reference forwards.

    Args:
        scores: (batch, n) attribution scores from any method.
        inputs_embeds: (batch, n, d) left-padded input embeddings.
        attention_mask: (batch, n) or ``None``.
        forward_fn: from ``heat_module.lm.forward.forward_fn``.
        kinds: which of ``"nc"``, ``"ns"``.
        definition: ``"reagent"`` (default) or ``"heta"`` (the authors' code).
        num_masks: Bernoulli masks per example (``"reagent"`` only).
        seed: seed of the per-example generators.
        batch_size: rows per forward call.
        random_baseline: also score random scores of each example and report the log ratio.
        scores_transform: ``"none"`` (ReAGent), ``"rank"`` or ``"entropy"`` (module docstring).
        entropy_fraction: the entropy of ``"entropy"`` scores as a fraction of ln n.
        exclude_last: how many final real tokens are never masked; the scores are renormalised over the rest
            (0: ReAGent's definition over every real token).
        protected: further positions never masked: a bool (batch, n) mask or per-example index lists counted from
            the first real token (e.g. the query span of a templated prompt).
    Returns:
        ``{"soft_nc", "soft_nc_random", "soft_nc_log_ratio", "soft_ns", ...}``: scalar tensors.

    Example:
        >>> from heat_module.testing import tiny_metric_example
        >>> forward_fn, x, scores, target = tiny_metric_example()  # "the cat sat on the" -> "road", fixed scores
        >>> from heat_module.metrics.functional import soft_faithfulness
        >>> values = soft_faithfulness(scores, x, None, forward_fn, num_masks=4, random_baseline=False)
        >>> sorted(values)
        ['soft_nc', 'soft_ns']
    """
    sums, total = soft_faithfulness_update(
        scores, inputs_embeds, attention_mask, forward_fn, protected, kinds=kinds, definition=definition,
        num_masks=num_masks, seed=seed, batch_size=batch_size, random_baseline=random_baseline,
        scores_transform=scores_transform, entropy_fraction=entropy_fraction, exclude_last=exclude_last,
    )
    return soft_faithfulness_compute(sums, total, kinds, random_baseline)


def soft_nc(scores: torch.Tensor, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None,
            forward_fn: ForwardFn, **options: Any) -> dict[str, torch.Tensor]:
    """Soft-NC: ``{"soft_nc", "soft_nc_random", "soft_nc_log_ratio"}`` (see :func:`soft_faithfulness`; options by
    keyword: ``definition``, ``num_masks``, ``seed``, ``batch_size``, ``random_baseline``, ``exclude_last``,
    ``protected``, ...).

    Example:
        >>> from heat_module.metrics.functional import soft_nc
        >>> from heat_module.testing import tiny_metric_example
        >>> forward_fn, x, scores, _ = tiny_metric_example()  # "the cat sat on the" -> "road", fixed scores
        >>> values = soft_nc(scores, x, None, forward_fn, num_masks=4)
        >>> sorted(values)  # the method's value, the random scores' and ln(method / random)
        ['soft_nc', 'soft_nc_log_ratio', 'soft_nc_random']
    """
    return soft_faithfulness(scores, inputs_embeds, attention_mask, forward_fn, ("nc",), **options)


def soft_ns(scores: torch.Tensor, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None,
            forward_fn: ForwardFn, **options: Any) -> dict[str, torch.Tensor]:
    """Soft-NS: ``{"soft_ns", "soft_ns_random", "soft_ns_log_ratio"}`` (see :func:`soft_faithfulness`; options by
    keyword: ``definition``, ``num_masks``, ``seed``, ``batch_size``, ``random_baseline``, ``exclude_last``,
    ``protected``, ...).

    Example:
        >>> from heat_module.metrics.functional import soft_ns
        >>> from heat_module.testing import tiny_metric_example
        >>> forward_fn, x, scores, _ = tiny_metric_example()
        >>> bool(soft_ns(scores, x, None, forward_fn, num_masks=4, random_baseline=False)["soft_ns"] >= 0)
        True
    """
    return soft_faithfulness(scores, inputs_embeds, attention_mask, forward_fn, ("ns",), **options)
