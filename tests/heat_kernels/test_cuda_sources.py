"""Static checks of the CUDA sources that a CPU-only machine can make (the kernels themselves run only on a GPU).

A kernel that opts in to more than 48 KiB of dynamic shared memory must check the request against the device's
own opt-in limit before launching (A100 / sm_80 allows 163 KiB, H100 / sm_90 227 KiB): otherwise a large problem
fails at launch with CUDA's opaque "invalid argument". Every local header the sources include must be shipped with
the wheel and the source distribution, or the first-use build of an installed package fails.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "csrc"
CU_FILES = sorted(CSRC.glob("*.cu"))


@pytest.mark.parametrize("source", CU_FILES, ids=lambda p: p.name)
def test_shared_memory_opt_in_is_checked_against_the_device_limit(source: Path):
    text = source.read_text()
    if "cudaFuncAttributeMaxDynamicSharedMemorySize" not in text:
        pytest.skip(f"{source.name} does not opt in to more shared memory")
    assert "max_dynamic_shared_memory(" in text, (
        f"Expected {source.name} to check its shared memory against max_dynamic_shared_memory(device) before the "
        "launch, got an opt-in without that check"
    )
    assert not re.search(r"\bsmem\w*\s*<=\s*\d+\s*\*\s*1024", text), (
        f"Expected no hard-coded shared-memory limit in {source.name} (devices differ), got one"
    )


def _shipped_patterns() -> tuple[list[str], list[str]]:
    setup = (REPO / "setup.py").read_text()
    wheel = re.search(r"KERNEL_SOURCES = \(([^)]*)\)", setup)
    assert wheel, "Expected KERNEL_SOURCES = (...) in setup.py"
    wheel_patterns = [p.removeprefix("csrc/") for p in re.findall(r'"([^"]+)"', wheel.group(1))]
    manifest = (REPO / "MANIFEST.in").read_text()
    sdist = re.search(r"recursive-include csrc (.*)", manifest)
    assert sdist, "Expected 'recursive-include csrc ...' in MANIFEST.in"
    return wheel_patterns, sdist.group(1).split()


def test_every_local_header_is_shipped():
    wheel_patterns, sdist_patterns = _shipped_patterns()
    included = set()
    for source in CSRC.iterdir():
        if source.suffix in {".cu", ".cpp", ".h", ".cuh"}:
            included.update(re.findall(r'#include "([^"]+)"', source.read_text()))
    assert included, "Expected the sources to include at least one local header"
    for name in sorted(included):
        assert (CSRC / name).exists(), f"Expected csrc/{name} (included by a source), got no such file"
        assert any(fnmatch.fnmatch(name, p) for p in wheel_patterns), (
            f"Expected setup.py's KERNEL_SOURCES {wheel_patterns} to ship csrc/{name}, got no matching pattern")
        assert any(fnmatch.fnmatch(name, p) for p in sdist_patterns), (
            f"Expected MANIFEST.in's csrc patterns {sdist_patterns} to ship csrc/{name}, got no matching pattern")
