"""A forward-pass budget for the Fisher S and I (``max_forward_equivalents``): K is the largest K ≤ ``topk`` whose
factors the cost model prices within the budget; S and I on shared factors choose the same K; the scores are those
of ``topk=K``; a budget that not even K = 1 fits is refused."""

import math

import pytest
import torch

from heat_module import HEAT, HEATConfig
from heat_module.heat import progress
from heat_module.heat.cost import FE_ATTENTION_BACKWARD, fisher_topk_within
from heat_module.heat.i_exact import ExactI
from heat_module.heat.i_fisher import FisherI, budgeted_topk
from heat_module.heat.s_fisher import FisherS, budget_summary, shares_factors
from heat_module.lm.flops import attention_flops, linear_flops_per_token
from tests.conftest import make_tiny
from tests.heat_module.heat.recording_bar import Bar

IDS = [5, 9, 14, 22, 7, 30, 11]
N = len(IDS)


@pytest.fixture(scope="module")
def model():
    return make_tiny("llama")


def per_cotangent(model, n):
    """c, one backward cotangent in FE, by hand: (1 − a) + 2.5·a with a = 2·A / (L + 2·A) (attention's FLOPs
    weighted twice against the linear layers')."""
    lin, att = linear_flops_per_token(model) * n, attention_flops(model, n)
    a = 2 * att / (lin + 2 * att)
    return (1 - a) + FE_ATTENTION_BACKWARD * a


def budget_for(model, k, slack=0.5):
    """A budget between what K = k and K = k + 1 cost (no checkpointing at short n: 1 forward + K·c)."""
    return 1 + (k + slack) * per_cotangent(model, N)


def test_the_budget_picks_the_largest_k_whose_cost_fits_by_hand(model):
    c = per_cotangent(model, N)
    assert c > 1  # attention counted: each cotangent costs more than a plain backward
    for budget in (1 + 1.0 * c, 1 + 4.5 * c, 1 + 4.999 * c, 1 + 5.0 * c + 1e-9, 1 + 40 * c):
        want = min(16, math.floor((budget - 1) / c + 1e-12))
        assert FisherS(topk=16, max_forward_equivalents=budget).topk_at(model, N) == want
        assert FisherI(topk=16, max_forward_equivalents=budget).topk_at(model, N) == want
    assert FisherS(topk=16).topk_at(model, N) == 16  # no budget: topk


def test_checkpointed_layers_add_one_forward_per_backward_call_to_the_price():
    # a = 0.5: c = 0.5 + 1.25 = 1.75; chunk 2. Checkpointed: 1 + ⌈K/2⌉ + 1.75·K → K = 4 costs 10, K = 5 costs 12.75.
    assert fisher_topk_within(10.0, 16, 0.5, 2, checkpointed=True) == 4
    # not checkpointed: 1 + 1.75·K → K = 5 costs 9.75, K = 6 costs 11.5
    assert fisher_topk_within(10.0, 16, 0.5, 2, checkpointed=False) == 5
    assert fisher_topk_within(10.0, 3, 0.5, 2, checkpointed=False) == 3  # capped at topk
    assert fisher_topk_within(2.0, 16, 0.5, 2, checkpointed=True) == 0  # K = 1 costs 3.75


def test_the_cost_reports_the_chosen_k_and_the_budget(model):
    budget = budget_for(model, 5)
    out = FisherS(topk=16, max_forward_equivalents=budget).estimate(_example(model))
    assert out.cost.details["fisher_k"] == 5 and out.cost.details["fisher_max_fe"] == budget
    assert out.cost.gradients == 5 and out.cost.forward_equivalents <= budget


def test_s_and_i_with_the_same_budget_share_one_set_of_factors_and_one_k(model, tiny_tok):
    budget = budget_for(model, 3)
    s, i = FisherS(topk=8, max_forward_equivalents=budget), FisherI(topk=8, max_forward_equivalents=budget)
    assert shares_factors(s, i)
    assert not shares_factors(s, FisherI(topk=8))  # a budget on one side only: K could differ
    assert not shares_factors(s, FisherI(topk=8, max_forward_equivalents=budget + 1))
    res = HEAT(model, tiny_tok, HEATConfig.preset("fast", curvature=s, information=i)).attribute(IDS)
    assert res.cost.details["fisher_k"] == 3 and res.cost.gradients == 3  # ONE set of 3 gradients for S and I
    assert res.cost.forward_passes == 2  # the captured forward and the Fisher forward


