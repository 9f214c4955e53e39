"""Loader of the compiled extension ``heat_kernels._C`` and of Triton.

``heat_kernels._C`` (built by ``setup.py`` from ``csrc/``) registers the C++ CPU kernels, and on a CUDA build the
CUDA kernels, as implementations of the ``torch.ops.heat_kernels.*`` ops whose schemas the op files define. It is
optional: without it the CPU dispatch falls back to the pure-torch references. Triton is optional too and is only
imported when a Triton kernel is first needed, so ``import heat_kernels`` works without it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import warnings
from types import ModuleType


@functools.cache
def load() -> ModuleType | None:
    """Import ``heat_kernels._C`` (registering its kernels) once; ``None`` when it was not built or cannot be
    loaded (e.g. built against another torch: a warning says so, and the CPU dispatch uses the references)."""
    if importlib.util.find_spec("heat_kernels._C") is None:
        return None
    try:
        return importlib.import_module("heat_kernels._C")
    except (ImportError, OSError) as err:
        warnings.warn(f"heat_kernels._C exists but cannot be loaded ({err}); rebuild it", RuntimeWarning, stacklevel=2)
        return None


def available() -> bool:
    """Whether the compiled C++ kernels (CPU) are available."""
    return load() is not None


def has_cuda() -> bool:
    """Whether the compiled extension contains the CUDA kernels (built against a CUDA torch)."""
    ext = load()
    return ext is not None and bool(ext.with_cuda())


def triton_available() -> bool:
    """Whether Triton can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def _interpret_env() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_interpret() -> bool:
    """Whether Triton kernels run in the interpreter.

    Triton fixes this when it is first imported: its own standard library (``tl.sum``, ``tl.max``, ...) is
    ``@jit``-decorated at import, as an interpreted function only if ``TRITON_INTERPRET=1`` was set then. So once
    triton is imported its mode wins over the current environment (the kernels here are defined lazily, at first
    use, in that same mode); before that, the environment decides.
    """
    std = sys.modules.get("triton.language.standard")
    if std is not None and hasattr(std, "sum"):
        return type(std.sum).__name__ == "InterpretedFunction"
    return _interpret_env()


def require_extension(op: str, cuda: bool = False) -> None:
    """Raise a clear error when the compiled extension (or its CUDA part) needed by ``op`` is missing."""
    if not available():
        raise RuntimeError(
            f"{op}: expected the compiled extension heat_kernels._C for this backend, got none "
            "(build it with `pip install --no-build-isolation -e .` or `python setup.py build_ext --inplace`)"
        )
    if cuda and not has_cuda():
        raise RuntimeError(f"{op}: expected heat_kernels._C built with CUDA kernels, got a CPU-only build")


def require_triton(op: str, device_type: str) -> None:
    """Raise a clear error when the Triton path of ``op`` cannot run on ``device_type`` tensors."""
    if not triton_available():
        raise RuntimeError(f"{op}: expected triton to be installed for backend='triton', got none")
    if device_type != "cuda" and not triton_interpret():
        late = " (it is set, but triton was already imported without it in this process)" if _interpret_env() else ""
        raise RuntimeError(
            f"{op}: backend='triton' expected CUDA tensors, got {device_type} tensors; on CPU the Triton kernel only "
            f"runs in the interpreter: set TRITON_INTERPRET=1 before triton is first imported{late}"
        )


def resolve_backend(op: str, backend: str, device_type: str) -> str:
    """Turn ``backend`` into a concrete one for tensors on ``device_type`` and check that it can run there.

    ``"auto"``: CUDA tensors -> Triton (else the CUDA op, else the reference); CPU tensors -> the C++ op when the
    extension is built, else the reference; other devices -> the reference.
    """
    if backend == "auto":
        if device_type == "cuda":
            return "triton" if triton_available() else ("cuda" if has_cuda() else "torch")
        return "cpp" if device_type == "cpu" and available() else "torch"
    if backend == "torch":
        return backend
    if backend == "cpp":
        if device_type != "cpu":
            raise RuntimeError(f"{op}: backend='cpp' expected CPU tensors, got {device_type} tensors")
        require_extension(op)
    elif backend == "cuda":
        if device_type != "cuda":
            raise RuntimeError(f"{op}: backend='cuda' expected CUDA tensors, got {device_type} tensors")
        require_extension(op, cuda=True)
    elif backend == "triton":
        require_triton(op, device_type)
    else:
        raise ValueError(f"{op}: expected backend in ('auto', 'torch', 'cpp', 'cuda', 'triton'), got {backend!r}")
    return backend
