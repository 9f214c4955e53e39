"""The Sensitivity Metric class: accumulating over updates equals the functional form, which grows with δ."""

from __future__ import annotations

import pytest
import torch

from heat_module.metrics import Sensitivity
from heat_module.metrics.functional import sensitivity
from heat_module.testing import grad_x_input_fn


def test_class_equals_functional_across_updates_and_grows_with_delta(model, batch):
    x, mask, targets, _ = batch
    attribute = grad_x_input_fn(model)
    metric = Sensitivity(attribute, num_samples=3, delta=0.05)
    metric.update(x[:1], mask[:1], targets[:1])
    metric.update(x[1:], mask[1:], targets[1:])
    expected = sensitivity(x, mask, targets, attribute, num_samples=3, delta=0.05)
    torch.testing.assert_close(metric.compute(), expected, atol=1e-6, rtol=1e-5)
    assert float(sensitivity(x, mask, targets, attribute, num_samples=3, delta=0.0)) == 0.0
    assert float(sensitivity(x, mask, targets, attribute, num_samples=3, delta=0.5)) > float(expected)
    assert not Sensitivity.higher_is_better
    with pytest.raises(ValueError, match="Expected num_samples >= 2"):
        Sensitivity(attribute, num_samples=1)
