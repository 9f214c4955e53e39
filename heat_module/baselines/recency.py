"""A geometric recency prior: score_i = rate^(n − 1 − i), no model.

The last context token gets 1, the one before it ``rate``, and so on; ``rate = 0.5`` is the fixed prior, ``rate = 1``
is uniform. Like ``last_token`` it is a floor: a metric on which it scores as well as a method rewards position, not
the choice of words.

The rate can be fitted on a held-apart split instead of fixed (:func:`fit_rate`): the rate whose normalised prior is
closest in least squares to a reference method's normalised positive scores, averaged over examples. Rank measures
(Spearman ρ) cannot fit it — every rate in (0, 1) orders positions the same way — so the fit matches the profile's
shape, its share per position. Fit on results that are not the examples evaluated::

    rate = fit_rate(reference_results_on_held_apart_prompts)
    prior = build("recency", model, tok, rate=rate)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import register_method
from heat_module.baselines.position_prior import positive_shares
from heat_module.result import AttributionResult

#: the rates :func:`fit_rate` tries by default: 0.01, 0.02, ..., 1.00
RATE_GRID = tuple(round(0.01 * k, 2) for k in range(1, 101))


def recency_scores(n: int, rate: float) -> torch.Tensor:
    """(n,) rate^(n − 1 − i), float64."""
    return torch.tensor(float(rate), dtype=torch.float64) ** torch.arange(n - 1, -1, -1, dtype=torch.float64)


def fit_rate(results: Sequence[AttributionResult | torch.Tensor], rates: Sequence[float] = RATE_GRID) -> float:
    """The rate of ``rates`` minimising the mean over examples of Σ_i (p_i(rate) − s_i)², with p the prior divided by
    its sum and s the example's positive scores divided by their sum (examples without positive mass left out); ties
    go to the first rate. ``results``: a reference method's results (or (n,) scores) on a held-apart split.

    Raises:
        ValueError: when no result has positive mass, or a rate is outside (0, 1].
    """
    if not rates or any(not 0.0 < float(r) <= 1.0 for r in rates):
        raise ValueError(f"Expected rates in (0, 1], got {list(rates)!r}")
    shares = [s for s in (positive_shares(r) for r in results) if s is not None]
    if not shares:
        raise ValueError(f"Expected results with positive scores to fit the rate, got none of {len(results)}")
    losses = []
    for rate in rates:
        loss = 0.0
        for s in shares:
            p = recency_scores(s.numel(), rate)
            loss += float(((p / p.sum() - s) ** 2).sum())
        losses.append(loss / len(shares))
    return float(rates[min(range(len(rates)), key=losses.__getitem__)])


@register_method("recency", title="Recency prior (no model)", uses_model=False,
                 evaluation={"recency": ("Recency prior 0.5^(n−1−i) (no model)", {"rate": 0.5})})
class Recency(Attributor):
    """score_i = rate^(n − 1 − i).

    Options:
        rate: in (0, 1] (default 0.5); :func:`fit_rate` fits it on a held-apart split.
    """

    def __init__(self, model: nn.Module, tokenizer: object | None = None, rate: float = 0.5, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < float(rate) <= 1.0:
            raise ValueError(f"Expected rate in (0, 1], got {rate!r}")
        self.rate = float(rate)

    def options(self) -> dict:
        return {"rate": self.rate}

    def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
        row = recency_scores(input_ids.shape[1], self.rate).float().to(input_ids.device)
        return row.expand(input_ids.shape[0], -1).clone(), None
