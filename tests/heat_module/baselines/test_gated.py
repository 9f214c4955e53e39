"""The gate on any method: ``Gated`` / ``"gated:<name>"`` returns M · the inner method's scores, with M from one
captured forward (checked against HEAT's own M-only ablation, which computes M through the estimator)."""

from __future__ import annotations

import pytest
import torch

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import build, register
from heat_module.baselines.gated import Gated
from heat_module.config import HEATConfig
from heat_module.heat.estimator import HEAT
from heat_module.testing import tiny_model


class Uniform(Attributor):
    """Every token scores 1 (a test method)."""

    name = "uniform_test"

    def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
        return torch.ones(input_ids.shape), None


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", seed=0)


@pytest.mark.parametrize("sink", ["keep", "auto", "auto-median"])
def test_gate_times_uniform_scores_is_m(model, sink):
    register("uniform_test", Uniform)
    ids = torch.randint(4, 50, (9,), generator=torch.Generator().manual_seed(3))
    gated = Gated(model, None, method="uniform_test", sink=sink).attribute(ids, target=5)
    m = HEAT(model, None, HEATConfig(ablation="transition", sink=sink)).attribute(ids, target=5).scores
    assert torch.allclose(gated.scores, m, atol=1e-6)
    assert gated.scores.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_gated_attnlrp_by_name_on_a_padded_batch(model):
    gen = torch.Generator().manual_seed(4)
    a, b = torch.randint(4, 50, (7,), generator=gen), torch.randint(4, 50, (5,), generator=gen)
    ids = torch.stack([a, torch.cat([torch.zeros(2, dtype=torch.long), b])])
    mask = torch.tensor([[1] * 7, [0, 0] + [1] * 5])
    method = build("gated:attnlrp", model)
    assert isinstance(method, Gated) and method.options()["method"] == "attnlrp"
    res = method.attribute_batch(ids, mask, [3, 8])
    inner = build("attnlrp", model)
    heat = HEAT(model, None, HEATConfig(ablation="transition"))
    for r, one, t in zip(res, (a, b), (3, 8)):
        want = heat.attribute(one, target=t).scores * inner.attribute(one, target=t).scores
        assert torch.allclose(r.scores, want, atol=1e-5)


def test_errors(model):
    with pytest.raises(ValueError, match="Expected sink"):
        Gated(model, method="attnlrp", sink="middle")
    with pytest.raises(ValueError, match="other than 'gated'"):
        Gated(model, method="gated:attnlrp")
