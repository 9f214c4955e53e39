"""The report's rows and HEAT's sink options: M under every option from one rollout, checked by hand."""

from __future__ import annotations

import pytest
import torch

from heat_module.evaluation.variants import gate_options, recombine, sink_transitions, variants
from heat_module.heat.combine import Components
from heat_module.heat.estimator import HEAT
from heat_module.heat.transition import transition_from_captures
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
    auto = keep.clone()
    auto[diag["auto_sinks"]] = 0.0
    torch.testing.assert_close(m["auto"], auto / auto.sum())
    for sink in ("keep", "first", "auto"):
        torch.testing.assert_close(m[sink], transition_from_captures(captures, sink=sink)[0])
    keys = [v.key for v in variants(config_factory(files, tmp_path))]
    assert "heat[keep]" in keys and "heat-transition[auto]" in keys and "heat[first,b=0]" in keys
    assert len(keys) == len(set(keys))


def test_recombine_by_hand(files, tmp_path, config_factory):
    """Eq. 5 rows: M[sink]·(βS + (1 − β)I); ablations as in Table 5."""
    rows = {v.key: v for v in variants(config_factory(files, tmp_path))}
    m = {"keep": torch.tensor([0.5, 0.3, 0.2]), "first": torch.tensor([0.0, 0.6, 0.4])}
    parts = Components(m["keep"], torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 0.0, 1.0]), None)
    out = recombine(parts, m, [rows["heat[first]"], rows["heat[keep,b=0]"], rows["heat-information"]])
    torch.testing.assert_close(out["heat[first]"], torch.tensor([0.0, 0.6 * 1.0, 0.4 * 2.0]))
    torch.testing.assert_close(out["heat[keep,b=0]"], torch.tensor([1.5, 0.0, 0.2]))
    torch.testing.assert_close(out["heat-information"], torch.tensor([3.0, 0.0, 1.0]))
