"""Helpers the functional metrics share: input checks, score normalisation, per-example generators, distances, the
chunked forward that pushes many perturbed copies of a batch through the model in few calls, and P(y) of copies with
tokens removed in score-rank order (AOPC, ABPC). (The base class of
the metric classes is :class:`heat_module.metrics.base.SumCountMetric`.)

Conventions (docs/design.md, "Metrics"):

- A batch is left padded: ``attention_mask`` (batch, n) is 1 on real tokens, 0 on padding; ``None`` means
  every position is real. Padding positions are never perturbed and always get score 0.
- "Normalised scores" are the scores clipped at 0 and divided by their sum over the real tokens. A row whose
  clipped scores sum to 0 (no positive evidence at all) becomes uniform over its real tokens.
- Randomness is drawn from a ``torch.Generator`` seeded per example from ``seed`` and a fingerprint of the
  example's real-token embeddings (:func:`example_generator`). A metric value therefore depends only on the
  example and the seed, not on batch composition, update order or the DDP rank it lands on; and every
  attribution method scored on the same example sees the same random draws (common random numbers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal, get_args

import torch

from heat_module.hashing import digest_seed

ForwardFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
IndexSpec = torch.Tensor | Sequence[Sequence[int]]
EPS = 1e-12  #: floor of the denominators (D(p_0, q) of Soft-NC/NS)


def check_batch(
    scores: torch.Tensor | None,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    target_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Validate shapes and return the (batch, n) bool mask of real tokens.

    Args:
        scores: (batch, n) or ``None``.
        inputs_embeds: (batch, n, d).
        attention_mask: (batch, n) or ``None`` (all real).
        target_ids: (batch,) or ``None``.
    """
    if inputs_embeds.dim() != 3:
        raise ValueError(f"Expected inputs_embeds of shape (batch, n, d), got {tuple(inputs_embeds.shape)}")
    batch, n, _ = inputs_embeds.shape
    if scores is not None and tuple(scores.shape) != (batch, n):
        raise ValueError(f"Expected scores of shape {(batch, n)}, got {tuple(scores.shape)}")
    return real_mask(attention_mask, batch, n, inputs_embeds.device, target_ids)


