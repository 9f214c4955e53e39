"""AOPC comprehensiveness against a direct loop over examples and k, on a tiny Llama and on SmolLM2."""

from __future__ import annotations

import pytest
import torch

from heat_module.lm.forward import make_forward_fn
from heat_module.metrics.functional import aopc
from heat_module.metrics.functional.aopc import aopc_values


def prob(model, x: torch.Tensor, y: int) -> float:
    """P(y | x) for one unpadded example x (n, d), one forward, fp64 softmax."""
    with torch.no_grad():
        logits = model(inputs_embeds=x[None]).logits[0, -1]
    return float(torch.softmax(logits.double(), -1)[y])


def reference_aopc(model, x: torch.Tensor, scores: torch.Tensor, y: int, percents=(1, 5, 10, 20, 50)) -> float:
    n = len(x)
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    full = prob(model, x, y)
    drops = []
    for pct in percents:
        k = max(1, -(-pct * n // 100))  # ceil with integers
        removed = x.clone()
        removed[order[:k]] = 0.0
        drops.append(full - prob(model, removed, y))
    return sum(drops) / len(drops)


def test_matches_reference_and_padding_is_ignored(model, forward_fn, batch, scores):
    x, mask, targets, examples = batch
    got = aopc_values(scores, x, mask, targets, forward_fn, batch_size=5)
    for b, (e, y) in enumerate(examples):
        assert got[b] == pytest.approx(reference_aopc(model, e, scores[b, mask[b].bool()], y), abs=2e-6)
        alone = aopc_values(scores[b : b + 1, mask[b].bool()], e[None], None, targets[b : b + 1], forward_fn)
        assert got[b] == pytest.approx(float(alone[0]), abs=2e-6)


def test_custom_percents(model, forward_fn, batch, scores):
    x, mask, targets, examples = batch
    got = aopc_values(scores, x, mask, targets, forward_fn, percents=(30, 100))
    for b, (e, y) in enumerate(examples):
        ref = reference_aopc(model, e, scores[b, mask[b].bool()], y, percents=(30, 100))
        assert got[b] == pytest.approx(ref, abs=2e-6)


def test_errors(forward_fn, batch, scores):
    x, mask, targets, _ = batch
    with pytest.raises(ValueError, match="Expected target_ids of shape"):
        aopc(scores, x, mask, targets[:2], forward_fn)


@pytest.mark.slow
def test_smollm2_necessary_token_first_beats_reversed():
    """Rank tokens by their measured single-token-removal drop of P(y); that ranking's AOPC beats its reverse."""
    from heat_module.lm.loading import load_model

    model, tok = load_model("smollm2")
    forward_fn = make_forward_fn(model)
    ids = tok("The capital city of France is the city of", return_tensors="pt").input_ids
    x = model.get_input_embeddings()(ids).detach()
    with torch.no_grad():
        logits = forward_fn(x, None)
        y = logits.argmax(-1)
        p = torch.softmax(logits, -1)[0, y[0]]
        n = x.shape[1]
        removed = x.expand(n, -1, -1).clone()
        removed[torch.arange(n), torch.arange(n)] = 0.0
        drops = p - torch.softmax(forward_fn(removed, None), -1)[:, y[0]]
    necessary_first = aopc(drops[None], x, None, y, forward_fn)
    reversed_ = aopc(-drops[None], x, None, y, forward_fn)
    assert tok.decode(y).strip() == "Paris"
    assert necessary_first > reversed_ + 0.05, (float(necessary_first), float(reversed_))
