"""Sensitivity (eq. 19) against a per-example, per-sample loop with a gradient-based attribute_fn."""

from __future__ import annotations

import math

import pytest
import torch

from heat_module.metrics.functional.common import example_generator
from heat_module.metrics.functional.sensitivity import sensitivity_values
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
    got = sensitivity_values(x, mask, targets, attribute, num_samples=4, delta=0.05, seed=2, batch_size=5,
                              normalize=normalize)
    for b, (e, y) in enumerate(examples):
        assert got[b] == pytest.approx(reference(attribute, e, y, 4, 0.05, 2, normalize), rel=1e-4, abs=1e-6)
