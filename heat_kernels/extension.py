"""Loader of the compiled extension and of Triton.

The compiled extension registers the C++ CPU kernels, and on a CUDA build the CUDA kernels, as implementations of the
``torch.ops.heat_kernels.*`` ops whose schemas the op files define. It comes from one of two places:

1. ``heat_kernels._C``, built in place ahead of time by a non-isolated install (``pip install --no-build-isolation
   -e .``, as the Makefile does) when torch is importable at build time;
2. otherwise it is compiled on first use with ``torch.utils.cpp_extension.load`` from the C++ sources the wheel ships
   (``heat_kernels/csrc``; ``csrc/`` in a source checkout) into a cache folder keyed by the torch version, the
   Python ABI and a hash of the sources and flags (``$HEAT_CACHE_DIR/kernels`` or the platform's user cache dir),
   under a file lock so that parallel processes (DDP ranks, pytest-xdist workers) build it once. Later processes
   import the cached build directly (no compiler needed then).

When neither works (no C++ compiler, no ninja, a failed build) the CPU dispatch falls back to the pure-torch
references, with one warning per process that says why. ``HEAT_NO_EXTENSION=1`` turns the first-use build off
(silently); ``HEAT_BUILD_CUDA=0`` keeps the CUDA sources out of it (by default they are compiled in when torch has
CUDA and ``CUDA_HOME`` is found). :func:`extension_info` reports which extension was loaded.

Triton is optional too and is only imported when a Triton kernel is first needed, so ``import heat_kernels`` works
without it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import logging
import os
import platform
import shutil
import sys
import warnings
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

# Compile flags of the first-use build (setup.py uses the same for the ahead-of-time build).
_CFLAGS = ["-O3", "-std=c++17"] + (["-fopenmp"] if sys.platform.startswith("linux") else [])
_LDFLAGS = ["-fopenmp"] if sys.platform.startswith("linux") else []
_NVCC_FLAGS = ["-O3", "-std=c++17", "--use_fast_math"]
_FALLBACK = "the CPU ops use the pure-torch references instead (same results, slower)"

# What load() found: source "prebuilt" (heat_kernels._C), "jit" (compiled on first use) or None; path; reason.
_INFO: dict[str, object] = {"source": None, "path": None, "reason": "not loaded yet"}


def cache_dir() -> Path:
    """Root of the build cache (``$HEAT_CACHE_DIR`` or the platform's user cache dir, as for converted models)."""
    root = os.environ.get("HEAT_CACHE_DIR")
    if root:
        return Path(root)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("heat-attribution"))


def source_dir() -> Path | None:
    """The folder of the C++/CUDA sources: ``heat_kernels/csrc`` in an installed wheel, ``csrc/`` in a checkout."""
    here = Path(__file__).resolve().parent
    for folder in (here / "csrc", here.parent / "csrc"):
        if any(folder.glob("*.cpp")):
            return folder
    return None


def _want_cuda(cuda_sources: list[Path]) -> bool:
    """Whether the first-use build compiles the CUDA kernels too (``HEAT_BUILD_CUDA``: ``0`` never, ``1`` always,
    unset: when torch has CUDA and ``CUDA_HOME`` is found)."""
    flag = os.environ.get("HEAT_BUILD_CUDA", "")
    if flag == "0" or not cuda_sources:
        return False
    import torch
    from torch.utils import cpp_extension

    possible = bool(torch.version.cuda) and cpp_extension.CUDA_HOME is not None
    if flag == "1" and not possible:
        raise RuntimeError(
            f"HEAT_BUILD_CUDA=1: expected a CUDA torch and a CUDA toolkit (CUDA_HOME), got torch.version.cuda="
            f"{torch.version.cuda!r} and CUDA_HOME={cpp_extension.CUDA_HOME!r}"
        )
    return possible


def _build_key(files: list[Path], cuda: bool) -> str:
    """Cache folder name: torch version, Python ABI, CPU/CUDA and a hash of the sources and flags."""
    import torch

    digest = hashlib.sha256()
    for f in sorted(files):
        digest.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    digest.update(repr((_CFLAGS, _LDFLAGS, _NVCC_FLAGS if cuda else None, torch.version.cuda if cuda else None,
                        platform.machine(), sys.platform)).encode())
    torch_version = torch.__version__.replace("+", "_")
    return f"torch{torch_version}-{sys.implementation.cache_tag}-{'cuda' if cuda else 'cpu'}-{digest.hexdigest()[:16]}"


def _find_ninja() -> bool:
    """Whether ``ninja`` (which ``cpp_extension.load`` runs) is on PATH; the PyPI ``ninja`` package's binary is
    added to PATH when the environment's ``bin`` folder is not on it (a console script run without activating)."""
    if shutil.which("ninja"):
        return True
    for folder in (os.path.dirname(sys.executable), _ninja_package_bin()):
        if folder and shutil.which("ninja", path=folder):
            os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")
            return True
    return False


def _ninja_package_bin() -> str | None:
    try:
        import ninja  # the PyPI wheel that ships the binary
    except ImportError:
        return None
    return getattr(ninja, "BIN_DIR", None)


