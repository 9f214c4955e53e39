"""The DSA Metric class: accumulating over updates equals the functional form."""

from __future__ import annotations

import torch

from heat_module.metrics import DSA
from heat_module.metrics.functional import dsa


def test_class_equals_functional_across_updates():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(5, 6, generator=g)
    gold = torch.rand(5, 6, generator=g) > 0.6
    distractor = ~gold & (torch.rand(5, 6, generator=g) > 0.5)
    metric = DSA()
    metric.update(scores[:2], gold[:2], distractor[:2])
    metric.update(scores[2:], gold[2:], distractor[2:])
    torch.testing.assert_close(metric.compute(), dsa(scores, gold, distractor))
    assert DSA.higher_is_better and not DSA.full_state_update
