"""``sink="auto-median"``: the positions the ``auto`` rule flags get the median M of the others, by hand and
through ``transition_from_captures``."""

from __future__ import annotations

import torch

import heat_module.heat.transition as tr
from heat_module.heat.transition import GATE_OPTIONS, median_fill, transition_from_captures
from heat_module.lm.capture import capture, install
from heat_module.testing import tiny_model


def test_median_fill_by_hand():
    m = torch.tensor([[0.6, 0.1, 0.2, 0.1], [0.4, 0.3, 0.2, 0.1]])
    sinks = torch.tensor([[True, False, False, False], [False, False, False, False]])
    got = median_fill(m, sinks)
    # row 0: median of (0.1, 0.2, 0.1) = 0.1 -> (0.1, 0.1, 0.2, 0.1) / 0.5; row 1: no sink, unchanged (sums to 1)
    assert torch.allclose(got[0], torch.tensor([0.2, 0.2, 0.4, 0.2]))
    assert torch.allclose(got[1], m[1])
    # an even number of others: torch's median is the lower middle value (0.1 of 0.1, 0.3)
    got = median_fill(torch.tensor([0.5, 0.3, 0.1, 0.0]), torch.tensor([True, False, False, False]),
                      torch.tensor([True, True, True, False]))
    assert torch.allclose(got, torch.tensor([0.2, 0.6, 0.2, 0.0]))
    assert len(GATE_OPTIONS) == len(set(GATE_OPTIONS)) and "auto-median" in GATE_OPTIONS


def test_transition_auto_median_fills_the_auto_sinks():
    model = install(tiny_model("llama", seed=0))
    ids = torch.randint(4, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), capture() as caps:
        model(input_ids=ids)
    _, parts = transition_from_captures(caps, sink="auto", return_parts=True)
    sinks = parts["sinks"].clone()
    sinks[:, 0] = True  # force a flagged position so the rule has something to fill
    want = median_fill(parts["raw"], sinks)

    original = tr.sink_positions
    tr.sink_positions = lambda *a, **k: sinks
    try:
        got = transition_from_captures(caps, sink="auto-median")
    finally:
        tr.sink_positions = original
    assert torch.allclose(got, want, atol=1e-6)
    raw0 = parts["raw"][0]
    med = raw0[1:].median()
    hand = torch.cat([med[None], raw0[1:]]) / (med + raw0[1:].sum())
    assert torch.allclose(got[0], hand, atol=1e-6)