def _import_built(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"Expected an extension module at {path}, got none")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def _compiler() -> str | None:
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx.split()[0])
    return next((shutil.which(c) for c in ("c++", "g++", "clang++") if shutil.which(c)), None)


def _load_jit() -> ModuleType | str:
    """Import the first-use build from the cache, compiling it first if needed; the reason as a string when it
    cannot be had."""
    folder = source_dir()
    if folder is None:
        return "expected the C++ sources (heat_kernels/csrc/*.cpp) to be installed, got none"
    cpp_sources = sorted(folder.glob("*.cpp"))
    cuda_sources = sorted(folder.glob("*.cu"))
    cuda = _want_cuda(cuda_sources)
    cuda_files = cuda_sources + sorted(folder.glob("*.cuh")) if cuda else []
    key = _build_key(cpp_sources + cuda_files + sorted(folder.glob("*.h")), cuda)
    build_dir = cache_dir() / "kernels" / key
    name = "heat_kernels_C_" + key.rsplit("-", 1)[-1]
    library = build_dir / f"{name}{'.pyd' if sys.platform == 'win32' else '.so'}"
    done = build_dir / ".complete"
    if done.exists() and library.exists():
        return _import_built(name, library)
    if _compiler() is None:
        return "no C++ compiler was found (install g++ or clang++, or set CXX)"
    if not _find_ninja():
        return "ninja was not found (pip install ninja)"
    from filelock import FileLock
    from torch.utils import cpp_extension

    build_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(build_dir / "build.lock")):
        if done.exists() and library.exists():  # another process built it while this one waited
            return _import_built(name, library)
        log.warning("heat_kernels: compiling the C++ kernels%s once into %s (about a minute)",
                    " and CUDA kernels" if cuda else "", build_dir)
        defines = ["-DHEAT_WITH_CUDA=1"] if cuda else []
        try:
            module = cpp_extension.load(
                name=name,
                sources=[str(s) for s in cpp_sources + (cuda_sources if cuda else [])],
                extra_cflags=_CFLAGS + defines,
                extra_cuda_cflags=_NVCC_FLAGS + defines if cuda else None,
                extra_ldflags=_LDFLAGS,
                build_directory=str(build_dir),
                with_cuda=cuda,
                verbose=False,
            )
        except Exception as err:  # compiler errors come as RuntimeError/CalledProcessError with the log
            tail = str(err).strip().splitlines()[-5:]
            return f"compiling {folder} failed ({' | '.join(tail)})"
        done.write_text(f"{name}\n")
    sys.modules[name] = module
    return module


def _prebuilt() -> ModuleType | None:
    """``heat_kernels._C`` when it was built ahead of time (``None`` when absent; raises when it does not load)."""
    if importlib.util.find_spec("heat_kernels._C") is None:
        return None
    return importlib.import_module("heat_kernels._C")


@functools.cache
def load() -> ModuleType | None:
    """Import the compiled extension once (registering its kernels): the prebuilt ``heat_kernels._C`` when it
    loads, else the first-use build (compiled and cached if needed); ``None`` (with one warning saying why) when
    neither can be had, and then the CPU dispatch uses the references."""
    problems = []
    try:
        module = _prebuilt()
    except (ImportError, OSError) as err:  # e.g. built against another torch
        problems.append(f"heat_kernels._C exists but cannot be loaded ({err}); rebuild it")
    else:
        if module is not None:
            _INFO.update(source="prebuilt", path=module.__file__, reason=None)
            return module
    if os.environ.get("HEAT_NO_EXTENSION") == "1":
        _INFO.update(source=None, path=None, reason="HEAT_NO_EXTENSION=1")
        if problems:
            warnings.warn(f"{problems[0]}; {_FALLBACK}", RuntimeWarning, stacklevel=2)
        return None
    try:
        result = _load_jit()
    except (ImportError, OSError) as err:  # a cached build that does not load
        result = f"the cached build cannot be loaded ({err}); delete {cache_dir() / 'kernels'}"
    if isinstance(result, ModuleType):
        if problems:
            log.info("%s; using the first-use build %s", problems[0], result.__file__)
        _INFO.update(source="jit", path=result.__file__, reason=None)
        return result
    problems.append(result)
    _INFO.update(source=None, path=None, reason="; ".join(problems))
    warnings.warn(f"heat_kernels: the C++ kernels are unavailable: {'; '.join(problems)}; {_FALLBACK}",
                  RuntimeWarning, stacklevel=2)
    return None


def extension_info() -> dict[str, object]:
    """Which compiled extension is in use (loading it if not yet done): ``{"source": "prebuilt" | "jit" | None,
    "path": the library file or None, "with_cuda": bool, "reason": why there is none, or None}``."""
    ext = load()
    return {**_INFO, "with_cuda": ext is not None and bool(ext.with_cuda())}


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
            f"{op}: expected the compiled extension for this backend, got none ({_INFO['reason']}); it is built on "
            "first use when a C++ compiler and ninja are present, or ahead of time with "
            "`pip install --no-build-isolation -e .`"
        )
    if cuda and not has_cuda():
        raise RuntimeError(
            f"{op}: expected the compiled extension built with CUDA kernels, got a CPU-only build "
            f"({_INFO['path']}); on a CUDA box install a CUDA torch and the CUDA toolkit (CUDA_HOME)"
        )


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
