"""F1 / Span-F1 alignment against set arithmetic written here, by hand on small cases."""

from __future__ import annotations

import pytest
import torch

from heat_module.metrics.functional import f1_alignment
from heat_module.metrics.functional.f1_alignment import f1_alignment_values


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
    f1, span, valid = f1_alignment_values(scores, gold, mask)
    assert valid.all()
    for b in range(4):
        ref = reference(scores[b, mask[b].bool()].tolist(), gold[b])
        assert (float(f1[b]), float(span[b])) == pytest.approx(ref), b


