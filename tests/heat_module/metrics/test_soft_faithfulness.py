"""The Soft-NC / Soft-NS Metric classes: accumulating over updates equals the functional forms; option checks."""

from __future__ import annotations

import math

import pytest
import torch

from heat_module.metrics import SoftFaithfulness, SoftNC, SoftNS
from heat_module.metrics.functional import soft_faithfulness, soft_nc, soft_ns


def test_class_equals_functional_across_updates(forward_fn, batch, scores):
    x, mask, targets, _ = batch
    expected = soft_faithfulness(scores, x, mask, forward_fn, num_masks=2, seed=1)
    metric = SoftFaithfulness(forward_fn, num_masks=2, seed=1)
    metric.update(scores[:2], x[:2], mask[:2], targets[:2])
    metric.update(scores[2:], x[2:], mask[2:], targets[2:])
    got = metric.compute()
    assert set(got) == {"soft_nc", "soft_nc_random", "soft_nc_log_ratio", "soft_ns", "soft_ns_random",
                        "soft_ns_log_ratio"}
    for k in expected:  # Soft-NS is 0 for every example here, so its log ratio is NaN on both sides
        torch.testing.assert_close(got[k], expected[k], atol=1e-6, rtol=1e-6, equal_nan=True)
    assert got["soft_nc_log_ratio"] == pytest.approx(math.log(got["soft_nc"] / got["soft_nc_random"]), rel=1e-5)
    nc, ns = SoftNC(forward_fn, num_masks=2, seed=1), SoftNS(forward_fn, num_masks=2, seed=1)
    nc.update(scores, x, mask, targets)
    ns.update(scores, x, mask, targets)
    assert set(nc.compute()) == {"soft_nc", "soft_nc_random", "soft_nc_log_ratio"}
    torch.testing.assert_close(nc.compute()["soft_nc"], expected["soft_nc"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ns.compute()["soft_ns"], expected["soft_ns"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(soft_nc(scores, x, mask, forward_fn, num_masks=2, seed=1)["soft_nc"],
                               expected["soft_nc"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(soft_ns(scores, x, mask, forward_fn, num_masks=2, seed=1)["soft_ns"],
                               expected["soft_ns"], atol=1e-6, rtol=1e-6)
    assert SoftNC.higher_is_better and not SoftNC.full_state_update
    batch_value = SoftNC(forward_fn, num_masks=2, seed=1)(scores, x, mask, targets)  # torchmetrics forward()
    torch.testing.assert_close(batch_value["soft_nc"], expected["soft_nc"], atol=1e-6, rtol=1e-6)


def test_option_errors(forward_fn):
    with pytest.raises(ValueError, match="Expected definition"):
        SoftNC(forward_fn, definition="paper")
