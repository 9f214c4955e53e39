"""``heat_kernels.extension.load`` without a prebuilt ``heat_kernels._C``: the first-use build is cached per source hash
and built under a file lock, and a missing compiler gives one warning and the pure-torch fallback.

The compiler itself is not run here (``cpp_extension.load`` is replaced by a fake); the slow wheel test
(``test_wheel.py``) compiles for real in a fresh venv.
"""

from __future__ import annotations

import types
import warnings

import pytest
from filelock import FileLock, Timeout

from heat_kernels import extension


@pytest.fixture
def no_prebuilt(monkeypatch, tmp_path):
    """``load()`` as in a wheel install: no ``heat_kernels._C``, an empty cache; the real state is restored after."""
    monkeypatch.setattr(extension, "_prebuilt", lambda: None)
    monkeypatch.setenv("HEAT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HEAT_NO_EXTENSION", raising=False)
    monkeypatch.setenv("HEAT_BUILD_CUDA", "0")
    saved = dict(extension._INFO)
    extension.load.cache_clear()
    yield tmp_path / "cache"
    extension.load.cache_clear()
    extension._INFO.clear()
    extension._INFO.update(saved)


def test_no_compiler_warns_once_and_falls_back(no_prebuilt, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert extension.load() is None
        assert extension.load() is None
        assert not extension.available()
        assert extension.resolve_backend("rollout_phi", "auto", "cpu") == "torch"
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "no C++ compiler" in messages[0] and "references" in messages[0], messages
    info = extension.extension_info()
    assert info["source"] is None and "no C++ compiler" in info["reason"]
    with pytest.raises(RuntimeError, match=r"no C\+\+ compiler"):
        extension.require_extension("rollout_phi")


def test_no_extension_env_is_silent(no_prebuilt, monkeypatch):
    monkeypatch.setenv("HEAT_NO_EXTENSION", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert extension.load() is None
    assert extension.extension_info()["reason"] == "HEAT_NO_EXTENSION=1"


def test_first_use_build_is_locked_cached_and_reused(no_prebuilt, monkeypatch):
    from torch.utils import cpp_extension

    calls, imported = [], []
    monkeypatch.setattr(extension, "_compiler", lambda: "/usr/bin/c++")
    monkeypatch.setattr(extension, "_find_ninja", lambda: True)

    def fake_build(name, sources, build_directory, **kwargs):
        lock = FileLock(f"{build_directory}/build.lock", timeout=0)
        with pytest.raises(Timeout):  # the builder runs while this process holds the build lock
            lock.acquire()
        assert any(s.endswith("heat_ops.cpp") for s in sources) and not any(s.endswith(".cu") for s in sources)
        (no_prebuilt / "kernels").mkdir(parents=True, exist_ok=True)
        open(f"{build_directory}/{name}.so", "wb").close()
        calls.append(name)
        module = types.ModuleType(name)
        module.__file__ = f"{build_directory}/{name}.so"
        module.with_cuda = lambda: False
        return module

    def fake_import(name, path):
        imported.append(path)
        module = types.ModuleType(name)
        module.__file__ = str(path)
        module.with_cuda = lambda: False
        return module

    monkeypatch.setattr(cpp_extension, "load", fake_build)
    monkeypatch.setattr(extension, "_import_built", fake_import)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        first = extension.load()
    assert first is not None and len(calls) == 1 and not imported
    (build_dir,) = (no_prebuilt / "kernels").iterdir()
    assert (build_dir / ".complete").exists() and "-cpu-" in build_dir.name
    import torch

    assert build_dir.name.startswith(f"torch{torch.__version__.replace('+', '_')}-")
    assert extension.extension_info()["source"] == "jit"

    extension.load.cache_clear()  # a new process: the cached build is imported, nothing is compiled
    second = extension.load()
    assert second is not None and len(calls) == 1 and len(imported) == 1 and imported[0].parent == build_dir


def test_build_key_follows_the_sources(tmp_path):
    a = tmp_path / "a.cpp"
    a.write_text("int f() { return 1; }")
    key1 = extension._build_key([a], cuda=False)
    a.write_text("int f() { return 2; }")
    key2 = extension._build_key([a], cuda=False)
    assert key1 != key2 and key1.rsplit("-", 1)[0] == key2.rsplit("-", 1)[0]


def test_installed_sources_are_found():
    folder = extension.source_dir()
    assert folder is not None and (folder / "heat_ops.cpp").exists()
