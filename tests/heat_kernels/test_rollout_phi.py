"""rollout_phi: every path (C++ op, Triton in the interpreter, CUDA/Triton on a GPU) against an fp64 gold.

Tolerance (fixture ``assert_close_to_gold``): error ≤ 4 × the fp32 reference's own error + 1e-6·max(1, max|gold|).
The Triton grid is smaller than the C++ one: the interpreter is ~4000× slower than torch.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import heat_kernels
from heat_kernels import _ext
from heat_kernels.rollout_phi import rollout_phi, rollout_phi_ref

rollout_mod = importlib.import_module("heat_kernels.rollout_phi")  # the package re-exports the function name
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
HAS_CUDA = torch.cuda.is_available()


def _gold(q, k, rho, mask, scaling=None):
    """Independent fp64 definition: Φ[b,h,i] = Σ_{j ≥ i, i real} ρ_j·exp(s_ji)/Σ_{i' ≤ j, i' real} exp(s_ji')."""
    q, k, rho = q.double().cpu(), k.double().cpu(), rho.double().cpu()
    B, H, n, d = q.shape
    scaling = d**-0.5 if scaling is None else scaling
    kv = k[:, torch.arange(H) // (H // k.shape[1])]
    s = torch.einsum("bhjd,bhid->bhji", q, kv) * scaling
    allowed = torch.ones(n, n, dtype=torch.bool).tril().expand(B, H, n, n).clone()
    if mask is not None:
        allowed &= mask.cpu().view(B, 1, 1, n)
    e = torch.where(allowed, torch.exp(s - s.masked_fill(~allowed, -torch.inf).amax(-1, keepdim=True)), 0.0)
    row = e.sum(-1, keepdim=True)
    p = torch.where(row > 0, e / row.clamp_min(1e-300), 0.0)
    return torch.einsum("bj,bhji->bhi", rho, p)


def _inputs(B, H, Hkv, n, d, dtype, pad, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, n, d, generator=g).to(dtype)
    k = torch.randn(B, Hkv, n, d, generator=g).to(dtype)
    rho = torch.rand(B, n, generator=g)
    mask = None
    if pad == "left":  # batch row b has 3b + (b > 0) padded positions on the left; row 0 none
        mask = torch.ones(B, n, dtype=torch.bool)
        for b in range(1, B):
            mask[b, : 3 * b + 1] = False
    elif pad == "holes":  # not left padding: padded keys after real ones
        mask = torch.rand(B, n, generator=g) > 0.3
    elif pad == "allpad":  # one sequence entirely padding: Φ = 0 there
        mask = torch.ones(B, n, dtype=torch.bool)
        mask[-1] = False
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    return to(q), to(k), to(rho), to(mask)


# (B, H, H_kv, n): GQA, MQA, MHA; odd n; n = 129 spans three 64-row tiles and the C++ row chunks.
CPP_SHAPES = [(2, 6, 2, 37), (1, 6, 1, 129), (3, 4, 4, 129), (2, 6, 2, 1)]
PADS = ["nopad", "left", "holes", "allpad"]


def _shape_id(s):
    return "B{}-H{}-kv{}-n{}".format(*s)


@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("shape", CPP_SHAPES, ids=_shape_id)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_cpp_matches_reference(cpp_ext, assert_close_to_gold, dtype, shape, pad):
    q, k, rho, mask = _inputs(*shape, 16, dtype, pad)
    out = rollout_phi(q, k, rho, mask, backend="cpp")
    assert_close_to_gold(out, rollout_phi_ref(q, k, rho, mask), _gold(q, k, rho, mask))


def test_cpp_scaling_and_strided_inputs(cpp_ext, assert_close_to_gold):
    q, k, rho, mask = _inputs(2, 6, 3, 70, 24, torch.float32, "left")
    q, k = q.transpose(2, 3).contiguous().transpose(2, 3), k[:, :, :, :]  # non-contiguous q
    out = rollout_phi(q, k, rho, mask, scaling=0.3, backend="cpp")
    assert_close_to_gold(out, rollout_phi_ref(q, k, rho, mask, 0.3), _gold(q, k, rho, mask, 0.3))


# Triton in the interpreter (one subprocess per module, see interp_worker.py): fewer points; (dtype, (B, H, H_kv, n),
# padding, tile) with tile None = the public function and its default 64 tiles (one tile for n ≤ 64), 16 = several
# tiles, so the key/query loops and the causal tile boundaries are exercised.
TRITON_CASES = [
    ("fp32", (2, 6, 2, 37), "left", None),
    ("fp16", (2, 6, 2, 37), "left", None),
    ("bf16", (2, 6, 2, 37), "left", None),
    ("fp32", (2, 6, 1, 37), "nopad", 16),
    ("bf16", (2, 6, 1, 37), "holes", 16),
    ("fp16", (2, 4, 2, 40), "allpad", 16),
]
TRITON_IDS = [f"{c[0]}-{_shape_id(c[1])}-{c[2]}-t{c[3]}" for c in TRITON_CASES]
OPCHECK_INPUTS = _inputs(1, 2, 1, 20, 16, torch.float32, "left")


@pytest.fixture(scope="module")
def triton_results(run_in_interpreter):
    jobs = {}
    for case_id, (dtype_name, shape, pad, tile) in zip(TRITON_IDS, TRITON_CASES):
        args = _inputs(*shape, 16, DTYPES[dtype_name], pad)
        if tile is None:
            jobs[case_id] = ("heat_kernels.rollout_phi:rollout_phi", args, {"backend": "triton"})
        else:
            tiles = dict(block_m=tile, block_n=tile)
            jobs[case_id] = ("heat_kernels.rollout_phi:_rollout_phi_triton", (*args, 16**-0.5), tiles)
    jobs["opcheck"] = ("interp_worker:opcheck", ("rollout_phi_triton", (*OPCHECK_INPUTS, 0.25)), {})
    return run_in_interpreter(jobs)


@pytest.mark.parametrize("dtype_name, shape, pad, tile", TRITON_CASES, ids=TRITON_IDS)
def test_triton_interpreter_matches_reference(triton_results, assert_close_to_gold, dtype_name, shape, pad, tile):
    q, k, rho, mask = _inputs(*shape, 16, DTYPES[dtype_name], pad)
    out = triton_results[f"{dtype_name}-{_shape_id(shape)}-{pad}-t{tile}"]
    assert_close_to_gold(out, rollout_phi_ref(q, k, rho, mask), _gold(q, k, rho, mask))


def test_opcheck_triton(triton_results):
    assert all(v == "SUCCESS" for v in triton_results["opcheck"].values())


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("pad", ["nopad", "left", "holes"])
@pytest.mark.parametrize("shape", [(2, 6, 2, 37), (1, 9, 3, 257), (2, 4, 1, 1000)], ids=_shape_id)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_gpu_matches_reference(assert_close_to_gold, dtype, shape, pad, backend):
    if backend == "cuda" and not _ext.has_cuda():
        pytest.skip("heat_kernels._C was built without CUDA kernels")
    if backend == "triton" and not _ext.triton_available():
        pytest.skip("triton is not installed")
    q, k, rho, mask = _inputs(*shape, 64, dtype, pad, device="cuda")
    out = rollout_phi(q, k, rho, mask, backend=backend)
    assert out.is_cuda
    assert_close_to_gold(out, rollout_phi_ref(q, k, rho, mask), _gold(q, k, rho, mask))


def test_opcheck_cpp(cpp_ext):
    q, k, rho, mask = _inputs(2, 6, 2, 37, 16, torch.float32, "left")
    torch.library.opcheck(torch.ops.heat_kernels.rollout_phi.default, (q, k, rho, mask, 0.25))
    torch.library.opcheck(torch.ops.heat_kernels.rollout_phi.default, (q.half(), k.half(), rho, None, 0.25))


def test_auto_uses_cpp_on_cpu(cpp_ext, monkeypatch):
    q, k, rho, mask = _inputs(2, 6, 2, 37, 16, torch.float32, "left")
    expected = rollout_phi_ref(q, k, rho, mask)

    def _no_fallback(*args, **kwargs):
        raise AssertionError("backend='auto' fell back to the reference although heat_kernels._C is built")

    monkeypatch.setattr(rollout_mod, "rollout_phi_ref", _no_fallback)
    assert _ext.resolve_backend("rollout_phi", "auto", "cpu") == "cpp"
    torch.testing.assert_close(heat_kernels.rollout_phi(q, k, rho, mask), expected, rtol=1e-5, atol=1e-5)


def test_torch_backend_is_reference():
    q, k, rho, mask = _inputs(2, 6, 2, 37, 16, torch.bfloat16, "left")
    torch.testing.assert_close(rollout_phi(q, k, rho, mask, backend="torch"), rollout_phi_ref(q, k, rho, mask))


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, rho, _ = _inputs(1, 2, 1, 8, 16, torch.float32, "nopad")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1|triton to be installed"):
        rollout_phi(q, k, rho, backend="triton")


def test_bad_backend_and_shapes_are_clear_errors():
    q, k, rho, _ = _inputs(1, 6, 4, 8, 16, torch.float32, "nopad")
    with pytest.raises(ValueError, match="H_kv dividing 6"):
        rollout_phi(q, k, rho)
    q, k, rho, _ = _inputs(1, 2, 1, 8, 16, torch.float32, "nopad")
    with pytest.raises(ValueError, match="rho of shape"):
        rollout_phi(q, k, rho[:, :4])
    with pytest.raises(ValueError, match="expected backend in"):
        rollout_phi(q, k, rho, backend="numba")
    with pytest.raises(RuntimeError, match="backend='cuda' expected CUDA tensors"):
        rollout_phi(q, k, rho, backend="cuda")
