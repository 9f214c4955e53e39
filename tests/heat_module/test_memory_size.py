"""Memory sizes as users write them (``HEATConfig(max_memory=...)``)."""

from __future__ import annotations

import pytest

from heat_module.memory_size import parse_memory


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), (1000, 1000), (2.5e9, 2_500_000_000), ("6GB", 6 * 10**9), ("6 gb", 6 * 10**9),
    ("512MiB", 512 * 2**20), ("1.5GiB", int(1.5 * 2**30)), ("100", 100), ("2TB", 2 * 10**12),
])
def test_parse_memory(value, expected):
    assert parse_memory(value) == expected


@pytest.mark.parametrize("value", ["lots", "6 GX", "-1GB", 0, True, [1], "GB"])
def test_parse_memory_refuses(value):
    with pytest.raises(ValueError, match="max_memory"):
        parse_memory(value)
