"""The context-only metrics (final tokens and protected positions never perturbed nor ranked; zeroing or deletion)
against direct per-example implementations written here.

Each reference runs the model's own forward on one unpadded example per perturbed copy: for Soft-NC/NS it builds
each masked input by hand (element by element from the documented draws), for AOPC/ABPC it zeroes the ranked context
tokens or builds the shorter sequence without them. Nothing goes through the metrics' batching, padding or masks.
"""

from __future__ import annotations

import math

import pytest
import torch

from heat_module.metrics import ABPC, AOPC, SoftFaithfulness
from heat_module.metrics.functional import abpc, aopc, soft_faithfulness
from heat_module.metrics.functional.abpc import abpc_values
from heat_module.metrics.functional.aopc import aopc_values
from heat_module.metrics.functional.common import example_generator
from heat_module.metrics.functional.context import context_mask
from heat_module.metrics.functional.soft_faithfulness import soft_faithfulness_values

ATOL = 2e-5


def next_dist(model, x: torch.Tensor) -> torch.Tensor:
    """(n, d) unpadded embeddings -> (V,) fp64 next-token distribution, one forward of the model itself."""
    with torch.no_grad():
        logits = model(inputs_embeds=x[None]).logits[0, -1]
    return torch.softmax(logits.double(), -1)


def hellinger(p: torch.Tensor, q: torch.Tensor) -> float:
    return float(((p.sqrt() - q.sqrt()) ** 2).sum() / math.sqrt(2))


def context_positions(n: int, exclude_last: int, protected: list[int]) -> list[int]:
    return [i for i in range(n - exclude_last) if i not in protected]


def reference_soft(model, x: torch.Tensor, scores: torch.Tensor, seed: int, num_masks: int, exclude_last: int,
                   protected: list[int]) -> dict[str, float]:
    """Soft-NC / Soft-NS of one unpadded example (n, d) with the final ``exclude_last`` tokens and ``protected``
    never masked, scores renormalised over the other (context) tokens, the method's and random scores."""
    n, d = x.shape
    ctx = context_positions(n, exclude_last, protected)
    g = example_generator(seed, x)  # the documented stream: random scores (n_ctx), then u (num_masks, n_ctx, d)
    rand = torch.rand(len(ctx), generator=g)
    u = torch.rand(num_masks, len(ctx), d, generator=g)
    q = next_dist(model, x)
    zeroed = x.clone()
    for i in ctx:
        zeroed[i] = 0.0
    d0 = hellinger(next_dist(model, zeroed), q)
    out = {}
    for name, raw in (("", [float(scores[i]) for i in ctx]), ("_random", rand.tolist())):
        clipped = [max(v, 0.0) for v in raw]
        total = sum(clipped)
        s = [v / total for v in clipped] if total > 0 else [1.0 / len(ctx)] * len(ctx)
        for kind in ("nc", "ns"):
            values = []
            for m in range(num_masks):
                xm = x.clone()
                for c, i in enumerate(ctx):
                    keep = s[c] if kind == "ns" else 1.0 - s[c]
                    for j in range(d):
                        if not float(u[m, c, j]) < keep:
                            xm[i, j] = 0.0
                ratio = hellinger(next_dist(model, xm), q) / d0
                values.append(ratio if kind == "nc" else max(0.0, 1.0 - ratio))
            out[f"soft_{kind}{name}"] = sum(values) / num_masks
    return out


def p_target(model, x: torch.Tensor, target: int) -> float:
    return float(next_dist(model, x)[target])


def removed_copy(x: torch.Tensor, removed: list[int], perturbation: str) -> torch.Tensor:
    """One example (n, d) without the tokens ``removed``: zeroed in place, or cut out of the sequence."""
    if perturbation == "zero":
        out = x.clone()
        for i in removed:
            out[i] = 0.0
        return out
    return torch.stack([x[i] for i in range(x.shape[0]) if i not in removed])


def context_order(scores: torch.Tensor, ctx: list[int]) -> list[int]:
    return sorted(ctx, key=lambda i: (-float(scores[i]), i))


def reference_aopc(model, x, scores, target, exclude_last, protected, perturbation, percents=(1, 5, 10, 20, 50)):
    ctx = context_positions(x.shape[0], exclude_last, protected)
    order = context_order(scores, ctx)
    p0 = p_target(model, x, target)
    drops = []
    for pct in percents:
        k = max(1, min(len(ctx), math.ceil(pct * len(ctx) / 100 - 1e-9)))
        drops.append(p0 - p_target(model, removed_copy(x, order[:k], perturbation), target))
    return sum(drops) / len(drops)


