"""The parts HEAT composes: the registry of S and I estimators, the shared Fisher S + I path, HEAT-LS around any S,
and the one place where progress and cost are summed (:class:`heat_module.heat.progress.Meter`)."""

import dataclasses

import pytest
import torch

from heat_module import HEAT, HEATConfig
from heat_module.config import (
    I_ESTIMATORS,
    S_ESTIMATORS,
    SEstimator,
    i_estimator,
    register_s_estimator,
    s_estimator,
)
from heat_module.heat.fisher import fisher_factors
from heat_module.heat.i_exact import ExactI
from heat_module.heat.i_fisher import FisherI
from heat_module.heat.m_gate import GateM
from heat_module.heat.part import Example, PartOutput
from heat_module.heat.progress import Meter
from heat_module.heat.s_exact import ExactS
from heat_module.heat.s_fisher import FisherS, shared_fisher, shares_factors
from heat_module.heat.s_lowrank import LowRankS
from heat_module.lm.capture import capture
from heat_module.lm.forward import embed, next_token_logits
from heat_module.result import Cost
from tests.conftest import make_tiny

IDS = [5, 9, 14, 22, 7, 30, 11]


@pytest.fixture(scope="module")
def example():
    model = make_tiny("llama")
    ids = torch.tensor([IDS])
    x = embed(model, ids).detach()
    with torch.no_grad(), capture() as caps:
        logits = next_token_logits(model, x, torch.ones_like(ids))
    return Example(model, x, int(logits[0].argmax()), caps, logits[0])


def test_registry_names_every_estimator_and_builds_them_from_names_and_dicts():
    assert S_ESTIMATORS == {"exact": ExactS, "fisher": FisherS, "lowrank": LowRankS}
    assert I_ESTIMATORS == {"exact": ExactI, "fisher": FisherI}
    assert s_estimator("fisher") == FisherS()
    assert s_estimator({"name": "lowrank", "rank": 3}) == LowRankS(rank=3)
    assert s_estimator(ExactS(probes=2)).to_dict() == {"name": "exact", **dataclasses.asdict(ExactS(probes=2))}
    assert i_estimator(FisherI(topk=3).to_dict()) == FisherI(topk=3)
    with pytest.raises(ValueError, match=r"Expected an S estimator name in \['exact', 'fisher', 'lowrank'\], got 'x'"):
        s_estimator("x")
    with pytest.raises(ValueError, match="Expected an I estimator"):
        i_estimator(3)


def test_registering_a_taken_name_or_a_non_estimator_fails():
    with pytest.raises(ValueError, match="already FisherS"):
        register_s_estimator("fisher")(type("Other", (SEstimator,), {}))
    with pytest.raises(TypeError, match="Expected a subclass of SEstimator"):
        register_s_estimator("plain")(object)


@pytest.mark.parametrize("bad", [dict(probes=0), dict(hvp_mode="x"), dict(hvp_memory_mb=0), dict(layers=0)])
def test_exact_s_validates_its_settings(bad):
    with pytest.raises(ValueError, match="Expected"):
        ExactS(**bad)


@pytest.mark.parametrize("cls,bad", [(FisherS, dict(topk=0)), (FisherS, dict(mass=1.5)),
                                     (LowRankS, dict(oversample=-1)), (FisherI, dict(mask="token")),
                                     (ExactI, dict(batch_size=0))])
def test_each_estimator_validates_its_settings(cls, bad):
    with pytest.raises(ValueError, match="Expected"):
        cls(**bad)


def test_shared_fisher_equals_the_two_parts_computed_apart_for_the_cost_of_one(example):
    s, i = FisherS(probes=2, topk=4), FisherI(topk=4, mask="mean")
    assert shares_factors(s, i)
    s_shared, i_shared = shared_fisher(s, i, example)
    s_alone, i_alone = s.estimate(example), i.estimate(example)
    torch.testing.assert_close(s_shared.values, s_alone.values, rtol=0, atol=0)
    torch.testing.assert_close(i_shared.values, i_alone.values, rtol=0, atol=0)
    assert s_shared.cost.is_empty() and i_shared.cost == i_alone.cost == s_alone.cost
    assert i_alone.cost.gradients == 4 and i_alone.cost.forward_passes == 1


@pytest.mark.parametrize("s,i", [(FisherS(topk=4), FisherI(topk=3)), (FisherS(layers=1), FisherI()),
                                 (FisherS(), ExactI()), (ExactS(), FisherI()), (None, FisherI())])
def test_fisher_parts_share_factors_only_with_the_same_settings_on_x(s, i):
    assert not shares_factors(s, i)


