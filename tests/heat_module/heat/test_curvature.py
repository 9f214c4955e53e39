"""S (eq. 3) against the full Hessian of a tiny model and against the plain double-backward loop."""

import pytest
import torch

from heat_module.heat.curvature import curvature_exact, curvature_naive, rademacher
from heat_module.heat.objective import target_logprob_fn
from heat_module.lm.capture import capture
from heat_module.lm.forward import embed, next_token_logits, position_ids_from_mask
from heat_module.testing import TINY_VOCAB
from tests.conftest import make_tiny
from tests.heat_module.heat.dense_reference import block_norms, dense_hessian, eager_copy, log_probs


def setup(arch="llama", n=5, seed=0):
    model = make_tiny(arch)
    ids = torch.randint(4, TINY_VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))
    x = embed(model, ids).detach()
    with torch.no_grad(), capture() as records:
        logits = next_token_logits(model, x)
    return model, x, int(logits.argmax()), records


def full_hessian(model, x, target):
    n, d = x.shape[1:]
    mask = torch.ones(1, n, dtype=torch.long)
    g = target_logprob_fn(model, target, mask, position_ids_from_mask(mask))
    h = torch.autograd.functional.hessian(lambda flat: g(flat.view(1, n, d)), x.flatten())
    return h.view(n, d, n, d)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3"])
def test_same_probes_match_full_hessian(arch):
    model, x, y, records = setup(arch)
    n, d = x.shape[1:]
    probes = rademacher(3, n, d, seed=7, dtype=x.dtype)
    H = full_hessian(model, x, y)
    expected = torch.stack([
        torch.stack([(H[i, :, i, :] @ probes[k, i]).abs().sum() for k in range(3)]).mean() for i in range(n)
    ])
    got = curvature_exact(model, x, y, probes, captures=records, chunk_size=4)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_prefix", [True, False], ids=["prefix-kv", "full-recompute"])
def test_exact_matches_dense_hessian_of_an_eager_copy(use_prefix):
    """The independent check: S (eq. 3) equals S from the dense Hessian of g = log_softmax(model(inputs_embeds=X)
    .logits[0, -1])[y] computed by torch.autograd.functional.hessian on an eager copy that never went through
    ``install`` (transformers' own attention, not HEAT's eager path), with the same Rademacher probes."""
    model, x, y, records = setup("llama")
    ref = eager_copy(model)
    assert y == int(log_probs(ref, x).argmax())
    n, d = x.shape[1:]
    probes = rademacher(3, n, d, seed=7, dtype=x.dtype)
    expected = block_norms(dense_hessian(ref, x, y), probes)
    got = curvature_exact(model, x, y, probes, captures=records if use_prefix else None, chunk_size=4)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-8)


def test_many_probes_converge_to_expectation():
    model, x, y, records = setup("qwen2", n=4)
    n, d = x.shape[1:]
    H = full_hessian(model, x, y)
    probes = rademacher(400, n, d, seed=3, dtype=x.dtype)
    got = curvature_exact(model, x, y, probes, captures=records, chunk_size=800)
    # E_r ||H_ii r||_1 from the Hessian blocks with a large independent sample
    big = rademacher(20000, 1, d, seed=11, dtype=x.dtype)[:, 0]
    expectation = torch.stack([(big @ H[i, :, i, :].T).abs().sum(-1).mean() for i in range(n)])
    torch.testing.assert_close(got.double(), expectation, rtol=0.05, atol=0)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "phi3"])
@pytest.mark.parametrize("use_prefix", [True, False], ids=["prefix-kv", "full-recompute"])
@pytest.mark.parametrize("mode", ["forward_over_reverse", "reverse_over_reverse"])
def test_batched_matches_double_backward_loop(arch, use_prefix, mode):
    model, x, y, records = setup(arch, n=6, seed=4)
    probes = rademacher(2, 6, x.shape[-1], seed=1, dtype=x.dtype)
    ref = curvature_naive(model, x, y, probes)
    got = curvature_exact(model, x, y, probes, captures=records if use_prefix else None, chunk_size=3, mode=mode)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_padding_positions_are_zero_and_equal_unpadded():
    model, x, y, records = setup("mistral", n=5, seed=5)
    probes = rademacher(1, 5, x.shape[-1], seed=0, dtype=x.dtype)
    pad = torch.zeros(1, 2, x.shape[-1], dtype=x.dtype)
    xp = torch.cat([pad, x], 1)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1]])
    probes_p = torch.cat([torch.zeros(1, 2, x.shape[-1], dtype=x.dtype), probes], 1)
    with torch.no_grad(), capture() as rec_p:
        next_token_logits(model, xp, mask)
    got = curvature_exact(model, xp, y, probes_p, mask, rec_p, chunk_size=2)
    ref = curvature_exact(model, x, y, probes, None, records, chunk_size=2)
    assert got[:2].abs().max() == 0
    torch.testing.assert_close(got[2:], ref, rtol=1e-6, atol=1e-6)


def test_rademacher_is_seeded_and_signed():
    a, b = rademacher(2, 3, 4, seed=5), rademacher(2, 3, 4, seed=5)
    assert torch.equal(a, b) and set(a.unique().tolist()) == {-1.0, 1.0}
    assert not torch.equal(a, rademacher(2, 3, 4, seed=6))


@pytest.mark.parametrize("mode", ["auto", "forward_over_reverse", "reverse_over_reverse"])
def test_runs_across_tokens_equal_per_token_runs_and_naive_loop(mode):
    """Tangents batched across the tokens of a run (hvp_runs) = one run per token (the old batching at m·1 chunks)
    = the double-backward loop; several chunk sizes, including the memory-budget chunk."""
    from heat_module.heat.cost import hvp_runs

    n = 9
    model, x, y, records = setup("llama", n=n, seed=6)
    probes = rademacher(2, n, x.shape[-1], seed=2, dtype=x.dtype)
    runs = hvp_runs(list(range(n)), 2, n, share=True)
    assert sorted(p for r in runs for p in r) == list(range(n)) and max(len(r) for r in runs) > 1
    per_token = torch.stack([
        curvature_exact(model, x, y, probes, captures=records, chunk_size=2, positions=[i], mode=mode)[i]
        for i in range(n)
    ])
    ref = curvature_naive(model, x, y, probes)
    torch.testing.assert_close(per_token, ref, rtol=1e-6, atol=1e-6)
    for chunk in (1, 3, None):
        got = curvature_exact(model, x, y, probes, captures=records, chunk_size=chunk, mode=mode, memory_mb=0.05)
        torch.testing.assert_close(got, per_token, rtol=1e-6, atol=1e-6)


def test_llama4_attention_temperature_matches_dense_hessian_of_an_eager_copy():
    """Exact S on a Llama 4 whose attention temperature counts positions from the cache's length (floor_scale 4 <
    n): equal to the dense Hessian of an eager copy, as without the temperature."""
    from tests.heat_module.heat.test_information import tiny_llama4_short_floor

    model = tiny_llama4_short_floor()
    ids = torch.randint(4, TINY_VOCAB, (1, 8), generator=torch.Generator().manual_seed(0))
    x = embed(model, ids).detach()
    with torch.no_grad(), capture() as records:
        y = int(next_token_logits(model, x).argmax())
    ref = eager_copy(model)
    n, d = x.shape[1:]
    probes = rademacher(1, n, d, seed=7, dtype=x.dtype)
    expected = block_norms(dense_hessian(ref, x, y), probes)
    got = curvature_exact(model, x, y, probes, captures=records, chunk_size=2)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-8)
