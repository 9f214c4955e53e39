"""Fixtures of the data-module tests: the tiny word-level tokenizer and the fixture directory."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture(scope="module")
def tok():
    from heat_module.testing import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