def test_fisher_i_is_the_quadratic_form_of_the_factors(example):
    factors = fisher_factors(example.model, example.x, 4, None, 8)
    u, p = factors.u, factors.probs
    delta = -example.x[0]  # zero mask
    want = 0.5 * (p[:, None] * torch.einsum("knd,nd->kn", u, delta).square()).sum(0)
    torch.testing.assert_close(FisherI(topk=4).estimate(example).values, want.to(torch.float64))


def test_layers_run_any_s_on_the_residual_stream_and_count_the_extra_forward(example):
    whole, top = FisherS(topk=4).estimate(example), FisherS(topk=4, layers=1).estimate(example)
    assert not torch.equal(whole.values, top.values)
    assert top.cost.details["curvature_layers"] == [1, 2]
    assert top.cost.forward_passes == whole.cost.forward_passes + 1
    assert top.cost.forward_equivalents == pytest.approx(1 + whole.cost.forward_equivalents / 2)


def test_meter_times_parts_completes_their_units_and_sums_their_costs():
    meter = Meter(10, enabled=True, cost=Cost(forward_passes=1, forward_equivalents=1.0))
    with meter.part("curvature", 6) as progress:
        progress(2)  # reports 2 of its 6: the rest is completed when the part ends
    meter.add(Cost(hvps=6, forward_passes=6, forward_equivalents=4.0, details={"fisher_k": 4}))
    with meter.part("information", 4):
        pass
    meter.add(Cost(forward_passes=4, forward_equivalents=2.0, details={"fisher_k": 3}))
    assert meter.bar.n == 10
    assert set(meter.cost.seconds) == {"curvature", "information"}
    assert (meter.cost.forward_passes, meter.cost.hvps, meter.cost.forward_equivalents) == (11, 6, 7.0)
    assert meter.cost.details == {"fisher_k": 3}  # how each part ran: set, not summed
    meter.close()


@pytest.fixture
def constant_s():
    """A new S estimator, registered for the test only: S_i = value at every position, one forward counted."""

    @dataclasses.dataclass(frozen=True)
    class ConstantS(SEstimator):
        probes: int = 1
        value: float = 2.0
        layers: int | None = None

        def estimate(self, example):
            return PartOutput(torch.full((example.n,), self.value, dtype=torch.float64),
                              Cost(forward_passes=1, forward_equivalents=1.0, details={"constant": self.value}))

    register_s_estimator("constant")(ConstantS)
    yield ConstantS
    del S_ESTIMATORS["constant"]


def test_a_registered_s_estimator_is_used_by_name_and_its_cost_counted(constant_s, tiny_tok):
    model = make_tiny("llama")
    cfg = HEATConfig(beta=0.5, gamma=0.5, curvature={"name": "constant", "value": 3.0}, normalize="none")
    assert cfg.curvature == constant_s(value=3.0) and cfg.to_dict()["curvature"]["name"] == "constant"
    res = HEAT(model, tiny_tok, cfg).attribute("the cat sat on the hat")
    plain = HEAT(model, tiny_tok, HEATConfig(beta=0.0, gamma=0.5, normalize="none")).attribute("the cat sat on the hat")
    assert torch.equal(res.curvature, torch.full((6,), 3.0, dtype=res.curvature.dtype))
    torch.testing.assert_close(res.scores, res.transition * (0.5 * 3.0 + 0.5 * res.information))
    assert res.cost.forward_passes == plain.cost.forward_passes + 1 and res.cost["constant"] == 3.0
    assert "curvature" in res.cost.seconds


def test_fisher_s_and_i_with_different_k_run_apart_each_counted(tiny_tok):
    model = make_tiny("llama")
    shared = HEATConfig.preset("fast", curvature=FisherS(topk=4), information=FisherI(topk=4))
    apart = shared.replace(information=FisherI(topk=3))
    a = HEAT(model, tiny_tok, shared).attribute("the cat sat on the hat")
    b = HEAT(model, tiny_tok, apart).attribute("the cat sat on the hat")
    assert (a.cost.forward_passes, a.cost.gradients) == (2, 4)  # the captured forward + one shared set of factors
    assert (b.cost.forward_passes, b.cost.gradients) == (3, 4 + 3)
    torch.testing.assert_close(a.curvature, b.curvature, rtol=0, atol=0)
    assert not torch.equal(a.information, b.information)


def test_gate_part_is_the_transition_heat_reports(example, tiny_tok):
    cfg = HEATConfig(sink="keep", rollout_layers=[1])
    m = GateM.from_config(cfg).estimate(example)
    assert m.cost.is_empty() and m.values.shape == (example.n,)
    res = HEAT(example.model, tiny_tok, cfg).attribute(torch.tensor(IDS))
    torch.testing.assert_close(res.transition, m.values.to(res.transition.dtype), rtol=0, atol=0)
    assert not torch.equal(m.values, GateM.from_config(HEATConfig(sink="keep")).estimate(example).values)
