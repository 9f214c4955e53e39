"""The GPU pre-flight's enumeration of Triton variants (no download, one small compile) and its pass/fail rules."""

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_preflight  # noqa: E402


@pytest.fixture(scope="module")
def variants():
    return gpu_preflight.variants()


def _jit_functions() -> dict[str, set[str]]:
    """name -> names it calls, of every ``@triton.jit`` function in heat_kernels/*.py."""
    out = {}
    for path in (ROOT / "heat_kernels").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(ast.unparse(d) == "triton.jit" for d in node.decorator_list):
                out[node.name] = {c.func.id for c in ast.walk(node) if isinstance(c, ast.Call)
                                  and isinstance(c.func, ast.Name)}  # fmt: skip
    return out


def test_every_triton_kernel_is_enumerated(variants):
    jit = _jit_functions()
    helpers = {callee for calls in jit.values() for callee in calls if callee in jit}
    kernels = set(jit) - helpers
    assert kernels, "Expected @triton.jit kernels in heat_kernels"
    assert {v.kernel for v in variants} == kernels


def test_every_autotune_config_is_crossed(variants):
    """Every config the autotuner keeps for a launch is compiled, and every config of the list is kept somewhere."""
    for name, (_, tuner) in gpu_preflight.real_kernels().items():
        if tuner is None:
            continue
        names = tuple(tuner.configs[0].kwargs)
        wanted = {(tuple(sorted(c.kwargs.items())), c.num_warps, c.num_stages) for c in tuner.configs}
        got = {(tuple(sorted((k, v) for k, v in v.constexprs if k in names)), v.num_warps, v.num_stages)
               for v in variants if v.kernel == name}  # fmt: skip
        assert got == wanted, name


def test_fp32_tiles_are_pruned_to_the_budget(variants):
    """fp32 operands get only the tiles within the per-thread budgets, 16-bit ones the 64-row tiles (64 × 32 only
    at BLOCK_D 256); every launch keeps at least one config."""
    from heat_kernels.rollout_phi import FP32_OPERANDS_PER_THREAD, FP32_SCORES_PER_THREAD, fp32_tile_load

    per_launch: dict[tuple, list] = {}
    for v in variants:
        if v.kernel != "_rollout_lse_kernel":
            continue
        c = dict(v.constexprs)
        launch = (dict(v.signature)["Q"], *((k, x) for k, x in v.constexprs if k not in ("BLOCK_M", "BLOCK_N")))
        per_launch.setdefault(launch, []).append(v)
        if c["UPCAST"]:
            ops, scores = fp32_tile_load(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_D"], v.num_warps)
            if c["BLOCK_D"] == 256:  # nothing is within the budget: the smallest tile (it compiled without spills)
                assert (c["BLOCK_M"], c["BLOCK_N"], v.num_warps) == (16, 16, 8), v
            else:
                assert ops <= FP32_OPERANDS_PER_THREAD and scores <= FP32_SCORES_PER_THREAD, v
        else:
            tiles = {(64, 64), (128, 64), (64, 32)} if c["BLOCK_D"] < 256 else {(64, 32)}
            assert (c["BLOCK_M"], c["BLOCK_N"]) in tiles, v
    assert len(per_launch) == 16 * 3 * 5 and all(per_launch.values())


def test_block_norm_chunks_of_16_bit_inputs_stay_narrow(variants):
    """fp16/bf16 d-chunks of 512 or more spilled: the launcher caps them at 256 (fp32 keeps its wider chunks)."""
    widths = {}
    for v in variants:
        if v.kernel == "_block_norm_kernel":
            widths.setdefault(dict(v.signature)["W"], set()).add(dict(v.constexprs)["BLOCK_D"])
    assert max(widths["*fp16"]) == max(widths["*bf16"]) == 256 and max(widths["*fp32"]) == 4096


def test_every_flag_and_dtype_is_launched(variants):
    """Every boolean constexpr takes both values, every dtype and head-dim tile appears, for every kernel."""
    for name in {v.kernel for v in variants}:
        vs = [v for v in variants if v.kernel == name]
        values: dict[str, set] = {}
        for v in vs:
            for k, val in v.constexprs:
                values.setdefault(k, set()).add(val)
        for k, seen in values.items():
            if any(isinstance(x, bool) for x in seen):
                assert seen == {False, True}, (name, k, seen)
        assert {dict(v.signature)[v.pointer_arg()] for v in vs} == {"*fp32", "*bf16", "*fp16"}, name
    rollout = [v for v in variants if v.kernel == "_rollout_lse_kernel"]
    assert {dict(v.constexprs)["BLOCK_D"] for v in rollout} == {16, 32, 64, 128, 256}
    assert {dict(v.constexprs)["PRECISION"] for v in rollout} == {"ieee", "tf32"}
    # flags × dtypes × head dims, each with at least one autotune config
    launches = {(dict(v.signature)["Q"], *((k, x) for k, x in v.constexprs if k not in ("BLOCK_M", "BLOCK_N")))
                for v in rollout}  # fmt: skip
    assert len(launches) == 16 * 3 * 5
    assert len({v.key() for v in variants}) == len(variants)


def test_ptxas_log_and_limits():
    log = ("ptxas info    : Function properties for k\n    128 bytes stack frame, 24 bytes spill stores, 16 bytes "
           "spill loads\nptxas info    : Used 255 registers, used 1 barriers, 1024 bytes smem, 400 bytes cmem[0]\n")
    row = gpu_preflight.parse_ptxas(log)
    assert row == dict(regs=255, spill_stores=24, spill_loads=16, stack=128, static_smem=1024)
    assert gpu_preflight.check(dict(row, smem=1024), 163 * 1024, 256) == "spills 24+16 B"
    ok = dict(row, spill_stores=0, spill_loads=0)
    assert gpu_preflight.check(dict(ok, smem=1024), 163 * 1024, 256) == "ok"
    assert "smem" in gpu_preflight.check(dict(ok, smem=164 * 1024), 163 * 1024, 256)
    assert "regs" in gpu_preflight.check(dict(ok, regs=200, smem=0), 163 * 1024, 512)
    assert gpu_preflight.check(dict(ok, regs=-1, smem=0), 163 * 1024, 256) == "no ptxas report"


@pytest.mark.skipif(importlib.util.find_spec("triton.backends.nvidia") is None, reason="Triton has no CUDA backend")
def test_one_variant_compiles_for_sm90_without_a_gpu(variants, tmp_path, monkeypatch):
    """The smallest bf16 variant of the rollout kernel with every flag on (soft-capping calls the helpers, which
    must resolve ``tl`` among their module's globals); an empty Triton cache, so that it really compiles."""
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    v = next(v for v in variants if v.kernel == "_rollout_lse_kernel" and "+mask+window+chunk+softcap" in v.config()
             and v.config().startswith("bf16 BLOCK_M=64 BLOCK_N=32 BLOCK_D=16"))  # fmt: skip
    row = gpu_preflight.compile_triton(v, 90)
    assert row["status"] == "ok", row
    assert 0 < row["regs"] <= 255 and 0 < row["smem"] <= gpu_preflight.TARGETS[90]
