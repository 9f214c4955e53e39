"""The position-controlled score: paired per-example differences, checked on numbers written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from heat_module.metrics.functional import position_controlled


def test_paired_differences_by_hand():
    got = position_controlled(torch.tensor([0.5, 0.25, 1.0]), [0.125, 0.25, 1.5])
    assert got.tolist() == [0.375, 0.0, -0.5]
    assert got.dtype == torch.float64


def test_refuses_unpaired_or_non_finite_values():
    with pytest.raises(ValueError, match="Expected metric_values and prior_values"):
        position_controlled([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="Expected finite values"):
        position_controlled([1.0, math.nan], [1.0, 2.0])
