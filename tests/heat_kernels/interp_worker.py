"""Run Triton kernels in the interpreter, in a fresh Python process.

``TRITON_INTERPRET=1`` only takes effect when it is set before triton is first imported (triton ``@jit``-compiles
its own standard library at import), and torch or another test may import triton earlier in a pytest (xdist)
worker. So the interpreter tests send their calls, with their inputs, to ``python interp_worker.py jobs results``
started with the variable set, and compare what comes back in the test process.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]

Job = tuple[str, tuple, dict]  # ("module:function", args, kwargs)


def run_in_interpreter(jobs: dict[str, Job], timeout: float = 300.0) -> dict[str, object]:
    """Run every job in one interpreter subprocess; a job's result is its return value or an ``InterpreterJobError``
    message string (``"ERROR: <traceback>"``)."""
    with tempfile.TemporaryDirectory() as tmp:
        jobs_path, out_path = os.path.join(tmp, "jobs.pt"), os.path.join(tmp, "results.pt")
        torch.save(jobs, jobs_path)
        env = dict(os.environ, TRITON_INTERPRET="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        proc = subprocess.run(
            [sys.executable, __file__, jobs_path, out_path], env=env, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the Triton interpreter worker failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
        return torch.load(out_path)


def opcheck(op_name: str, args: tuple) -> dict:
    """``torch.library.opcheck`` of ``torch.ops.heat_kernels.<op_name>`` (a job target)."""
    import heat_kernels  # noqa: F401 -- defines the ops

    return torch.library.opcheck(getattr(torch.ops.heat_kernels, op_name).default, args)


def _resolve(target: str):
    module, _, name = target.partition(":")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _main(jobs_path: str, out_path: str) -> None:
    from heat_kernels import extension

    assert extension.triton_interpret(), "expected TRITON_INTERPRET=1 in the worker"
    results = {}
    for key, (target, args, kwargs) in torch.load(jobs_path).items():
        try:
            results[key] = _resolve(target)(*args, **kwargs)
        except Exception:  # reported per job, the test that needs it fails with the traceback
            results[key] = "ERROR: " + traceback.format_exc()
    torch.save(results, out_path)


if __name__ == "__main__":
    _main(*sys.argv[1:3])
