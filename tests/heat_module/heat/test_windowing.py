"""HEAT-WIN (Algorithm 1): window layout, equality with unwindowed HEAT, and a literal re-implementation."""

import pytest
import torch

import heat_module as hm
from heat_module.heat.s_lowrank import LowRankS
from heat_module.heat.windowing import attribute_windowed, window_bounds
from tests.conftest import make_tiny

TEXT = "the cat sat on the hat because it was warm and"  # n = 11


@pytest.fixture(scope="module")
def model():
    return make_tiny("llama")


def test_window_bounds_by_hand():
    assert window_bounds(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert window_bounds(11, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10), (7, 11)]  # last one aligned to the end
    assert window_bounds(10, 4, 4) == [(0, 4), (4, 8), (6, 10)]
    assert window_bounds(10, 10, 5) == [(0, 10)] and window_bounds(3, 8, 4) == [(0, 3)]
    assert window_bounds(0, 4, 2) == [(0, 0)]
    with pytest.raises(ValueError, match="Expected window >= 1"):
        window_bounds(5, 0, 1)


@pytest.mark.parametrize("window", [10, 11, 50])
def test_one_window_equals_unwindowed(model, tiny_tok, window):
    plain = hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("exact"))
    ref = plain.attribute(TEXT)
    heat = hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("exact", window=window, window_leakage=True))
    got = attribute_windowed(heat, heat.encode(TEXT), None)
    assert got.target_id == ref.target_id and got.extra["windows"] == [[0, 10]]
    for name in ("scores", "transition", "curvature", "information"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-6, atol=1e-9)
    assert got.extra["window_leakage"] < 1e-6 and got.extra["window_leakage_tv"] < 1e-6
    if window >= len(ref.tokens):
        assert heat.attribute(TEXT).extra == {}  # W >= n: HEAT.attribute does not window at all


def literal_algorithm_1(model, tok, text, W, s, target):
    """Algorithm 1 line by line: windows over [0, n-1), each + the last context token, accumulate, average."""
    plain = hm.HEAT(model, tok, hm.HEATConfig.preset("exact"))  # eq. 5 with S
    ids = plain.encode(text)
    n = ids.numel()
    p = n - 1
    starts = list(range(0, (n - 1) - W + 1, s))
    if starts[-1] != (n - 1) - W:
        starts.append((n - 1) - W)
    M, S, Info, nu = [0.0] * n, [0.0] * n, [0.0] * n, [0] * n
    for a in starts:
        pos = list(range(a, a + W)) + [p]
        r = plain.attribute(ids[pos], target)
        for j, i in enumerate(pos):
            M[i] += float(r.transition[j])
            S[i] += float(r.curvature[j])
            Info[i] += float(r.information[j])
            nu[i] += 1
    M = torch.tensor([M[i] / max(1, nu[i]) for i in range(n)], dtype=torch.float64)
    S = torch.tensor([S[i] / max(1, nu[i]) for i in range(n)], dtype=torch.float64)
    Info = torch.tensor([Info[i] / max(1, nu[i]) for i in range(n)], dtype=torch.float64)
    M = M / M.sum()
    return M, S, Info, M * (0.5 * S + 0.5 * Info), nu


@pytest.mark.parametrize("W,s", [(4, 3), (6, 6)])
def test_matches_literal_algorithm_1(model, tiny_tok, W, s):
    heat = hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("exact", window=W, stride=s))
    res = heat.attribute(TEXT)
    full_target = hm.HEAT(model, tiny_tok).attribute(TEXT).target_id
    assert res.target_id == full_target  # fixed from the full context
    M, S, Info, attr, nu = literal_algorithm_1(model, tiny_tok, TEXT, W, s, full_target)
    assert res.extra["coverage"] == [float(v) for v in nu] and res.extra["coverage"][-1] == len(res.extra["windows"])
    torch.testing.assert_close(res.transition.double(), M, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(res.curvature.double(), S, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(res.information.double(), Info, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(res.scores.double(), attr, rtol=1e-5, atol=1e-8)


def test_given_target_leakage_and_lowrank_composition(model, tiny_tok):
    cfg = hm.HEATConfig.preset("exact", window=4, window_leakage=True, curvature=LowRankS(rank=8, oversample=2))
    heat = hm.HEAT(model, tiny_tok, cfg)
    res = heat.attribute(TEXT, target=40)
    assert res.target_id == 40 and len(res.extra["windows"]) == 4
    full = hm.HEAT(model, tiny_tok).attribute(TEXT, target=40)
    expected = (full.transition - res.transition).abs()
    assert res.extra["window_leakage"] == pytest.approx(float(expected.max()), abs=1e-6)
    assert res.extra["window_leakage_tv"] == pytest.approx(float(0.5 * expected.sum()), abs=1e-6)
    assert res.extra["window_leakage"] > 0
    assert res.cost["hvps"] == 4 * 2 * (8 + 2)  # four windows, 2ℓ HVPs each
    # FE: full forward + per window (1 + 2ℓ·4 + n_w masked) in units of a forward over the window's 5 tokens, one
    # of which costs, over n = 11, its linear layers' 5/11 and attention's causal pairs 15 of 66, FLOP-weighted
    assert res.cost["forward_equivalents"] == pytest.approx(1 + 4 * (1 + 80 + 5) * window_unit(model, 5, 11))


def window_unit(model, s: int, n: int) -> float:
    """A forward over s tokens in units of one over n, counted here from the weights and the config: 2 FLOPs per
    linear weight and token (the output embedding excluded) and 2·H·(d_h + d_v) per causal pair and layer, attention
    weighted by the cost model's time per FLOP."""
    from heat_module.heat.cost import ATTENTION_FLOP_WEIGHT

    head = model.get_output_embeddings().weight
    linear = 2.0 * sum(m.weight.numel() for m in model.modules()
                       if isinstance(m, torch.nn.Linear) and m.weight is not head)
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    pair = 2.0 * cfg.num_attention_heads * 2 * head_dim * cfg.num_hidden_layers

    def cost(m: int) -> float:
        return linear * m + ATTENTION_FLOP_WEIGHT * pair * m * (m + 1) / 2

    return cost(s) / cost(n)
