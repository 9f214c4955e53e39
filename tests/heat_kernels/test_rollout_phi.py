"""rollout_phi: every path (C++ op, Triton in the interpreter, CUDA/Triton on a GPU) against an fp64 gold.

Tolerance (fixture ``assert_close_to_gold``): error ≤ 4 × the fp32 reference's own error + 1e-6·max(1, max|gold|).
The Triton grid is smaller than the C++ one: the interpreter is ~4000× slower than torch.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import heat_kernels
from heat_kernels import extension
from heat_kernels.rollout_phi import rollout_phi, rollout_phi_ref

rollout_mod = importlib.import_module("heat_kernels.rollout_phi")  # the package re-exports the function name
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
HAS_CUDA = torch.cuda.is_available()


def _explicit_mask(B, n, mask, window=None, chunk=None):
    """(B, n, n) bool, query j (dim 1) may attend key i (dim 2), written from transformers' masking_utils
    definitions: ``causal_mask_function`` (i <= j), ``sliding_window_overlay`` (i > j - window, on positions of the
    padded sequence), ``chunked_overlay`` ((i - p) // chunk == (j - p) // chunk, p = the row's left padding, i.e.
    ``(attention_mask.cumsum(-1) == 0).sum(-1)``) and ``padding_mask_function`` (key i real)."""
    j = torch.arange(n).view(n, 1)
    i = torch.arange(n).view(1, n)
    out = torch.zeros(B, n, n, dtype=torch.bool)
    for b in range(B):
        real = torch.ones(n, dtype=torch.bool) if mask is None else mask[b].cpu().bool()
        pad = next((t for t in range(n) if real[t]), n)  # positions before the first real token
        ok = i <= j
        if window is not None:
            ok = ok & (i > j - window)
        if chunk is not None:
            ok = ok & ((i - pad) // chunk == (j - pad) // chunk)  # Python floor division, as transformers'
        out[b] = ok & real.view(1, n)
    return out


def _gold(q, k, rho, mask, scaling=None, window=None, softcap=None, chunk=None):
    """Independent fp64 definition: Φ[b,h,i] = Σ_j ρ_j·A[b,h,j,i], A the materialised probabilities of the
    (soft-capped) scores under the explicit mask of ``_explicit_mask``; a row that sees no key contributes 0."""
    q, k, rho = q.double().cpu(), k.double().cpu(), rho.double().cpu()
    B, H, n, d = q.shape
    scaling = d**-0.5 if scaling is None else scaling
    kv = k[:, torch.arange(H) // (H // k.shape[1])]
    s = torch.einsum("bhjd,bhid->bhji", q, kv) * scaling
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    allowed = _explicit_mask(B, n, mask, window, chunk).view(B, 1, n, n).expand(B, H, n, n)
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
    if backend == "cuda" and not extension.has_cuda():
        pytest.skip("heat_kernels._C was built without CUDA kernels")
    if backend == "triton" and not extension.triton_available():
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
    assert extension.resolve_backend("rollout_phi", "auto", "cpu") == "cpp"
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


# ----------------------------------------------------------------------------------------------------------------
# Sliding window, soft-capping, chunks
# ----------------------------------------------------------------------------------------------------------------

# name -> keyword arguments; windows smaller than n, of 1 and larger than n; chunks; everything at once.
BANDS = {
    "win5": dict(window=5),
    "win1": dict(window=1),
    "win_gt_n": dict(window=10_000),
    "softcap": dict(softcap=1.5),
    "chunk7": dict(chunk=7),
    "all": dict(window=9, softcap=2.0, chunk=13),
}


def test_explicit_mask_matches_transformers():
    """The test's own mask equals the mask transformers builds (sdpa_mask with its mask functions)."""
    mu = pytest.importorskip("transformers.masking_utils")
    B, n = 3, 23
    _, _, _, mask = _inputs(B, 1, 1, n, 4, torch.float32, "left")
    mask[2, 10] = False  # a hole after real tokens too
    cases = {
        "window": (dict(window=4), mu.sliding_window_causal_mask_function(4)),
        "chunk": (dict(chunk=5), mu.chunked_causal_mask_function(5, (mask.long().cumsum(-1) == 0).sum(-1))),
    }
    for name, (kwargs, fn) in cases.items():
        theirs = mu.sdpa_mask(
            batch_size=B, q_length=n, kv_length=n, mask_function=fn, attention_mask=mask, allow_is_causal_skip=False
        )
        assert theirs.shape == (B, 1, n, n), name
        assert torch.equal(theirs[:, 0], _explicit_mask(B, n, mask, **kwargs)), name
        assert torch.equal(rollout_mod.allowed_mask(n, mask, batch=B, **kwargs)[:, 0], theirs[:, 0]), name


