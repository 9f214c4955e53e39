"""Sensitivity (eq. 19) against a per-example, per-sample loop; a gradient-based attribute_fn inside update."""

from __future__ import annotations

import math

import pytest
import torch

from heat_module.metrics import Sensitivity
from heat_module.metrics._common import example_generator
from heat_module.metrics.functional import sensitivity
from heat_module.metrics.sensitivity import _sensitivity_values
from heat_module.testing import grad_x_input_fn


def reference(attribute, x: torch.Tensor, y: int, num_samples: int, delta: float, seed: int, normalize: bool):
    n, d = x.shape
    noise = delta * torch.randn(num_samples, n, d, generator=example_generator(seed, x))
    rows = []
    for k in range(num_samples):
        s = attribute((x + noise[k])[None], torch.ones(1, n, dtype=torch.long), torch.tensor([y]))[0].tolist()
        if normalize:
            s = [max(0.0, v) for v in s]
            s = [v / sum(s) for v in s]
        rows.append(s)
    stds = []
    for i in range(n):
        col = [r[i] for r in rows]
        mean = sum(col) / len(col)
        stds.append(math.sqrt(sum((c - mean) ** 2 for c in col) / (len(col) - 1)))
    return sum(stds) / n


@pytest.mark.parametrize("normalize", [True, False], ids=["normalized", "raw"])
def test_matches_reference_padded(model, batch, normalize):
    x, mask, targets, examples = batch
    attribute = grad_x_input_fn(model)
    got = _sensitivity_values(x, mask, targets, attribute, num_samples=4, delta=0.05, seed=2, batch_size=5,
                              normalize=normalize)
    for b, (e, y) in enumerate(examples):
        assert got[b] == pytest.approx(reference(attribute, e, y, 4, 0.05, 2, normalize), rel=1e-4, abs=1e-6)


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
