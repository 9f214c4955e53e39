"""``last_token``: all mass on the last context token, whatever the model."""

from __future__ import annotations

import torch

from heat_module.attribution.registry import build, method_entry
from heat_module.testing import tiny_model


def test_all_mass_on_the_last_token_whatever_the_model(model, tok, batch, check_batched):
    res = build("last_token", model, tok).attribute("the cat sat on the", target="hat")
    assert res.method == "last_token" and res.scores.tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]
    other = build("last_token", tiny_model("llama", seed=5), tok).attribute("the cat sat on the", target="hat")
    assert torch.equal(other.scores, res.scores)
    for r in check_batched(build("last_token", model), batch):
        assert r.scores[-1] == 1.0 and r.scores.sum() == 1.0
    assert not method_entry("last_token").uses_model and "last_token" in method_entry("last_token").evaluation