@pytest.mark.parametrize("band", BANDS.keys())
@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("shape", [(2, 6, 2, 37), (3, 4, 1, 20)], ids=_shape_id)
def test_reference_matches_gold_with_bands(shape, pad, band):
    q, k, rho, mask = _inputs(*shape, 16, torch.float32, pad)
    out = rollout_phi_ref(q, k, rho, mask, **BANDS[band])
    torch.testing.assert_close(out.double(), _gold(q, k, rho, mask, **BANDS[band]), rtol=1e-5, atol=1e-6)


def test_window_one_is_the_identity_and_large_window_is_causal():
    """window=1: every row attends only itself (if real), so Φ[b,h,i] = ρ_i at real keys, 0 at padding."""
    q, k, rho, mask = _inputs(3, 4, 2, 21, 16, torch.float32, "holes")
    expected = (rho * mask).unsqueeze(1).expand(3, 4, 21)
    torch.testing.assert_close(rollout_phi_ref(q, k, rho, mask, window=1), expected)
    torch.testing.assert_close(rollout_phi_ref(q, k, rho, mask, window=21), rollout_phi_ref(q, k, rho, mask))
    assert not torch.allclose(rollout_phi_ref(q, k, rho, mask, window=20), rollout_phi_ref(q, k, rho, mask))


@pytest.mark.parametrize("band", ["win5", "chunk7", "all"])
def test_left_padding_does_not_move_window_or_chunks(band):
    """As in transformers, a left-padded row sees the same keys as the unpadded sequence: the window depends on
    j - i only, and the chunks start at the first real token."""
    q, k, rho, _ = _inputs(1, 4, 2, 30, 16, torch.float32, "nopad")
    p = 5
    padq = torch.cat([torch.randn(1, 4, p, 16), q], 2)
    padk = torch.cat([torch.randn(1, 2, p, 16), k], 2)
    padrho = torch.cat([torch.rand(1, p), rho], 1)
    mask = torch.arange(30 + p).view(1, -1) >= p
    unpadded = rollout_phi_ref(q, k, rho, **BANDS[band])
    padded = rollout_phi_ref(padq, padk, padrho, mask, **BANDS[band])
    torch.testing.assert_close(padded[..., p:], unpadded)
    assert padded[..., :p].abs().max() == 0


@pytest.mark.parametrize("band", BANDS.keys())
@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("shape", CPP_SHAPES, ids=_shape_id)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_cpp_matches_reference_with_bands(cpp_ext, assert_close_to_gold, dtype, shape, pad, band):
    q, k, rho, mask = _inputs(*shape, 16, dtype, pad)
    kw = BANDS[band]
    out = rollout_phi(q, k, rho, mask, backend="cpp", **kw)
    assert_close_to_gold(out, rollout_phi_ref(q, k, rho, mask, **kw), _gold(q, k, rho, mask, **kw))


def test_cpp_op_called_directly_with_large_window_and_chunk(cpp_ext, assert_close_to_gold):
    """The op itself (no dispatch normalisation) with a window and chunks of n or more: the causal result."""
    q, k, rho, mask = _inputs(2, 6, 2, 37, 16, torch.float32, "left")
    out = torch.ops.heat_kernels.rollout_phi(q, k, rho, mask, 0.25, 37, None, 1000)
    assert_close_to_gold(out, rollout_phi_ref(q, k, rho, mask, 0.25), _gold(q, k, rho, mask, 0.25))


def test_opcheck_cpp_with_bands(cpp_ext):
    q, k, rho, mask = _inputs(2, 6, 2, 37, 16, torch.float32, "left")
    torch.library.opcheck(torch.ops.heat_kernels.rollout_phi.default, (q, k, rho, mask, 0.25, 5, 1.5, 7))
    torch.library.opcheck(torch.ops.heat_kernels.rollout_phi.default, (q.bfloat16(), k.bfloat16(), rho, None, 0.25, 3))


