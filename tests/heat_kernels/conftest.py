"""Fixtures shared by the kernel tests.

Triton interpreter runs happen in a subprocess (``interp_worker.py``): TRITON_INTERPRET=1 must be set before triton
is first imported, which this pytest worker may already have done (torch imports triton in places).
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from heat_kernels import extension

HAS_TRITON = importlib.util.find_spec("triton") is not None


class InterpreterResults(dict):
    """``{key: result}`` of the interpreter subprocess; reading a job that raised fails the test with its
    traceback."""

    def __getitem__(self, key):
        out = super().__getitem__(key)
        if isinstance(out, str):
            pytest.fail(out)
        return out


@pytest.fixture(scope="module")
def run_in_interpreter():
    """``run_in_interpreter(jobs)``: run ``{key: ("module:function", args, kwargs)}`` in a TRITON_INTERPRET=1
    subprocess and return :class:`InterpreterResults`."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    from interp_worker import run_in_interpreter

    return lambda jobs: InterpreterResults(run_in_interpreter(jobs))


@pytest.fixture
def cpp_ext():
    """The compiled extension; a missing build fails (a silent fallback would hide it) unless HEAT_NO_EXTENSION=1."""
    if os.environ.get("HEAT_NO_EXTENSION") == "1":
        pytest.skip("HEAT_NO_EXTENSION=1: the C++ extension is deliberately not built")
    assert extension.available(), "heat_kernels._C is not built: run `pip install --no-build-isolation -e .`"
    return extension.load()


def _max_err(out: torch.Tensor, gold: torch.Tensor) -> float:
    return (out.double().cpu() - gold).abs().max().item() if gold.numel() else 0.0


def _assert_close_to_gold(out: torch.Tensor, ref: torch.Tensor, gold: torch.Tensor, factor: float = 4.0) -> None:
    assert out.dtype == torch.float32 and out.shape == gold.shape, (out.dtype, out.shape, gold.shape)
    err, ref_err = _max_err(out, gold), _max_err(ref, gold)
    tol = factor * ref_err + 1e-6 * max(1.0, gold.abs().max().item() if gold.numel() else 0.0)
    assert err <= tol, f"error {err:.3g} > tolerance {tol:.3g} (fp32 reference's own error {ref_err:.3g})"


@pytest.fixture
def assert_close_to_gold():
    """Tolerance of every kernel test: the kernel's max error against an fp64 gold (computed from the same,
    already rounded inputs) is at most 4x the fp32 reference's own max error against that gold, plus a floor of
    1e-6 x max(1, max|gold|) for cases where the reference happens to be exact."""
    return _assert_close_to_gold