def check_model_batch(
    scores: torch.Tensor | None,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    target_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`check_batch` for the metrics that call a model: ``(real, mask)``, both (batch, n).

    ``real`` is the bool mask of real tokens; ``mask`` the attention mask to hand to the model (``attention_mask``
    itself, or ``real`` as long when it is ``None``).
    """
    real = check_batch(scores, inputs_embeds, attention_mask, target_ids)
    return real, real.long() if attention_mask is None else attention_mask


def check_scores(scores: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Validate the (batch, n) scores of a metric without a model and return the (batch, n) bool mask of real
    tokens (``attention_mask`` (batch, n) or ``None``: all real)."""
    if scores.dim() != 2:
        raise ValueError(f"Expected scores of shape (batch, n), got {tuple(scores.shape)}")
    return real_mask(attention_mask, *scores.shape, scores.device)


def real_mask(
    attention_mask: torch.Tensor | None,
    batch: int,
    n: int,
    device: torch.device | str,
    target_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """(batch, n) bool mask of real tokens from an optional attention mask; validates shapes."""
    if attention_mask is None:
        real = torch.ones(batch, n, dtype=torch.bool, device=device)
    else:
        if tuple(attention_mask.shape) != (batch, n):
            raise ValueError(f"Expected attention_mask of shape {(batch, n)}, got {tuple(attention_mask.shape)}")
        real = attention_mask.bool()
    if target_ids is not None and tuple(target_ids.shape) != (batch,):
        raise ValueError(f"Expected target_ids of shape {(batch,)}, got {tuple(target_ids.shape)}")
    empty = (~real.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise ValueError(f"Expected at least one real token per example, got none in rows {empty.tolist()}")
    return real


def normalize_scores(scores: torch.Tensor) -> torch.Tensor:
    """(n,) scores of the real tokens -> (n,) fp32, clipped at 0 and summing to one (uniform if all ≤ 0)."""
    s = scores.float().clamp_min(0.0)
    total = s.sum()
    if total <= 0:
        return torch.full_like(s, 1.0 / s.numel())
    return s / total


ScoresTransform = Literal["none", "rank", "entropy"]
SCORES_TRANSFORMS: tuple[str, ...] = get_args(ScoresTransform)


def mid_ranks(values: torch.Tensor) -> torch.Tensor:
    """(m,) values -> (m,) fp64 mid-ranks: the 1-based rank of each value from the lowest, tied values sharing the
    mean of their ranks (what Spearman's ρ correlates). The ranks are whole or half numbers, exact in fp64. A NaN
    value gets a NaN rank and leaves the ranks of the others as they are among themselves.

    >>> mid_ranks(torch.tensor([0.3, 0.1, 0.3, 0.2]))
    tensor([3.5000, 1.0000, 3.5000, 2.0000], dtype=torch.float64)
    """
    if values.dim() != 1:
        raise ValueError(f"Expected a vector of values, got shape {tuple(values.shape)}")
    order = torch.argsort(values, stable=True)
    ranks = torch.empty(len(values), dtype=torch.float64, device=values.device)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64, device=values.device)
    _, group = torch.unique(values, return_inverse=True)
    sums = torch.zeros(int(group.max()) + 1 if len(values) else 0, dtype=torch.float64, device=values.device)
    sums.index_add_(0, group, ranks)
    out = (sums / torch.bincount(group).to(torch.float64))[group]
    return out.masked_fill(values.isnan(), math.nan)


def rank_scores(scores: torch.Tensor) -> torch.Tensor:
    """(n,) scores -> (n,) fp32 normalised ranks summing to one: r_i / Σ_j r_j with r_i the 1-based rank of s_i
    from the lowest (tied values share the mean of their ranks, :func:`mid_ranks`). Only the ordering of the scores
    is kept, so every method gets the same concentration (a linear ramp): a metric on these scores measures
    correctness, not peakedness."""
    r = mid_ranks(scores.float()).float()
    return r / r.sum()


def entropy_scores(scores: torch.Tensor, fraction: float = 0.8, iters: int = 60) -> torch.Tensor:
    """(n,) scores -> (n,) fp32 distribution with entropy ``fraction``·ln n and the same order as the scores.

    p(t) = softmax(t·z) with z the scores standardised to mean 0 and unit standard deviation; t ≥ 0 is found by
    bisection so that H(p(t)) = fraction·ln n (H decreases monotonically in t from ln n at t = 0). Constant scores
    (no order) give the uniform distribution. Every method then has the same concentration.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"Expected fraction in (0, 1], got {fraction}")
    v = scores.double()
    n = v.numel()
    sd = v.std(unbiased=False) if n > 1 else v.new_tensor(0.0)
    if n < 2 or float(sd) == 0.0:
        return torch.full((n,), 1.0 / max(n, 1), dtype=torch.float32, device=scores.device)
    z = (v - v.mean()) / sd
    goal = fraction * math.log(n)

    def entropy(t: float) -> float:
        logp = torch.log_softmax(t * z, 0)
        return float(-(logp.exp() * logp).sum())

    lo, hi = 0.0, 1.0
    while entropy(hi) > goal and hi < 1e6:
        hi *= 2.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if entropy(mid) > goal else (lo, mid)
    return torch.softmax(0.5 * (lo + hi) * z, 0).float()


def transform_scores(scores: torch.Tensor, transform: str = "none", fraction: float = 0.8) -> torch.Tensor:
    """(n,) scores -> (n,) fp32 summing to one: ``"none"`` :func:`normalize_scores` (clip at 0, sum one),
    ``"rank"`` :func:`rank_scores`, ``"entropy"`` :func:`entropy_scores` (entropy ``fraction``·ln n)."""
    if transform == "none":
        return normalize_scores(scores)
    if transform == "rank":
        return rank_scores(scores)
    if transform == "entropy":
        return entropy_scores(scores, fraction)
    raise ValueError(f"Expected scores_transform to be one of {list(SCORES_TRANSFORMS)}, got {transform!r}")


def normalize_batch(scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(batch, n) scores -> (batch, n) normalised over each row's real tokens; padding gets 0."""
    out = torch.zeros(scores.shape, dtype=torch.float32, device=scores.device)
    for b in range(scores.shape[0]):
        out[b, real[b]] = normalize_scores(scores[b, real[b]])
    return out


def example_seed(seed: int, real_embeds: torch.Tensor) -> int:
    """A 63-bit seed from ``seed`` and the fp32 bytes of one example's real-token embeddings (n_real, d)."""
    return digest_seed(seed, real_embeds.detach().float().contiguous().cpu().numpy().tobytes())


def example_generator(seed: int, real_embeds: torch.Tensor) -> torch.Generator:
    """The per-example ``torch.Generator`` (on ``real_embeds``' device) every metric draws from.

    Args:
        seed: the metric's seed.
        real_embeds: (n_real, d) the example's embeddings without padding.
    """
    g = torch.Generator(device=real_embeds.device)
    g.manual_seed(example_seed(seed, real_embeds))
    return g


def hellinger_sq(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """ReAGent's distance D(p, q) = Σ_v (√p_v − √q_v)² / √2 from log-probabilities (..., V) -> (...)."""
    return ((0.5 * log_p).exp() - (0.5 * log_q).exp()).pow(2).sum(-1) / 2**0.5


def topk_count(percent: float, n: int) -> int:
    """How many of n tokens the top ``percent``% are: ceil(percent·n/100), at least 1, at most n."""
    return max(1, min(n, math.ceil(percent * n / 100 - 1e-9)))


def ranking(scores: torch.Tensor) -> torch.Tensor:
    """(n,) scores -> (n,) positions from highest to lowest score (ties: earlier position first)."""
    return torch.sort(scores.float(), descending=True, stable=True).indices


def index_mask(spec: IndexSpec, real: torch.Tensor, name: str) -> torch.Tensor:
    """A (batch, n) bool mask from a bool tensor or from per-example index lists.

    Bool tensors are aligned with the (batch, n) inputs as given (padding included). Index lists count from the
    first real token of each example (positions in the unpadded example), as datasets store them.
    """
    batch, n = real.shape
    if isinstance(spec, torch.Tensor) and spec.dtype == torch.bool:
        if tuple(spec.shape) != (batch, n):
            raise ValueError(f"Expected {name} of shape {(batch, n)}, got {tuple(spec.shape)}")
        return spec.to(real.device) & real
    if len(spec) != batch:
        raise ValueError(f"Expected {name} as {batch} index lists or a bool (batch, n) mask, got {len(spec)} lists")
    out = torch.zeros(batch, n, dtype=torch.bool, device=real.device)
    for b, idx in enumerate(spec):
        pos = real[b].nonzero().flatten()
        idx = torch.as_tensor(idx, dtype=torch.long).flatten().to(real.device)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(pos)):
            raise ValueError(
                f"Expected {name} indices in [0, {len(pos)}) for example {b}, got {idx.tolist()}"
            )
        out[b, pos[idx]] = True
    return out


Block = tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


def chunked_forward(forward_fn: ForwardFn, blocks: Iterable[Block], batch_size: int) -> list[torch.Tensor]:
    """Run blocks of perturbed copies through ``forward_fn`` in calls of ``batch_size`` rows.

    Args:
        forward_fn: ``f(inputs_embeds (rows, n, d), attention_mask (rows, n)) -> logits (rows, V)``.
        blocks: ``(inputs_embeds (k, n, d), attention_mask (k, n), reduce)`` triples; all share n and d. Rows
            of consecutive blocks are packed together, so the number of calls is ceil(total rows / batch_size).
            Leading columns that are padding in every row of a call are dropped before the call (left padding
            and position ids from the mask make this exact), so short examples do not pay for long ones.
        batch_size: rows per forward call.
    Returns:
        ``[reduce(log_softmax(logits of that block's k rows) (k, V))]`` in block order.
    """

    def fn(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        first = int(m.bool().any(0).long().argmax())  # columns that are padding in every row are dropped
        return torch.log_softmax(forward_fn(x[:, first:], m[:, first:]).float(), dim=-1)

    reducers: list[Callable[[torch.Tensor], torch.Tensor]] = []

    def rows() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, m, reduce in blocks:
            reducers.append(reduce)
            yield x, m

    return chunked_apply(fn, rows(), batch_size, reducers)


def chunked_apply(
    fn: Callable[..., torch.Tensor],
    blocks: Iterable[tuple[torch.Tensor, ...]],
    batch_size: int,
    reducers: Sequence[Callable[[torch.Tensor], torch.Tensor]],
) -> list[torch.Tensor]:
    """Apply ``fn`` to the rows of many blocks, ``batch_size`` rows per call, and reduce each block's outputs.

    Args:
        fn: ``fn(*row_tensors (rows, ...)) -> (rows, ...)``.
        blocks: tuples of tensors with the same leading size k (> 0) per block; consumed lazily, so only about
            ``batch_size`` rows plus one block are held at a time.
        batch_size: rows per call.
        reducers: ``reducers[j]`` maps block j's outputs (k, ...) to its result; may grow while ``blocks`` is
            consumed (block j's reducer must exist once block j has been produced).
    Returns:
        One result per block, in block order.
    """
    if batch_size < 1:
        raise ValueError(f"Expected batch_size >= 1, got {batch_size}")
    results: list[torch.Tensor | None] = []
    sizes: list[int] = []
    pieces: dict[int, list[torch.Tensor]] = {}
    buf: list[list[torch.Tensor]] = []  # per field, the buffered row tensors
    buf_id: list[int] = []  # one block id per buffered row

    def flush(rows: int) -> None:
        fields = [torch.cat(f) if len(f) > 1 else f[0] for f in buf]
        out = fn(*(f[:rows] for f in fields))
        ids = buf_id[:rows]
        start = 0
        while start < rows:  # rows of one block are consecutive
            bid = ids[start]
            stop = start
            while stop < rows and ids[stop] == bid:
                stop += 1
            pieces.setdefault(bid, []).append(out[start:stop])
            if sum(len(p) for p in pieces[bid]) == sizes[bid]:
                parts = pieces.pop(bid)
                results[bid] = reducers[bid](torch.cat(parts) if len(parts) > 1 else parts[0])
            start = stop
        rest = len(buf_id) - rows
        buf[:] = [[f[rows:]] if rest else [] for f in fields]
        del buf_id[:rows]

    for block in blocks:
        k = len(block[0])
        if k == 0 or any(len(t) != k for t in block):
            sizes_seen = [len(t) for t in block]
            raise ValueError(f"Expected blocks of tensors with one non-zero leading size, got {sizes_seen}")
        bid = len(results)
        results.append(None)
        sizes.append(k)
        if not buf:
            buf[:] = [[] for _ in block]
        for f, t in zip(buf, block):
            f.append(t)
        buf_id.extend([bid] * k)
        while len(buf_id) >= batch_size:
            flush(batch_size)
    if buf_id:
        flush(len(buf_id))
    return results  # type: ignore[return-value]
