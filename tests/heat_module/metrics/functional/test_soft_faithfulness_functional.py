"""Soft-NC / Soft-NS against a direct per-example, per-mask implementation of their definitions (docs/design.md).

The reference runs the model on each unpadded example, one perturbed copy per forward, with its own distance and
KL code in fp64. For random cases it consumes the per-example generator in the documented order (random scores
torch.rand(n), then one torch.rand(n, d) per mask — the same stream as one torch.rand(num_masks, n, d)), so the
comparison is exact up to float error (atol 2e-5); one-hot scores make the method's values deterministic.
"""

from __future__ import annotations

import math

import pytest
import torch

from heat_module.metrics.functional import soft_faithfulness, soft_nc, soft_ns
from heat_module.metrics.functional.common import example_generator
from heat_module.metrics.functional.soft_faithfulness import soft_faithfulness_values

ATOL = 2e-5


def next_dist(model, x: torch.Tensor) -> torch.Tensor:
    """(n, d) unpadded embeddings -> (V,) fp64 next-token distribution, one forward."""
    if isinstance(model, ToyModel):
        return torch.softmax((x.double().sum(0) @ model.weight.double()), -1)
    with torch.no_grad():
        logits = model(inputs_embeds=x[None]).logits[0, -1]
    return torch.softmax(logits.double(), -1)


