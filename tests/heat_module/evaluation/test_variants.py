"""The paper configuration's rows and HEAT's sink options: M under every option from one rollout, checked by hand;
HEAT rows recombined from one attribution by hand."""

from __future__ import annotations

import pytest
import torch

from heat_module.evaluation.pipeline import family_scores
from heat_module.evaluation.variants import gate_options, paper_rows, sink_transitions
from heat_module.heat.estimator import HEAT
from heat_module.heat.transition import transition_from_captures
from heat_module.lm.capture import LayerCapture
from heat_module.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gate_options_by_hand():
    gates = gate_options(torch.tensor([0.7, 0.1, 0.2, 0.0]), [0])
    torch.testing.assert_close(gates["keep"], torch.tensor([0.7, 0.1, 0.2, 0.0]))
    torch.testing.assert_close(gates["first"], torch.tensor([0.0, 1 / 3, 2 / 3, 0.0]))
    torch.testing.assert_close(gates["auto"], torch.tensor([0.0, 1 / 3, 2 / 3, 0.0]))
    torch.testing.assert_close(gates["auto-median"], torch.tensor([0.1, 0.1, 0.2, 0.0]) / 0.4)
    torch.testing.assert_close(gate_options(torch.tensor([0.5, 0.5]), [])["auto"], torch.tensor([0.5, 0.5]))
    # two flagged positions: auto drops both; auto-median gives both the (lower) median of {0.4, 0.1}
    gates = gate_options(torch.tensor([4.0, 3.0, 2.0, 1.0]), [1, 2])  # any scale: the options renormalise
    torch.testing.assert_close(gates["keep"], torch.tensor([0.4, 0.3, 0.2, 0.1]))
    torch.testing.assert_close(gates["first"], torch.tensor([0.0, 3.0, 2.0, 1.0]) / 6)
    torch.testing.assert_close(gates["auto"], torch.tensor([0.8, 0.0, 0.0, 0.2]))
    torch.testing.assert_close(gates["auto-median"], torch.tensor([4.0, 1.0, 1.0, 1.0]) / 7)
    # everything flagged: auto falls back to uniform, auto-median has no other position and keeps M
    gates = gate_options(torch.tensor([0.6, 0.4]), [0, 1])
    torch.testing.assert_close(gates["auto"], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(gates["auto-median"], torch.tensor([0.6, 0.4]))


def test_heat_rows_are_recombined_from_one_rollout(files, tmp_path, config_factory):
    """The sink options of M come from one rollout: each is the sink-kept M with the flagged positions removed
    (by hand here), and agrees with the transition module run with that sink."""
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    heat = HEAT(model, tok)
    ids = torch.tensor(tok("the cat sat on the red hat and")["input_ids"])
    _, captures = heat.forward_with_captures(ids[None], torch.ones_like(ids)[None])
    m, diag = sink_transitions(captures)
    keep = m["keep"]
    assert float(keep.sum()) == pytest.approx(1.0) and (keep >= 0).all()
    assert diag["first_share"] == pytest.approx(float(keep[0])) and 0 <= diag["first_share"] <= 1
    first = keep.clone()
    first[0] = 0.0
    torch.testing.assert_close(m["first"], first / first.sum())
    for sink in ("keep", "first", "auto"):
        torch.testing.assert_close(m[sink], transition_from_captures(captures, sink=sink)[0])
    keys = [v.label for v in paper_rows(config_factory(files, tmp_path))]
    assert "heat[keep]" in keys and "heat-transition[auto]" in keys and "heat[first,b=0]" in keys
    assert len(keys) == len(set(keys))


def hand_capture(layer: int, probs: list[list[float]], norms: list[float]) -> LayerCapture:
    """One head, d_h = d_v = 1, W_O = 1: the value–output norms N_i are |v_i| = ``norms``; A = ``probs``."""
    attn = torch.nn.Module()
    attn.o_proj = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.ones_(attn.o_proj.weight)
    n = len(norms)
    value = torch.tensor(norms).view(1, 1, n, 1)
    return LayerCapture(name=f"layers.{layer}.attn", layer=layer, query=torch.zeros(1, 1, n, 1),
                        key=torch.zeros(1, 1, n, 1), value=value, mask=None, scaling=1.0, softcap=None,
                        sliding_window=None, module=attn, weights=torch.tensor(probs).view(1, 1, n, n))


def test_sink_transitions_auto_by_hand():
    """The ``auto`` rule worked by hand on a two-layer, one-head rollout (n = 3), where the sink is NOT position 0.

    Top layer: ρ = e_2, Φ¹ = A¹[2] = [0.5, 0.25, 0.25]; then ρ = 0.5·e_2 + 0.5·Φ¹ = [0.25, 0.125, 0.625] and
    Φ⁰ = ρ A⁰ = 0.25·[1, 0, 0] + 0.125·[0.5, 0.5, 0] + 0.625·[0.6, 0.1, 0.3] = [0.6875, 0.125, 0.1875].
    N = [1, 1, 0.1] in both layers: raw M = (Φ¹ + Φ⁰)·N = [1.1875, 0.375, 0.04375].
    Attention share α = (Φ¹ + Φ⁰) / 2 = [0.59375, 0.1875, 0.21875]; ν = N / mean(N) = [1/0.7, 1/0.7, 0.1/0.7].
    Sinks (α ≥ 0.2 and ν < 0.5): position 2 only (position 0 takes much attention but moves content).
    """
    a0 = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.6, 0.1, 0.3]]
    a1 = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.25, 0.25]]
    norms = [1.0, 1.0, 0.1]
    m, diag = sink_transitions([hand_capture(0, a0, norms), hand_capture(1, a1, norms)])
    assert diag["auto_sinks"] == [2]
    torch.testing.assert_close(m["keep"], torch.tensor([1.1875, 0.375, 0.04375]) / 1.60625)
    torch.testing.assert_close(m["auto"], torch.tensor([0.76, 0.24, 0.0]))  # [1.1875, 0.375, 0] / 1.5625
    torch.testing.assert_close(m["first"], torch.tensor([0.0, 0.375, 0.04375]) / 0.41875)
    torch.testing.assert_close(m["auto-median"], torch.tensor([1.1875, 0.375, 0.375]) / 1.9375)  # lower median
    assert diag["first_share"] == pytest.approx(1.1875 / 1.60625)
    assert diag["phi_share_first"] == pytest.approx(0.59375)
    assert diag["norm_ratio_first"] == pytest.approx(2.0 / 1.4)


def test_recombine_by_hand(files, tmp_path, config_factory):
    """Eq. 5 rows: M[sink]·(βS + (1 − β)I); ablations as in Table 5 — from one cached attribution."""
    rows = {v.label: v for v in paper_rows(config_factory(files, tmp_path))}
    rec = {"transition": {"keep": [0.5, 0.3, 0.2], "first": [0.0, 0.6, 0.4]}, "curvature": [1.0, 2.0, 3.0],
           "information": [3.0, 0.0, 1.0]}
    torch.testing.assert_close(family_scores(rec, rows["heat[first]"]), torch.tensor([0.0, 0.6 * 1.0, 0.4 * 2.0]))
    torch.testing.assert_close(family_scores(rec, rows["heat[keep,b=0]"]), torch.tensor([1.5, 0.0, 0.2]))
    torch.testing.assert_close(family_scores(rec, rows["heat-information"]), torch.tensor([3.0, 0.0, 1.0]))
