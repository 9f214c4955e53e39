"""block_norm: every path (C++ op, Triton in the interpreter, CUDA/Triton on a GPU) against an fp64 gold.

Tolerance (fixture ``assert_close_to_gold``): error ≤ 4 × the fp32 reference's own error + 1e-6·max(1, max|gold|).
"""

from __future__ import annotations

import importlib

import pytest
import torch

import heat_kernels
from heat_kernels import extension
from heat_kernels.block_norm import block_norm, block_norm_ref

block_norm_mod = importlib.import_module("heat_kernels.block_norm")  # the package re-exports the function name
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
HAS_CUDA = torch.cuda.is_available()


def _gold(w, coef, r):
    """Independent fp64 definition, token by token: (1/m)·Σ_k ‖W_iᵀ diag(coef) W_i r_k‖₁ with W_i = w[i] (K, d)."""
    w, coef, r = w.double().cpu(), coef.double().cpu(), r.double().cpu()
    out = []
    for i in range(w.shape[0]):
        G = w[i].T @ torch.diag(coef) @ w[i]  # (d, d) block G_ii
        out.append((r[:, i] @ G).abs().sum(-1).mean())
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)


def _inputs(n, K, d, m, dtype, seed=0, device="cpu"):
    """Fisher-like inputs: w gradients, coef probabilities (fp32), r Rademacher probes in the input dtype."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, K, d, generator=g).to(dtype)
    coef = torch.softmax(torch.randn(K, generator=g), 0)
    r = (torch.randint(0, 2, (m, n, d), generator=g) * 2 - 1).to(dtype)
    return w.to(device), coef.to(device), r.to(device)


# (n, K, d, m): odd n and d, one probe and several, K = 1.
CPP_SHAPES = [(37, 5, 48, 3), (129, 8, 64, 1), (129, 1, 33, 10), (1, 3, 7, 2)]


def _shape_id(s):
    return "n{}-K{}-d{}-m{}".format(*s)


@pytest.mark.parametrize("shape", CPP_SHAPES, ids=_shape_id)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_cpp_matches_reference(cpp_ext, assert_close_to_gold, dtype, shape):
    w, coef, r = _inputs(*shape, dtype)
    out = block_norm(w, coef, r, backend="cpp")
    assert_close_to_gold(out, block_norm_ref(w, coef, r), _gold(w, coef, r))


def test_cpp_mixed_dtypes_and_strides(cpp_ext, assert_close_to_gold):
    w, coef, r = _inputs(37, 4, 40, 2, torch.bfloat16)
    r = r.float().transpose(0, 1).contiguous().transpose(0, 1)  # fp32 probes, non-contiguous
    out = block_norm(w, coef.double(), r, backend="cpp")
    assert_close_to_gold(out, block_norm_ref(w, coef, r), _gold(w, coef, r))


# Triton in the interpreter (one subprocess per module, see interp_worker.py): fewer points; block_d None = the
# public function, 16 = several d-chunks in both passes.
TRITON_CASES = [
    ("fp32", (37, 5, 48, 3), None),
    ("fp16", (37, 5, 48, 3), None),
    ("bf16", (37, 5, 48, 3), None),
    ("fp32", (37, 3, 33, 1), 16),
    ("bf16", (20, 6, 40, 5), 16),
]
TRITON_IDS = [f"{c[0]}-{_shape_id(c[1])}-bd{c[2]}" for c in TRITON_CASES]
OPCHECK_INPUTS = _inputs(9, 3, 20, 2, torch.float32)


@pytest.fixture(scope="module")
def triton_results(run_in_interpreter):
    jobs = {}
    for case_id, (dtype_name, shape, block_d) in zip(TRITON_IDS, TRITON_CASES):
        args = _inputs(*shape, DTYPES[dtype_name])
        if block_d is None:
            jobs[case_id] = ("heat_kernels.block_norm:block_norm", args, {"backend": "triton"})
        else:
            jobs[case_id] = ("heat_kernels.block_norm:_block_norm_triton", args, {"block_d": block_d})
    jobs["opcheck"] = ("interp_worker:opcheck", ("block_norm_triton", OPCHECK_INPUTS), {})
    return run_in_interpreter(jobs)


@pytest.mark.parametrize("dtype_name, shape, block_d", TRITON_CASES, ids=TRITON_IDS)
def test_triton_interpreter_matches_reference(triton_results, assert_close_to_gold, dtype_name, shape, block_d):
    w, coef, r = _inputs(*shape, DTYPES[dtype_name])
    out = triton_results[f"{dtype_name}-{_shape_id(shape)}-bd{block_d}"]
    assert_close_to_gold(out, block_norm_ref(w, coef, r), _gold(w, coef, r))


def test_opcheck_triton(triton_results):
    assert all(v == "SUCCESS" for v in triton_results["opcheck"].values())


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("shape", [(37, 5, 48, 3), (300, 16, 576, 1), (129, 32, 130, 10)], ids=_shape_id)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_gpu_matches_reference(assert_close_to_gold, dtype, shape, backend):
    if backend == "cuda" and not extension.has_cuda():
        pytest.skip("heat_kernels._C was built without CUDA kernels")
    if backend == "triton" and not extension.triton_available():
        pytest.skip("triton is not installed")
    w, coef, r = _inputs(*shape, dtype, device="cuda")
    out = block_norm(w, coef, r, backend=backend)
    assert out.is_cuda
    assert_close_to_gold(out, block_norm_ref(w, coef, r), _gold(w, coef, r))


def test_opcheck_cpp(cpp_ext):
    w, coef, r = _inputs(37, 5, 48, 3, torch.float32)
    torch.library.opcheck(torch.ops.heat_kernels.block_norm.default, (w, coef, r))
    torch.library.opcheck(torch.ops.heat_kernels.block_norm.default, (w.bfloat16(), coef, r.bfloat16()))


def test_auto_uses_cpp_on_cpu(cpp_ext, monkeypatch):
    w, coef, r = _inputs(37, 5, 48, 3, torch.float32)
    expected = block_norm_ref(w, coef, r)

    def _no_fallback(*args, **kwargs):
        raise AssertionError("backend='auto' fell back to the reference although heat_kernels._C is built")

    monkeypatch.setattr(block_norm_mod, "block_norm_ref", _no_fallback)
    assert extension.resolve_backend("block_norm", "auto", "cpu") == "cpp"
    torch.testing.assert_close(heat_kernels.block_norm(w, coef, r), expected, rtol=1e-5, atol=1e-4)


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    w, coef, r = _inputs(4, 2, 8, 1, torch.float32)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1|triton to be installed"):
        block_norm(w, coef, r, backend="triton")


def test_bad_shapes_are_clear_errors():
    w, coef, r = _inputs(4, 2, 8, 1, torch.float32)
    with pytest.raises(ValueError, match="coef of shape"):
        block_norm(w, coef[:1], r)
    with pytest.raises(ValueError, match="r of shape"):
        block_norm(w, coef, r[:, :3])
    with pytest.raises(ValueError, match="r of shape"):
        block_norm(w, coef, r[:0])
