"""The F1Alignment Metric class: accumulating over updates equals the functional form; empty gold sets skipped."""

from __future__ import annotations

import pytest
import torch

from heat_module.metrics import F1Alignment
from heat_module.metrics.functional import f1_alignment
from heat_module.metrics.functional.f1_alignment import f1_alignment_values


def test_class_equals_functional_and_skips_empty_gold():
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(5, 7, generator=g)
    gold = torch.rand(5, 7, generator=g) > 0.6
    gold[3] = False  # no gold: skipped
    gold[:, 0] |= torch.arange(5) != 3
    metric = F1Alignment()
    metric.update(scores[:3], gold[:3])
    metric.update(scores[3:], gold[3:])
    expected = f1_alignment(scores, gold)
    got = metric.compute()
    torch.testing.assert_close(got["f1"], expected["f1"])
    torch.testing.assert_close(got["span_f1"], expected["span_f1"])
    f1, _, valid = f1_alignment_values(scores, gold)
    assert not valid[3] and int(metric.total) == int(valid.sum())
    assert float(got["f1"]) == pytest.approx(float(f1[valid].mean()))
