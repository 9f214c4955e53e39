"""Evidence recall against a brute-force reference written here: the mean, over every tie-breaking order of the
context tokens, of |top k ∩ evidence| / |evidence|, on small hand-made examples."""

from __future__ import annotations

import itertools

import pytest
import torch

from heat_module.metrics import EvidenceRecall
from heat_module.metrics.functional import evidence_recall
from heat_module.metrics.functional.evidence_recall import evidence_recall_values


def reference_recall(scores: list[float], evidence: list[int], top_k: int | None, exclude_last: int,
                     protected: list[int]) -> float:
    """One unpadded example: average over all permutations used as tie-breakers."""
    n = len(scores)
    ctx = [i for i in range(n - exclude_last) if i not in protected]
    ev = [i for i in evidence if i in ctx]
    k = min(top_k if top_k is not None else len(ev), len(ctx))
    total, count = 0.0, 0
    for perm in itertools.permutations(range(len(ctx))):
        order = sorted(range(len(ctx)), key=lambda c: (-scores[ctx[c]], perm[c]))
        top = {ctx[c] for c in order[:k]}
        total += len(top & set(ev)) / len(ev)
        count += 1
    return total / count


CASES = [  # (scores, evidence, top_k, exclude_last, protected)
    ([0.1, 0.9, 0.3, 0.3, 5.0, 0.2], [2, 3], None, 1, []),
    ([0.0, 0.0, 0.0, 0.0, 0.0, 1.0], [0], None, 1, []),  # all mass on the last token: chance level 1/5
    ([0.2, 0.2, 0.7, 0.2, 0.1, 0.4, 3.0], [0, 3], 3, 1, [2]),
    ([1.0, -1.0, 0.5, 0.5, 0.5, 0.0, 2.0], [3, 6], 2, 0, []),
    ([0.3, 0.3, 0.3, 0.9, 0.9, 0.1, 0.0], [1, 4, 6], None, 2, [5]),
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_matches_the_brute_force_reference(case):
    scores, evidence, top_k, exclude_last, protected = case
    n = len(scores)
    pad = 2  # left padding with junk scores that must be ignored
    s = torch.tensor([[9.0] * pad + scores])
    mask = torch.tensor([[0] * pad + [1] * n])
    got = evidence_recall_values(s, [evidence], mask, top_k, exclude_last, [protected])
    want = reference_recall(scores, evidence, top_k, exclude_last, protected)
    assert got.item() == pytest.approx(want, abs=1e-6)


def test_the_last_token_cannot_win_and_ties_are_not_broken_by_position():
    """All mass on the final token: with it excluded the scores are constant over the context, so an early evidence
    token gets chance level k/|C|, not the 1.0 that breaking ties by position would give it."""
    s = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]])
    assert evidence_recall(s, [[0]]).item() == pytest.approx(0.25)
    assert evidence_recall(s, [[4]], exclude_last=0).item() == pytest.approx(1.0)


def test_class_equals_functional_across_updates():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (4, 8), generator=g).float()  # many ties
    mask = torch.ones(4, 8, dtype=torch.long)
    mask[1, :3] = 0
    evidence = [[0, 2], [1], [5, 6], [3]]
    metric = EvidenceRecall(top_k=2)
    metric.update(scores[:2], evidence[:2], mask[:2])
    metric.update(scores[2:], evidence[2:], mask[2:])
    want = evidence_recall(scores, evidence, mask, top_k=2)
    assert metric.compute().item() == pytest.approx(want.item(), abs=1e-6)
    assert EvidenceRecall.higher_is_better


def test_errors():
    with pytest.raises(ValueError, match="Expected top_k"):
        EvidenceRecall(top_k=0)
    with pytest.raises(ValueError, match="Expected exclude_last"):
        EvidenceRecall(exclude_last=-2)
    with pytest.raises(ValueError, match="Expected at least one evidence token"):
        evidence_recall(torch.ones(1, 4), [[3]])  # the only evidence token is the excluded last one