def reference_abpc(model, x, scores, target, exclude_last, protected, perturbation, steps):
    ctx = context_positions(x.shape[0], exclude_last, protected)
    order = context_order(scores, ctx)
    total = 0.0
    for j in range(1, steps):
        k = min(max(round(j * len(ctx) / steps), 1), len(ctx) - 1)
        inserted = p_target(model, removed_copy(x, order[k:], perturbation), target)
        deleted = p_target(model, removed_copy(x, order[:k], perturbation), target)
        total += inserted - deleted
    return total / steps


PROTECTED = [[1], [], [0, 3]]  # per example, counted from its first real token


@pytest.mark.parametrize("exclude_last,use_protected", [(1, False), (2, True)], ids=["last1", "last2+protected"])
def test_soft_faithfulness_over_the_context_matches_the_reference(model, forward_fn, batch, scores, exclude_last,
                                                                  use_protected):
    x, mask, _, examples = batch
    protected = PROTECTED if use_protected else None
    got = soft_faithfulness_values(scores, x, mask, forward_fn, protected, num_masks=2, seed=3, batch_size=4,
                                   exclude_last=exclude_last)
    for b, (e, _) in enumerate(examples):
        s = scores[b, mask[b].bool()]
        want = reference_soft(model, e, s, 3, 2, exclude_last, PROTECTED[b] if use_protected else [])
        for key, value in want.items():
            assert got[key][b].item() == pytest.approx(value, abs=ATOL), (b, key)


def kl(q: torch.Tensor, p: torch.Tensor) -> float:
    return float((q * (q.log() - p.log())).sum())


def reference_heta(model, x: torch.Tensor, scores: list[float], exclude_last: int, protected: list[int]
                   ) -> dict[str, float]:
    """The authors' definition over the context: NC = mean over k ∈ {10, 20, 30}% of KL(q ‖ p with the top-k% context
    tokens zeroed), NS = −mean KL(q ‖ p with every other context token zeroed)."""
    ctx = context_positions(x.shape[0], exclude_last, protected)
    order = sorted(ctx, key=lambda i: (-scores[i], i))
    q = next_dist(model, x)
    nc, ns = [], []
    for pct in (10, 20, 30):
        k = max(1, min(len(ctx), math.ceil(pct * len(ctx) / 100 - 1e-9)))
        nc.append(kl(q, next_dist(model, removed_copy(x, order[:k], "zero"))))
        ns.append(-kl(q, next_dist(model, removed_copy(x, order[k:], "zero"))))
    return {"soft_nc": sum(nc) / 3, "soft_ns": sum(ns) / 3}


def test_heta_definition_over_the_context_matches_the_reference(model, forward_fn, batch, scores):
    x, mask, _, examples = batch
    got = soft_faithfulness_values(scores, x, mask, forward_fn, PROTECTED, definition="heta", random_baseline=False,
                                   exclude_last=1)
    for b, (e, _) in enumerate(examples):
        s = scores[b, mask[b].bool()].tolist()
        for key, value in reference_heta(model, e, s, 1, PROTECTED[b]).items():
            assert got[key][b].item() == pytest.approx(value, abs=ATOL), (b, key)


@pytest.mark.parametrize("perturbation", ["zero", "deletion"])
@pytest.mark.parametrize("exclude_last,use_protected", [(0, False), (1, False), (1, True)],
                         ids=["all", "last1", "last1+protected"])
def test_aopc_and_abpc_over_the_context_match_the_reference(model, forward_fn, batch, scores, perturbation,
                                                            exclude_last, use_protected):
    x, mask, targets, examples = batch
    protected = PROTECTED if use_protected else None
    a = aopc_values(scores, x, mask, targets, forward_fn, protected, batch_size=5, exclude_last=exclude_last,
                    perturbation=perturbation)
    p = abpc_values(scores, x, mask, targets, forward_fn, protected, steps=4, batch_size=5,
                    exclude_last=exclude_last, perturbation=perturbation)
    for b, (e, y) in enumerate(examples):
        s = scores[b, mask[b].bool()]
        prot = PROTECTED[b] if use_protected else []
        assert a[b].item() == pytest.approx(reference_aopc(model, e, s, y, exclude_last, prot, perturbation),
                                            abs=ATOL), b
        assert p[b].item() == pytest.approx(reference_abpc(model, e, s, y, exclude_last, prot, perturbation, 4),
                                            abs=ATOL), b


