"""The average attribution by distance from the end, learned from any method's results on a held-apart split.

:func:`fit_position_prior` turns results into a profile: for each distance d = n − 1 − i from the last context token,
the mean over the examples long enough to have that distance of the token's share of the example's positive mass
(scores clipped at 0 and divided by their sum; an example without positive mass is left out). :class:`PositionPrior`
scores a context with the profile: score_i = profile[n − 1 − i], and profile[-1] for positions farther than the
profile reaches. It reads no model: it is what a method gives "on average by position", so a method's metric minus
this prior's on the same example is the part of the metric that position alone does not explain.

Fit on results that are not the examples evaluated (a held-apart split), else the prior sees the test data::

    profile = fit_position_prior(held_apart_results)           # list[float], index = distance from the end
    prior = build("position_prior", model, tok, profile=profile)  # or profile="profile.json" (a JSON list)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import register_method
from heat_module.result import AttributionResult


def positive_shares(scores: torch.Tensor | AttributionResult) -> torch.Tensor | None:
    """(n,) scores (or a result's) clipped at 0 and divided by their sum, float64; ``None`` without positive mass."""
    s = scores.scores if isinstance(scores, AttributionResult) else torch.as_tensor(scores)
    s = s.detach().double().flatten().cpu().clamp_min(0.0)
    total = float(s.sum())
    return s / total if total > 0 and torch.isfinite(s).all() else None


def fit_position_prior(results: Sequence[AttributionResult | torch.Tensor]) -> list[float]:
    """The profile (index d = distance from the last context token) of ``results`` (module docstring).

    Raises:
        ValueError: when no result has positive mass.
    """
    sums: list[float] = []
    counts: list[int] = []
    for item in results:
        shares = positive_shares(item)
        if shares is None:
            continue
        for d, value in enumerate(shares.flip(0).tolist()):
            if d == len(sums):
                sums.append(0.0)
                counts.append(0)
            sums[d] += value
            counts[d] += 1
    if not sums:
        raise ValueError(f"Expected results with positive scores to fit a position prior, got none of {len(results)}")
    return [s / c for s, c in zip(sums, counts)]


@register_method("position_prior", title="Position prior (learned, no model)", uses_model=False,
                 example_options={"profile": [0.5, 0.3, 0.2]})
class PositionPrior(Attributor):
    """score_i = profile[min(n − 1 − i, len(profile) − 1)].

    Options:
        profile: the profile of :func:`fit_position_prior` (a list of non-negative floats, first = last token), or
            the path of a JSON file holding that list.
    """

    def __init__(self, model: nn.Module, tokenizer: object | None = None,
                 profile: Sequence[float] | str | Path | None = None, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        if isinstance(profile, (str, Path)):
            profile = json.loads(Path(profile).read_text(encoding="utf-8"))
        values = torch.as_tensor(profile if profile is not None else [], dtype=torch.float64).flatten()
        if profile is None or values.numel() == 0 or not torch.isfinite(values).all() or (values < 0).any():
            raise ValueError("Expected profile to be a non-empty list of non-negative floats (fit_position_prior on "
                             f"a held-apart split) or the path of a JSON file holding one, got {profile!r}")
        self.profile = values

    def options(self) -> dict:
        return {"profile": self.profile.tolist()}

    def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
        n = input_ids.shape[1]
        distance = torch.arange(n - 1, -1, -1).clamp_max(self.profile.numel() - 1)
        row = self.profile[distance].float().to(input_ids.device)
        return row.expand(input_ids.shape[0], n).clone(), None