def test_scores_with_the_budget_equal_scores_with_topk_the_chosen_k(model, tiny_tok):
    budget = budget_for(model, 3)
    budgeted = HEATConfig.preset("fast", curvature=FisherS(topk=8, max_forward_equivalents=budget),
                                 information=FisherI(topk=8, max_forward_equivalents=budget))
    plain = HEATConfig.preset("fast", curvature=FisherS(topk=3), information=FisherI(topk=3))
    wide = HEATConfig.preset("fast", curvature=FisherS(topk=8), information=FisherI(topk=8))
    got, want = HEAT(model, tiny_tok, budgeted).attribute(IDS), HEAT(model, tiny_tok, plain).attribute(IDS)
    torch.testing.assert_close(got.scores, want.scores, rtol=0, atol=0)
    torch.testing.assert_close(got.curvature, want.curvature, rtol=0, atol=0)
    torch.testing.assert_close(got.information, want.information, rtol=0, atol=0)
    assert not torch.equal(got.scores, HEAT(model, tiny_tok, wide).attribute(IDS).scores)  # K matters here
    # with the exact I, the Fisher S alone takes the budget too
    s_only = HEAT(model, tiny_tok, HEATConfig(curvature=FisherS(topk=8, max_forward_equivalents=budget))).attribute(IDS)
    torch.testing.assert_close(s_only.curvature, want.curvature, rtol=0, atol=0)


def test_a_budget_below_what_k_1_costs_is_refused_naming_that_cost(model, tiny_tok):
    one = 1 + per_cotangent(model, N)
    config = HEATConfig.preset("fast", curvature=FisherS(max_forward_equivalents=1.5),
                               information=FisherI(max_forward_equivalents=1.5))
    with pytest.raises(ValueError, match=rf"Expected max_forward_equivalents of at least {one:.2f} FE, what the "
                                         rf"Fisher factors cost with K = 1 at n = {N} on this model.*got 1\.5"):
        HEAT(model, tiny_tok, config).attribute(IDS)
    with pytest.raises(ValueError, match="one recomputed forward"):  # checkpointed from 2048 tokens on
        budgeted_topk(model, 4096, 16, 8, 2.0)


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), True, "24"])
def test_the_budget_must_be_a_positive_number(bad):
    with pytest.raises(ValueError, match="Expected max_forward_equivalents to be a positive number or None"):
        FisherS(max_forward_equivalents=bad)
    with pytest.raises(ValueError, match="Expected max_forward_equivalents to be a positive number or None"):
        FisherI(max_forward_equivalents=bad)


def test_a_budget_with_heat_ls_is_refused():
    with pytest.raises(ValueError, match="Expected layers=None with max_forward_equivalents"):
        FisherS(layers=1, max_forward_equivalents=20.0)


def test_the_chosen_k_is_on_the_progress_bar(model, tiny_tok, monkeypatch):
    budget = budget_for(model, 3)
    s, i = FisherS(topk=8, max_forward_equivalents=budget), FisherI(topk=8, max_forward_equivalents=budget)
    assert budget_summary(s, i, model, N) == f"Fisher K = 3 of 8 (≤ {budget:g} FE)"  # once for shared factors
    assert budget_summary(FisherS(), ExactI(), model, N) == ""
    bars: list[Bar] = []
    monkeypatch.setattr(progress, "progress_bar", lambda *a, **k: bars.append(Bar()) or bars[-1])
    config = HEATConfig.preset("fast", curvature=s, information=i, progress=True)
    res = HEAT(model, tiny_tok, config).attribute(IDS)
    note = f"Fisher K = 3 of 8 (≤ {budget:g} FE)"
    assert [bar.postfix for bar in bars] == [[f"{res.cost.details['memory_plan']}; {note}"]]


def _example(model):
    from heat_module.heat.part import Example
    from heat_module.lm.capture import capture
    from heat_module.lm.forward import embed, next_token_logits

    ids = torch.tensor([IDS])
    x = embed(model, ids).detach()
    with torch.no_grad(), capture() as caps:
        logits = next_token_logits(model, x, torch.ones_like(ids))
    return Example(model, x, int(logits[0].argmax()), caps, logits[0])


def test_the_budget_is_written_and_read_back_and_an_unset_one_is_left_out():
    from heat_module.config import i_estimator, s_estimator

    s, i = FisherS(max_forward_equivalents=24.0), FisherI(max_forward_equivalents=24.0)
    assert s.to_dict()["max_forward_equivalents"] == 24.0 and s_estimator(s.to_dict()) == s
    assert i_estimator(i.to_dict()) == i
    assert "max_forward_equivalents" not in FisherS().to_dict()  # configs without a budget write and hash as before
    assert s_estimator(FisherS().to_dict()) == FisherS()
    cfg = HEATConfig(curvature=s)
    assert HEATConfig.from_dict(cfg.to_dict()) == cfg and cfg.hash() != HEATConfig().hash()


def test_the_fast_preset_keeps_k_16_while_it_fits_and_fewer_beyond(model):
    fast = HEATConfig.preset("fast")
    assert fast.curvature.max_forward_equivalents == fast.information.max_forward_equivalents == 24.0
    assert shares_factors(fast.curvature, fast.information)
    assert fast.curvature.topk_at(model, N) == 16  # 1 + 16·c ≤ 24 at short n
    for n in (256, 1024):  # not checkpointed below 2048 tokens: 1 + K·c
        c = per_cotangent(model, n)
        assert fast.curvature.topk_at(model, n) == min(16, math.floor(23 / c)) < 16
