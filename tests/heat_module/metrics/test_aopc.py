"""The AOPC Metric class: accumulating over updates equals the functional form; its option checks."""

from __future__ import annotations

import pytest
import torch

from heat_module.metrics import AOPC
from heat_module.metrics.functional import aopc


def test_class_equals_functional_across_updates(forward_fn, batch, scores):
    x, mask, targets, _ = batch
    metric = AOPC(forward_fn)
    for part in (slice(0, 1), slice(1, 3)):
        metric.update(scores[part], x[part], mask[part], targets[part])
    torch.testing.assert_close(metric.compute(), aopc(scores, x, mask, targets, forward_fn), atol=1e-6, rtol=1e-6)
    assert AOPC.higher_is_better and not AOPC.full_state_update


def test_option_errors(forward_fn):
    with pytest.raises(ValueError, match=r"Expected percents in \(0, 100\]"):
        AOPC(forward_fn, percents=(0, 10))