class ToyModel:
    """logits = (Σ_i x_i) W: a bag-of-embeddings model whose prediction survives keeping a few tokens, so Soft-NS
    is often > 0 (on the random tiny Llama it is mostly clipped to 0)."""

    def __init__(self, d: int = 16, vocab: int = 40, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(d, vocab, generator=g) / d**0.5

    def forward_fn(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if attention_mask is not None:
            inputs_embeds = inputs_embeds * attention_mask[..., None]
        return inputs_embeds.sum(1) @ self.weight


@pytest.fixture(scope="module")
def toy(batch):
    """(ToyModel, batch of the same padding pattern with d=16 embeddings where the last real token dominates)."""
    _, mask, _, _ = batch
    toy = ToyModel()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(*mask.shape, 16, generator=g)
    x[:, -1] *= 4.0
    x = torch.where(mask.bool()[..., None], x, torch.full_like(x, 9.0))  # junk padding, masked out
    examples = [(x[b, mask[b].bool()], 0) for b in range(len(x))]
    return toy, (x, mask, None, examples)


def distance(p: torch.Tensor, q: torch.Tensor) -> float:
    return float(((p.sqrt() - q.sqrt()) ** 2).sum() / math.sqrt(2))


def kl(q: torch.Tensor, p: torch.Tensor) -> float:
    return float((q * (q.log() - p.log())).sum())


def normalised(s: torch.Tensor) -> torch.Tensor:
    s = s.float().clamp(min=0)
    return s / s.sum() if s.sum() > 0 else torch.full_like(s, 1 / len(s))


def reference_reagent(model, x, scores, num_masks, seed):
    """{(kind, variant): value} for one unpadded example (n, d), looping over masks."""
    n, d = x.shape
    q = next_dist(model, x)
    d0 = distance(next_dist(model, torch.zeros_like(x)), q)
    g = example_generator(seed, x)
    rand = torch.rand(n, generator=g)
    weights = {"method": normalised(scores), "random": normalised(rand)}
    acc = {(k, v): [] for k in ("nc", "ns") for v in weights}
    for _ in range(num_masks):
        u = torch.rand(n, d, generator=g)
        for variant, w in weights.items():
            for kind in ("nc", "ns"):
                keep = u < (w if kind == "ns" else 1 - w)[:, None]
                ratio = distance(next_dist(model, torch.where(keep, x, torch.zeros_like(x))), q) / d0
                acc[kind, variant].append(ratio if kind == "nc" else max(0.0, 1.0 - ratio))
    return {key: sum(v) / len(v) for key, v in acc.items()}


def reference_heta(model, x, scores, seed):
    n = len(x)
    q = next_dist(model, x)
    rand = torch.rand(n, generator=example_generator(seed, x))
    out = {}
    for variant, w in (("method", scores), ("random", rand)):
        order = sorted(range(n), key=lambda i: (-float(w[i]), i))
        nc, ns = [], []
        for pct in (10, 20, 30):
            top = order[: max(1, -(-pct * n // 100))]
            x_nc = x.clone()
            x_nc[top] = 0.0
            x_ns = torch.zeros_like(x)
            x_ns[top] = x[top]
            nc.append(kl(q, next_dist(model, x_nc)))
            ns.append(kl(q, next_dist(model, x_ns)))
        out["nc", variant] = sum(nc) / 3
        out["ns", variant] = -sum(ns) / 3
    return out


def key(kind: str, variant: str) -> str:
    return f"soft_{kind}" + ("_random" if variant == "random" else "")


@pytest.mark.parametrize("which", ["tiny_llama", "toy"])
def test_one_hot_scores_are_deterministic_and_match(model, forward_fn, batch, toy, which):
    x, mask, _, examples = batch
    if which == "toy":
        model, (x, mask, _, examples) = toy
        forward_fn = model.forward_fn
    scores = torch.full(mask.shape, -1.0)  # negative scores are clipped to 0
    tops = [6, 4, 8] if which == "toy" else [2, 0, 8]  # the toy's last token dominates
    for b, (e, _) in enumerate(examples):
        pad = mask.shape[1] - len(e)
        scores[b, pad + tops[b]] = 3.0
    got = soft_faithfulness_values(scores, x, mask, forward_fn, num_masks=2, seed=0)
    for b, (e, _) in enumerate(examples):
        q = next_dist(model, e)
        d0 = distance(next_dist(model, torch.zeros_like(e)), q)
        removed = e.clone()
        removed[tops[b]] = 0.0
        only = torch.zeros_like(e)
        only[tops[b]] = e[tops[b]]
        assert got["soft_nc"][b] == pytest.approx(distance(next_dist(model, removed), q) / d0, abs=ATOL)
        assert got["soft_ns"][b] == pytest.approx(max(0.0, 1 - distance(next_dist(model, only), q) / d0), abs=ATOL)
    if which == "toy":
        assert got["soft_ns"].min() > 0.05


@pytest.mark.parametrize("which", ["tiny_llama", "toy"])
@pytest.mark.parametrize("seed", [0, 7], ids=["seed0", "seed7"])
def test_random_scores_match_reference(model, forward_fn, batch, toy, scores, seed, which):
    if which == "toy":
        model, (x, mask, _, examples) = toy
        forward_fn = model.forward_fn
        scores = scores.clone()
        scores[:, -1] += 2.0  # weight on the dominant token, so Soft-NS is often positive
    else:
        x, mask, _, examples = batch
    got = soft_faithfulness_values(scores, x, mask, forward_fn, num_masks=3, seed=seed, batch_size=16)
    for b, (e, _) in enumerate(examples):
        ref = reference_reagent(model, e, scores[b, mask[b].bool()], 3, seed)
        for (kind, variant), value in ref.items():
            assert got[key(kind, variant)][b] == pytest.approx(value, abs=ATOL), (b, kind, variant)
    if which == "toy":
        assert (got["soft_ns"] > 0).all()  # the comparison is not between clipped zeros


@pytest.mark.parametrize("which", ["tiny_llama", "toy"])
def test_heta_definition_matches_reference(model, forward_fn, batch, toy, scores, which):
    x, mask, _, examples = batch
    if which == "toy":
        model, (x, mask, _, examples) = toy
        forward_fn = model.forward_fn
    got = soft_faithfulness_values(scores, x, mask, forward_fn, definition="heta", seed=3)
    for b, (e, _) in enumerate(examples):
        ref = reference_heta(model, e, scores[b, mask[b].bool()], 3)
        for (kind, variant), value in ref.items():
            assert got[key(kind, variant)][b] == pytest.approx(value, abs=ATOL, rel=1e-4), (b, kind, variant)


@pytest.mark.parametrize("definition", ["reagent", "heta"])
def test_padded_batch_equals_unpadded_examples(forward_fn, batch, scores, definition):
    x, mask, _, examples = batch
    got = soft_faithfulness_values(scores, x, mask, forward_fn, definition=definition, num_masks=3)
    for b, (e, _) in enumerate(examples):
        alone = soft_faithfulness_values(scores[b : b + 1, mask[b].bool()], e[None], None, forward_fn,
                                          definition=definition, num_masks=3)
        for k, v in alone.items():
            assert got[k][b] == pytest.approx(float(v[0]), abs=ATOL), (b, k)


def test_batched_perturbations_use_few_calls_and_equal_one_per_mask(forward_fn, batch, scores):
    x, mask, _, _ = batch
    calls = []

    def counting(inputs_embeds, attention_mask):
        calls.append(len(inputs_embeds))
        return forward_fn(inputs_embeds, attention_mask)

    num_masks, batch_size = 4, 20
    big = soft_faithfulness_values(scores, x, mask, counting, num_masks=num_masks, batch_size=batch_size)
    rows = 3 * 2 + 3 * 2 * 2 * num_masks  # (q, p0) per example; (method, random) x (nc, ns) x masks
    assert sum(calls) == rows
    assert len(calls) == math.ceil(6 / batch_size) + math.ceil((rows - 6) / batch_size)
    calls.clear()
    one = soft_faithfulness_values(scores, x, mask, counting, num_masks=num_masks, batch_size=1)
    assert len(calls) == rows
    for k in big:
        torch.testing.assert_close(big[k], one[k], atol=ATOL, rtol=0)


def test_random_baseline_is_shared_across_methods(forward_fn, batch, scores):
    """Two methods scored on the same examples see the same random baseline (common random numbers)."""
    x, mask, _, _ = batch
    a = soft_faithfulness(scores, x, mask, forward_fn, num_masks=2)
    b = soft_faithfulness(-scores, x, mask, forward_fn, num_masks=2)
    assert a["soft_nc_random"] == b["soft_nc_random"] and a["soft_ns_random"] == b["soft_ns_random"]
    assert a["soft_nc"] != b["soft_nc"]
    no_random = soft_faithfulness(scores, x, mask, forward_fn, num_masks=2, random_baseline=False)
    assert set(no_random) == {"soft_nc", "soft_ns"} and no_random["soft_nc"] == a["soft_nc"]


def test_errors_name_what_was_expected(forward_fn, batch, scores):
    x, mask, _, _ = batch
    with pytest.raises(ValueError, match=r"Expected scores of shape \(3, 9\), got \(3, 8\)"):
        soft_nc(scores[:, 1:], x, mask, forward_fn)
    with pytest.raises(ValueError, match="Expected at least one real token"):
        soft_ns(scores, x, torch.zeros_like(mask), forward_fn)
