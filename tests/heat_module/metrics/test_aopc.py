"""The AOPC Metric class: its option checks (class = functional form: test_classes_equal_functional.py)."""

from __future__ import annotations

import pytest

from heat_module.metrics import AOPC


def test_option_errors(forward_fn):
    with pytest.raises(ValueError, match=r"Expected percents in \(0, 100\]"):
        AOPC(forward_fn, percents=(0, 10))
