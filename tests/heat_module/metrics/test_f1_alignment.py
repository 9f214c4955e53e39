"""The F1Alignment Metric class skips examples without gold tokens (class = functional form:
test_classes_equal_functional.py)."""

from __future__ import annotations

import pytest
import torch

from heat_module.metrics import F1Alignment
from heat_module.metrics.functional.f1_alignment import f1_alignment_values


def test_examples_without_gold_are_skipped():
    g = torch.Generator().manual_seed(3)
    scores = torch.rand(5, 7, generator=g)
    gold = torch.rand(5, 7, generator=g) > 0.6
    gold[3] = False  # no gold: skipped
    gold[:, 0] |= torch.arange(5) != 3
    metric = F1Alignment()
    metric.update(scores[:3], gold[:3])
    metric.update(scores[3:], gold[3:])
    got = metric.compute()
    f1, _, valid = f1_alignment_values(scores, gold)
    assert not valid[3] and int(metric.total) == int(valid.sum())
    assert float(got["f1"]) == pytest.approx(float(f1[valid].mean()))
