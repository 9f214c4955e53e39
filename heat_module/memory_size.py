"""Memory sizes as users write them: a number of bytes or a string such as ``"6GB"`` or ``"512MiB"``.

Read by :class:`heat_module.config.HEATConfig` (``max_memory``) and by HEAT's memory planner
(:mod:`heat_module.heat.memory_plan`).
"""

from __future__ import annotations

import math
import re

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(value: int | float | str | None) -> int | None:
    """Bytes of a memory size: an int/float of bytes, or a string ``"<number><unit>"`` with unit B, KB, MB, GB, TB
    (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), case-insensitive; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"Expected max_memory to be a number of bytes, a string like '6GB', or None, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if match is None or match.group(2).lower() not in _UNITS:
            raise ValueError(f"Expected max_memory like '6GB', '512MiB' or a number of bytes, got {value!r}")
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise ValueError(f"Expected max_memory to be a number of bytes, a string like '6GB', or None, got {value!r}")
    size = number * _UNITS[unit]
    if not (math.isfinite(size) and size >= 1):
        raise ValueError(f"Expected max_memory to be at least 1 byte, got {value!r}")
    return int(size)
