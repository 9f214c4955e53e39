"""Stable hashes: one definition of "the hash of a config" (writer resume, evaluation cache) and of a seed.

``stable_hash`` is the sha1 of the JSON of ``obj`` with sorted keys (``default=str`` for anything JSON does not
know), truncated to ``length`` hex digits: equal for equal contents in every process and Python version.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def stable_hash(obj: Any, length: int = 12) -> str:
    """``length`` hex digits of sha1(JSON of ``obj`` with sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:length]


def digest_seed(seed: int, data: bytes) -> int:
    """A 63-bit generator seed from an integer ``seed`` and ``data`` (sha256), e.g. an example's token-id bytes."""
    h = hashlib.sha256(int(seed).to_bytes(8, "little", signed=True))
    h.update(data)
    return int.from_bytes(h.digest()[:8], "little") & (2**63 - 1)