def test_bad_band_arguments_are_clear_errors():
    q, k, rho, _ = _inputs(1, 2, 1, 8, 16, torch.float32, "nopad")
    with pytest.raises(ValueError, match="window to be None or an int >= 1"):
        rollout_phi(q, k, rho, window=0)
    with pytest.raises(ValueError, match="chunk to be None or an int >= 1"):
        rollout_phi(q, k, rho, chunk=2.5)
    with pytest.raises(ValueError, match="softcap to be None or a finite float > 0"):
        rollout_phi(q, k, rho, softcap=-1.0)


# Triton in the interpreter: (dtype, (B, H, H_kv, n), padding, tile, band); tile None = the public function.
TRITON_BAND_CASES = [
    ("fp32", (2, 6, 2, 37), "left", 16, "win5"),
    ("bf16", (2, 6, 1, 37), "holes", 16, "win1"),
    ("fp16", (2, 4, 2, 37), "left", 16, "win_gt_n"),
    ("fp32", (2, 6, 2, 37), "holes", 16, "softcap"),
    ("bf16", (2, 4, 1, 40), "left", 16, "chunk7"),
    ("fp32", (3, 2, 1, 37), "holes", 16, "all"),
    ("fp16", (2, 6, 2, 37), "left", None, "all"),
]
TRITON_BAND_IDS = [f"{c[0]}-{_shape_id(c[1])}-{c[2]}-t{c[3]}-{c[4]}" for c in TRITON_BAND_CASES]


@pytest.fixture(scope="module")
def triton_band_results(run_in_interpreter):
    jobs = {}
    for case_id, (dtype_name, shape, pad, tile, band) in zip(TRITON_BAND_IDS, TRITON_BAND_CASES):
        args = _inputs(*shape, 16, DTYPES[dtype_name], pad)
        if tile is None:
            jobs[case_id] = ("heat_kernels.rollout_phi:rollout_phi", args, {"backend": "triton", **BANDS[band]})
        else:
            kwargs = dict(block_m=tile, block_n=tile, **BANDS[band])
            jobs[case_id] = ("heat_kernels.rollout_phi:_rollout_phi_triton", (*args, 16**-0.5), kwargs)
    jobs["opcheck"] = ("interp_worker:opcheck", ("rollout_phi_triton", (*OPCHECK_INPUTS, 0.25, 5, 1.5, 7)), {})
    return run_in_interpreter(jobs)


@pytest.mark.parametrize("dtype_name, shape, pad, tile, band", TRITON_BAND_CASES, ids=TRITON_BAND_IDS)
def test_triton_interpreter_matches_reference_with_bands(
    triton_band_results, assert_close_to_gold, dtype_name, shape, pad, tile, band
):
    q, k, rho, mask = _inputs(*shape, 16, DTYPES[dtype_name], pad)
    kw = BANDS[band]
    out = triton_band_results[f"{dtype_name}-{_shape_id(shape)}-{pad}-t{tile}-{band}"]
    assert_close_to_gold(out, rollout_phi_ref(q, k, rho, mask, **kw), _gold(q, k, rho, mask, **kw))


def test_opcheck_triton_with_bands(triton_band_results):
    assert all(v == "SUCCESS" for v in triton_band_results["opcheck"].values())


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("band", BANDS.keys())
@pytest.mark.parametrize("pad", ["left", "holes"])
@pytest.mark.parametrize("shape", [(2, 6, 2, 37), (1, 9, 3, 257), (2, 4, 1, 1000)], ids=_shape_id)
@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
def test_gpu_matches_reference_with_bands(assert_close_to_gold, dtype, shape, pad, band, backend):
    if backend == "cuda" and not extension.has_cuda():
        pytest.skip("heat_kernels._C was built without CUDA kernels")
    if backend == "triton" and not extension.triton_available():
        pytest.skip("triton is not installed")
    q, k, rho, mask = _inputs(*shape, 64, dtype, pad, device="cuda")
    kw = BANDS[band]
    out = rollout_phi(q, k, rho, mask, backend=backend, **kw)
    assert out.is_cuda
    assert_close_to_gold(out, rollout_phi_ref(q, k, rho, mask, **kw), _gold(q, k, rho, mask, **kw))
