"""Sensitivity of attributions to embedding noise (HEAT paper appendix, eq. 19).

For each example, ``num_samples`` noisy copies X + ε, ε ~ N(0, δ² I) on every real token's embedding (padding is
never perturbed), are attributed by ``attribute_fn``; σ_i is the standard deviation (unbiased, over the samples)
of token i's score, and

    Sensitivity = (1/n) Σ_i σ_i        over the n real tokens,

averaged over examples. Lower is better. With ``normalize=True`` (default) each sample's scores are first
clipped at 0 and normalised to sum one over the real tokens, so methods with different score scales are
comparable; ``normalize=False`` uses the raw scores. The clean input itself is not among the samples. Noise comes
from the per-example generator (``common.example_generator``): torch.randn(num_samples, n_real, d) · δ.
All noisy copies of a batch are attributed in chunks of ``batch_size`` rows, with gradients enabled (so
gradient- and Hessian-based ``attribute_fn`` work inside a torchmetrics ``update``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from heat_module.metrics.functional.common import (
    check_model_batch,
    chunked_apply,
    example_generator,
    normalize_scores,
)

AttributeFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class SensitivityOptions:
    """The options of :func:`sensitivity` (documented there), checked on construction."""

    num_samples: int = 10
    delta: float = 0.01
    seed: int = 0
    batch_size: int = 16
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.num_samples < 2:
            raise ValueError(
                f"Expected num_samples >= 2 (a standard deviation needs two samples), got {self.num_samples}"
            )
        if self.delta < 0:
            raise ValueError(f"Expected delta >= 0, got {self.delta}")


def sensitivity_values(
    inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, target_ids: torch.Tensor | None,
    attribute_fn: AttributeFn, **options: Any,
) -> torch.Tensor:
    """(batch,) per-example mean over real tokens of the per-token score standard deviation.

    Args:
        inputs_embeds: (batch, n, d) left-padded embeddings.
        attention_mask: (batch, n) or ``None``.
        target_ids: (batch,) target ids handed to ``attribute_fn`` (repeated per sample), or ``None``.
        attribute_fn: ``f(inputs_embeds (rows, n, d), attention_mask (rows, n), target_ids (rows,) | None) ->
            scores (rows, n)``.
        options: the keyword options of :func:`sensitivity` (``num_samples``, ``delta``, ``seed``, ``batch_size``,
            ``normalize``).
    """
    opts = SensitivityOptions(**options)
    real, mask = check_model_batch(None, inputs_embeds, attention_mask, target_ids)
    batch, n, d = inputs_embeds.shape
    device = inputs_embeds.device
    reducers = []

    def blocks() -> Iterator[tuple[torch.Tensor, ...]]:
        for b in range(batch):
            with torch.no_grad():
                x_real = inputs_embeds[b, real[b]].detach()
                g = example_generator(opts.seed, x_real)
                noise = opts.delta * torch.randn(opts.num_samples, len(x_real), d, generator=g, device=device)
                x = inputs_embeds[b].detach().expand(opts.num_samples, n, d).clone()
                x[:, real[b]] = x_real + noise
            t = (torch.full((opts.num_samples,), -1, dtype=torch.long, device=device) if target_ids is None
                 else target_ids[b].expand(opts.num_samples))
            reducers.append(lambda s, rb=real[b]: _mean_std(s, rb, opts.normalize))
            yield x, mask[b].expand(opts.num_samples, n), t

    def fn(x: torch.Tensor, m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            scores = attribute_fn(x, m, None if target_ids is None else t)
        if tuple(scores.shape) != tuple(x.shape[:2]):
            raise ValueError(f"Expected attribute_fn to return scores of shape {tuple(x.shape[:2])}, "
                             f"got {tuple(scores.shape)}")
        return scores.detach().float()

    values = chunked_apply(fn, blocks(), opts.batch_size, reducers)
    return torch.stack(values)


def _mean_std(scores: torch.Tensor, real: torch.Tensor, normalize: bool) -> torch.Tensor:
    """(num_samples, n) scores of one example -> mean over real tokens of the per-token std over samples."""
    s = scores[:, real]
    if normalize:
        s = torch.stack([normalize_scores(row) for row in s])
    return s.std(dim=0, correction=1).mean()


def sensitivity_update(
    inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None, target_ids: torch.Tensor | None,
    attribute_fn: AttributeFn, **options: Any,
) -> tuple[torch.Tensor, int]:
    """Running totals: (sum of per-example sensitivity, number of examples); arguments as
    :func:`sensitivity_values`."""
    values = sensitivity_values(inputs_embeds, attention_mask, target_ids, attribute_fn, **options)
    return values.sum(), len(values)


def sensitivity_compute(sum_sensitivity: torch.Tensor, total: torch.Tensor | int) -> torch.Tensor:
    """Mean sensitivity over examples."""
    return sum_sensitivity / total


def sensitivity(
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None,
    target_ids: torch.Tensor | None,
    attribute_fn: AttributeFn,
    num_samples: int = 10,
    delta: float = 0.01,
    seed: int = 0,
    batch_size: int = 16,
    normalize: bool = True,
) -> torch.Tensor:
    """Mean sensitivity of a batch (module docstring): a scalar tensor.

    Args:
        inputs_embeds: (batch, n, d) left-padded embeddings.
        attention_mask: (batch, n) or ``None``.
        target_ids: (batch,) or ``None`` (then ``attribute_fn`` gets ``None``).
        attribute_fn: ``f(inputs_embeds (rows, n, d), attention_mask (rows, n), target_ids (rows,) | None) ->
            scores (rows, n)``.
        num_samples: noisy copies per example (≥ 2).
        delta: noise standard deviation δ (absolute, per embedding element).
        seed: seed of the per-example generators.
        batch_size: rows per ``attribute_fn`` call.
        normalize: normalise each sample's scores (clip at 0, sum one) before taking standard deviations.

    Example:
        >>> from heat_module.testing import tiny_metric_example
        >>> forward_fn, x, scores, target = tiny_metric_example()  # "the cat sat on the" -> "road", fixed scores
        >>> from heat_module.metrics.functional import sensitivity
        >>> value = sensitivity(x, None, target, lambda e, mask, t: e.norm(dim=-1), num_samples=2)
        >>> bool(value >= 0)
        True
    """
    sum_sensitivity, total = sensitivity_update(
        inputs_embeds, attention_mask, target_ids, attribute_fn, num_samples=num_samples, delta=delta, seed=seed,
        batch_size=batch_size, normalize=normalize,
    )
    return sensitivity_compute(sum_sensitivity, total)
