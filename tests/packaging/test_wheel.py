"""The wheel installs like any library into an environment that already has torch.

Builds the wheel with build isolation (as a plain ``pip install .`` does), installs it with its dependencies into a
fresh venv that holds only the local CPU torch wheel, checks that no second torch came with it, then runs the
installed ``heat attribute`` console script on a tiny random llama saved to a folder and checks that the C++ kernels
were compiled on first use (not the pure-torch fallback). Needs the package index (PyPI or its mirror) for the
build requirements and dependencies; pip's cache keeps repeated runs fast.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TORCH_VERSION = "2.13.0"
FALLBACK_WARNING = "C++ kernels are unavailable"


def _find_links() -> list[str]:
    """Folders pip searches for local wheels: ``$PIP_FIND_LINKS`` and ``find-links`` of the pip configuration."""
    entries = os.environ.get("PIP_FIND_LINKS", "").split()
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip().endswith("find-links"):
            entries += value.strip().strip("'\"").split()
    return [e.removeprefix("file://") for e in entries]


def _local_torch_wheel() -> str | None:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for folder in _find_links():
        hits = sorted(glob.glob(os.path.join(folder, f"torch-{TORCH_VERSION}*-{tag}-*.whl")))
        if hits:
            return hits[0]
    return None


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited with {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc.stdout


def _copy_sources(dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the checkout (no stale ``build/`` or ``.so``)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True)
    if listed.returncode == 0:
        for rel in listed.stdout.splitlines():
            src = REPO / rel
            if src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
    else:  # not a git checkout
        shutil.copytree(REPO, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "*.so", "__pycache__", ".pytest_cache"))


def test_wheel_installs_into_a_venv_with_torch_and_heat_attribute_runs(tmp_path):
    torch_wheel = _local_torch_wheel()
    if torch_wheel is None:
        pytest.skip(f"no local torch=={TORCH_VERSION} wheel for this Python in pip's find-links {_find_links()}")

    # 1. the wheel, built with isolation from a clean copy of the sources: pure Python + the C++ sources
    src, dist = tmp_path / "src", tmp_path / "dist"
    _copy_sources(src)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", dist, src], cwd=tmp_path)
    (wheel,) = dist.glob("heat_attribution-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl"), f"Expected a pure-Python wheel, got {wheel.name}"
    names = subprocess.run([sys.executable, "-m", "zipfile", "-l", wheel], capture_output=True, text=True).stdout
    assert "heat_kernels/csrc/heat_ops.cpp" in names and "heat_kernels/_C" not in names

    # 2. a fresh venv with only the local CPU torch, then the wheel with its dependencies
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    py, heat = venv / "bin" / "python", venv / "bin" / "heat"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HEAT_CACHE_DIR=str(tmp_path / "cache"),
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    _run([py, "-m", "pip", "install", "-q", "--no-compile", torch_wheel], cwd=tmp_path, env=env)
    version = "import torch; print(torch.__version__)"
    torch_before = _run([py, "-c", version], cwd=tmp_path, env=env).strip()
    log = _run([py, "-m", "pip", "install", "--no-compile", wheel], cwd=tmp_path, env=env)
    installed = re.findall(r"^Successfully installed (.*)$", log, flags=re.M)
    assert installed and not re.search(r"(^|\s)torch-\d", installed[-1]), f"a second torch was installed: {installed}"
    assert _run([py, "-c", version], cwd=tmp_path, env=env).strip() == torch_before

    # 3. a tiny random llama with an offline tokenizer, saved as a model folder
    from heat_module.testing import tiny_model, tiny_tokenizer

    model_dir = tmp_path / "tiny-llama"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)

    # 4. the installed console script (run outside the checkout, so the installed package is the one imported)
    run = subprocess.run([heat, "attribute", "--model", model_dir, "--text", "the cat sat on the red", "--json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(result["scores"]) == len(result["tokens"]) and "cat" in result["tokens"], result
    assert FALLBACK_WARNING not in run.stderr, run.stderr[-4000:]
    assert list((tmp_path / "cache" / "kernels").glob("*/.complete")), "the C++ kernels were not compiled on first use"

    # 5. the installed heat_kernels reports the first-use build and dispatches CPU tensors to the C++ op
    probe = (
        "import json, torch, heat_kernels\n"
        "from heat_kernels import extension\n"
        "q, k, rho = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8), torch.rand(1, 5)\n"
        "err = (heat_kernels.rollout_phi(q, k, rho, None, None, backend='cpp')\n"
        "       - heat_kernels.rollout_phi_ref(q, k, rho, None, 8 ** -0.5)).abs().max().item()\n"
        "auto = extension.resolve_backend('rollout_phi', 'auto', 'cpu')\n"
        "print(json.dumps({**extension.extension_info(), 'auto': auto,\n"
        "                  'file': heat_kernels.__file__, 'err': err}))\n"
    )
    info = json.loads(_run([py, "-c", probe], cwd=tmp_path, env=env).strip().splitlines()[-1])
    assert info["source"] == "jit" and info["path"].startswith(str(tmp_path / "cache")), info
    assert info["auto"] == "cpp" and info["err"] < 1e-5, info
    assert info["file"].startswith(str(venv)), info