def test_all_mass_on_the_last_token_says_nothing_about_the_context(forward_fn, batch):
    """The motivating case: a score vector with all its mass on the final token (no model needed) must not win the
    context-only metrics. With the last token excluded it is scored exactly as the all-zero vector (no evidence at
    all) on every metric, while over every token it is scored differently."""
    x, mask, targets, _ = batch
    last = torch.zeros(mask.shape)
    last[:, -1] = 1.0  # left padding: column -1 is every example's final token
    nothing = torch.zeros(mask.shape)

    def all_metrics(s: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        out = soft_faithfulness_values(s, x, mask, forward_fn, num_masks=3, seed=0, exclude_last=k)
        for pert in ("zero", "deletion"):
            out[f"aopc_{pert}"] = aopc_values(s, x, mask, targets, forward_fn, exclude_last=k, perturbation=pert)
            out[f"abpc_{pert}"] = abpc_values(s, x, mask, targets, forward_fn, steps=4, exclude_last=k,
                                              perturbation=pert)
        return out

    ctx_last, ctx_nothing = all_metrics(last, 1), all_metrics(nothing, 1)
    for key in ctx_last:
        torch.testing.assert_close(ctx_last[key], ctx_nothing[key], atol=0.0, rtol=0.0, msg=key)
    full_last = all_metrics(last, 0)
    assert not torch.allclose(full_last["soft_nc"], ctx_last["soft_nc"])
    assert not torch.allclose(full_last["aopc_zero"], ctx_last["aopc_zero"])


def test_classes_equal_the_functional_forms_across_updates(forward_fn, batch, scores):
    x, mask, targets, _ = batch
    protected = PROTECTED
    want_soft = soft_faithfulness(scores, x, mask, forward_fn, num_masks=2, seed=1, exclude_last=1,
                                  protected=protected)
    metric = SoftFaithfulness(forward_fn, num_masks=2, seed=1, exclude_last=1)
    metric.update(scores[:2], x[:2], mask[:2], targets[:2], protected[:2])
    metric.update(scores[2:], x[2:], mask[2:], targets[2:], protected[2:])
    got = metric.compute()
    for key in want_soft:
        torch.testing.assert_close(got[key], want_soft[key], atol=1e-6, rtol=1e-6, equal_nan=True)
    for cls, fn, opts in ((AOPC, aopc, {}), (ABPC, abpc, {"steps": 4})):
        for pert in ("zero", "deletion"):
            want = fn(scores, x, mask, targets, forward_fn, exclude_last=1, perturbation=pert, protected=protected,
                      **opts)
            m = cls(forward_fn, exclude_last=1, perturbation=pert, **opts)
            m.update(scores[:1], x[:1], mask[:1], targets[:1], protected[:1])
            m.update(scores[1:], x[1:], mask[1:], targets[1:], protected[1:])
            torch.testing.assert_close(m.compute(), want, atol=1e-6, rtol=1e-6)


def test_context_mask_by_hand():
    real = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    got = context_mask(real, 2, [[0], [2, 5]])
    want = torch.tensor([[0, 0, 0, 1, 0, 0], [1, 1, 0, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(got, want)
    assert torch.equal(context_mask(real, 0), real)


def test_errors(forward_fn, batch, scores):
    x, mask, targets, _ = batch
    with pytest.raises(ValueError, match="Expected exclude_last"):
        AOPC(forward_fn, exclude_last=-1)
    with pytest.raises(ValueError, match="Expected perturbation"):
        ABPC(forward_fn, perturbation="mean")
    with pytest.raises(ValueError, match="Expected exclude_last"):
        SoftFaithfulness(forward_fn, exclude_last=1.5)
    with pytest.raises(ValueError, match="Expected at least one context token"):
        aopc(scores, x, mask, targets, forward_fn, exclude_last=5)  # the second example has 5 real tokens
    with pytest.raises(ValueError, match="Expected at least one token left after deletion"):
        abpc(scores[1:2, -1:], x[1:2, -1:], None, targets[1:2], forward_fn, perturbation="deletion")
