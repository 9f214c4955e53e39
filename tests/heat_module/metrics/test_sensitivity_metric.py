"""Sensitivity grows with the noise scale δ and is 0 without noise (class = functional form:
test_classes_equal_functional.py)."""

from __future__ import annotations

import pytest

from heat_module.metrics import Sensitivity
from heat_module.metrics.functional import sensitivity
from heat_module.testing import grad_x_input_fn


def test_grows_with_delta_and_checks_its_options(model, batch):
    x, mask, targets, _ = batch
    attribute = grad_x_input_fn(model)
    small = sensitivity(x, mask, targets, attribute, num_samples=3, delta=0.05)
    assert float(sensitivity(x, mask, targets, attribute, num_samples=3, delta=0.0)) == 0.0
    assert float(sensitivity(x, mask, targets, attribute, num_samples=3, delta=0.5)) > float(small)
    assert not Sensitivity.higher_is_better
    with pytest.raises(ValueError, match="Expected num_samples >= 2"):
        Sensitivity(attribute, num_samples=1)
