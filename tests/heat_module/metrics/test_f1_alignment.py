"""F1 / Span-F1 alignment against set arithmetic written here, by hand on small cases, class = function."""

from __future__ import annotations

import pytest
import torch

from heat_module.metrics import F1Alignment
from heat_module.metrics.f1_alignment import _f1_alignment_values
from heat_module.metrics.functional import f1_alignment


def runs(positions: list[int]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for p in sorted(positions):
        if out and out[-1][1] == p - 1:
            out[-1][1] = p
        else:
            out.append([p, p])
    return [tuple(r) for r in out]


def reference(scores: list[float], gold: list[int]) -> tuple[float, float]:
    top = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[: len(gold)]
    f1 = 2 * len(set(top) & set(gold)) / (len(top) + len(gold))
    pred_runs, gold_runs = runs(top), runs(gold)
    hit = len(set(pred_runs) & set(gold_runs))
    if hit == 0:
        return f1, 0.0
    p, r = hit / len(pred_runs), hit / len(gold_runs)
    return f1, 2 * p * r / (p + r)


def test_hand_checked():
    scores = torch.tensor([[0.1, 0.9, 0.8, 0.0, 0.7, 0.2]])
    got = f1_alignment(scores, [[1, 2, 4]])  # top-3 = {1, 2, 4} = gold
    assert float(got["f1"]) == 1.0 and float(got["span_f1"]) == 1.0
    got = f1_alignment(scores, [[1, 2, 3]])  # top-3 = {1, 2, 4}: 2 of 3; spans {1-2, 4} vs {1-3}: none equal
    assert float(got["f1"]) == pytest.approx(2 / 3) and float(got["span_f1"]) == 0.0
    got = f1_alignment(scores, [[1, 2, 5]])  # spans {1-2, 4} vs {1-2, 5}: one of two each side
    assert float(got["f1"]) == pytest.approx(2 / 3) and float(got["span_f1"]) == pytest.approx(0.5)


def test_matches_reference_with_padding():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 10, generator=g).round(decimals=1)  # ties happen
    mask = torch.ones(4, 10, dtype=torch.long)
    mask[1, :4] = 0
    scores[~mask.bool()] = 50.0
    gold = [[0, 1, 2], [5], [2, 3, 7, 8], [9]]
    f1, span, valid = _f1_alignment_values(scores, gold, mask)
    assert valid.all()
    for b in range(4):
        ref = reference(scores[b, mask[b].bool()].tolist(), gold[b])
        assert (float(f1[b]), float(span[b])) == pytest.approx(ref), b


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
    f1, _, valid = _f1_alignment_values(scores, gold)
    assert not valid[3] and int(metric.total) == int(valid.sum())
    assert float(got["f1"]) == pytest.approx(float(f1[valid].mean()))
