"""``position_prior``: the profile fitted by hand on results of different lengths, the method scoring with it (given
as a list or a JSON file, also through the evaluation's method specs), and its errors."""

from __future__ import annotations

import json

import pytest
import torch

from heat_module.attribution.registry import build
from heat_module.baselines.position_prior import fit_position_prior
from heat_module.evaluation.config import parse_methods
from heat_module.result import AttributionResult


def test_profile_by_hand():
    # shares by distance from the end: [0.5, 0.25, 0.25] and [0.6, 0.4]; negatives clipped; no mass: left out
    results = [torch.tensor([1.0, 1.0, 2.0]), torch.tensor([-3.0, 2.0, 3.0])[1:], torch.tensor([0.0, -1.0])]
    profile = fit_position_prior(results)
    assert profile == pytest.approx([(0.5 + 0.6) / 2, (0.25 + 0.4) / 2, 0.25])
    as_results = [AttributionResult(tokens=["a"] * len(s), token_ids=torch.arange(len(s)), target="b", target_id=1,
                                    scores=s, method="m") for s in results]
    assert fit_position_prior(as_results) == pytest.approx(profile)
    with pytest.raises(ValueError, match="positive scores"):
        fit_position_prior([torch.zeros(3)])


def test_scores_with_the_profile_given_as_a_list_or_a_file(model, tok, batch, check_batched, tmp_path):
    method = build("position_prior", model, tok, profile=[0.5, 0.3, 0.2])
    res = method.attribute("the cat sat on the")
    torch.testing.assert_close(res.scores, torch.tensor([0.2, 0.2, 0.2, 0.3, 0.5]))  # farther: the last value
    assert res.method == "position_prior" and res.config == {"profile": [0.5, 0.3, 0.2]}
    check_batched(method, batch)
    path = tmp_path / "profile.json"
    path.write_text(json.dumps([0.7, 0.3]))
    (label, (name, options)), = parse_methods([f"pp=position_prior:profile={path}"]).items()
    assert build(name, model, tok, **options).attribute([5, 6, 7]).scores.tolist() == pytest.approx([0.3, 0.3, 0.7])
    for bad in (None, [], [0.5, -0.1], [float("nan")]):
        with pytest.raises(ValueError, match="Expected profile"):
            build("position_prior", model, tok, profile=bad)
