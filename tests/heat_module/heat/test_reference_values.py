"""Every preset and estimator gives exactly the values the code gave before S and I became parts: HEAT on a tiny fp64
Llama, compared with ``tests/fixtures/heat_reference_values.json`` (recorded from that code)."""

import json
from pathlib import Path

import pytest
import torch

import heat_module as hm
from heat_module.heat.i_exact import ExactI
from heat_module.heat.i_fisher import FisherI
from heat_module.heat.s_exact import ExactS
from heat_module.heat.s_fisher import FisherS
from heat_module.heat.s_lowrank import LowRankS
from tests.conftest import make_tiny

REFERENCE = json.loads((Path(__file__).parents[2] / "fixtures" / "heat_reference_values.json").read_text())
TEXT = "the cat sat on the hat because it was warm and the dog ran"
P = hm.HEATConfig.preset
#: case -> (config, attribute() keywords)
CASES = {
    "mi": (lambda: P("mi"), {}),
    "exact": (lambda: P("exact"), {}),
    "paper": (lambda: P("paper"), {}),
    "fisher": (lambda: P("fisher"), {}),
    "fast": (lambda: P("fast"), {}),
    "exact_chunked_for": (lambda: P("exact", curvature=ExactS(probes=2, hvp_memory_mb=None, hvp_chunk_size=3,
                                                              hvp_mode="forward_over_reverse")), {}),
    "lowrank": (lambda: P("exact", curvature=LowRankS(rank=4, oversample=2, probes=2)), {}),
    "exact_layers": (lambda: P("exact", curvature=ExactS(layers=1)), {}),
    "fisher_layers_fast": (lambda: P("fast", curvature=FisherS(layers=1, topk=4), information=FisherI(topk=4)), {}),
    "fisher_mass": (lambda: P("fisher", curvature=FisherS(mass=0.5, topk=8)), {}),
    "exact_s_fisher_i": (lambda: P("exact", information=FisherI(topk=8)), {}),
    "fisher_i_only": (lambda: P("mi", information=FisherI(topk=8, mask="mean")), {}),
    "alpha": (lambda: P("exact", alpha=0.3, normalize="rank"), {}),
    "abl_curvature": (lambda: P("fisher", ablation="curvature"), {}),
    "abl_information": (lambda: P("mi", ablation="information", information=ExactI(batch_size=3, mask="mean")), {}),
    "abl_transition": (lambda: hm.HEATConfig(ablation="transition"), {}),
    "foil": (lambda: P("exact", curvature=ExactS(probes=2)), {"foil": "dog"}),
    "window": (lambda: P("exact", window=6, stride=3), {}),
    "sum_sink_keep": (lambda: P("fisher", normalize="sum", sink="keep", seed=3), {}),
}


@pytest.fixture(scope="module")
def model():
    return make_tiny("llama")


def check(result, ref: dict) -> None:
    for name in ("scores", "transition", "curvature", "information", "first_order"):
        got = getattr(result, name)
        assert (got is None) == (ref[name] is None), name
        if got is not None:
            assert torch.equal(got.double(), torch.tensor(ref[name], dtype=torch.float64)), name
    cost = result.cost
    for name in ("forward_passes", "hvps", "gradients"):
        assert getattr(cost, name) == ref["cost"][name], name
    assert cost.forward_equivalents == pytest.approx(ref["cost"]["forward_equivalents"], rel=1e-12)
    # the memory plan's summary (tests/heat_module/heat/test_memory_plan.py) is not among the recorded values
    assert {k: v for k, v in cost.details.items() if k != "memory_plan"} == ref["cost"]["details"]
    assert result.target_id == ref["target_id"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_case_gives_the_recorded_values(case, model, tiny_tok):
    config, keywords = CASES[case]
    check(hm.HEAT(model, tiny_tok, config()).attribute(TEXT, **keywords), REFERENCE[case])


def test_batched_fisher_gives_the_recorded_values(model, tiny_tok):
    results = hm.HEAT(model, tiny_tok, P("fisher")).attribute(
        [TEXT, "the dog ate the pizza in the park"], targets=[None, None], batch_size=2)
    for result, ref in zip(results, REFERENCE["batch_fisher"], strict=True):
        check(result, ref)
