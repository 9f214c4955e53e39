"""The Soft-NC / Soft-NS Metric classes: log ratio, one kind alone, ``forward()``, option checks."""

from __future__ import annotations

import math

import pytest
import torch

from heat_module.metrics import SoftFaithfulness, SoftNC
from heat_module.metrics.functional import soft_faithfulness


def test_log_ratio_one_kind_and_forward(forward_fn, batch, scores):
    """The reported log ratio is ln(method / random); SoftNC reports Soft-NC alone; torchmetrics ``forward()`` gives
    the batch's value (class = functional form for every registered metric: test_classes_equal_functional.py)."""
    x, mask, targets, _ = batch
    expected = soft_faithfulness(scores, x, mask, forward_fn, num_masks=2, seed=1)
    metric = SoftFaithfulness(forward_fn, num_masks=2, seed=1)
    metric.update(scores, x, mask, targets)
    got = metric.compute()
    assert got["soft_nc_log_ratio"] == pytest.approx(math.log(got["soft_nc"] / got["soft_nc_random"]), rel=1e-5)
    nc = SoftNC(forward_fn, num_masks=2, seed=1)
    nc.update(scores, x, mask, targets)
    assert set(nc.compute()) == {"soft_nc", "soft_nc_random", "soft_nc_log_ratio"}
    batch_value = SoftNC(forward_fn, num_masks=2, seed=1)(scores, x, mask, targets)  # torchmetrics forward()
    torch.testing.assert_close(batch_value["soft_nc"], expected["soft_nc"], atol=1e-6, rtol=1e-6)


def test_option_errors(forward_fn):
    with pytest.raises(ValueError, match="Expected definition"):
        SoftNC(forward_fn, definition="paper")
