"""Fixtures for the baseline tests: a tiny Llama, the tiny tokenizer, and a small left-padded batch of ids."""

from __future__ import annotations

import pytest
import torch

from heat_module.testing import TINY_VOCAB, tiny_model, tiny_tokenizer

LENGTHS = (7, 4, 9)  # real tokens per example; left padded to max(LENGTHS)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every baseline test runs with one intra-op thread (``one_thread`` of tests/conftest.py)."""


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", seed=0)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def batch():
    """``(input_ids (3, 9), attention_mask (3, 9), rows)``; ``rows`` are the unpadded (n_b,) id tensors."""
    gen = torch.Generator().manual_seed(3)
    n = max(LENGTHS)
    ids = torch.zeros(len(LENGTHS), n, dtype=torch.long)
    mask = torch.zeros_like(ids)
    rows = []
    for b, n_b in enumerate(LENGTHS):
        row = torch.randint(4, TINY_VOCAB, (n_b,), generator=gen)
        ids[b, n - n_b:] = row
        mask[b, n - n_b:] = 1
        rows.append(row)
    return ids, mask, rows


def _logprob_and_grad(model, ids: torch.Tensor, target: int | None = None):
    """Reference g = log P(y | X) and ∇_X g for one unpadded example with plain autograd (X: (n, d))."""
    x = model.get_input_embeddings()(ids[None]).detach().requires_grad_(True)
    logits = model(inputs_embeds=x).logits[0, -1]
    y = int(logits.argmax()) if target is None else target
    g = torch.log_softmax(logits, -1)[y]
    (grad,) = torch.autograd.grad(g, x)
    return float(g.detach()), grad[0], x[0].detach(), y


def _assert_batched_equals_unbatched(method, batch, atol=1e-5, rtol=1e-4):
    ids, mask, rows = batch
    batched = method.attribute_batch(ids, mask)
    for res, row in zip(batched, rows):
        single = method.attribute(row)
        assert res.token_ids.tolist() == row.tolist()
        assert res.target_id == single.target_id
        torch.testing.assert_close(res.scores, single.scores, atol=atol, rtol=rtol)
    return batched


@pytest.fixture
def logprob_and_grad():
    """``f(model, ids, target=None) -> (g, ∇_X g (n, d), X (n, d), y)`` with plain autograd."""
    return _logprob_and_grad


@pytest.fixture
def check_batched():
    """``f(method, batch)``: attribute_batch on the left-padded batch equals attribute on each example alone."""
    return _assert_batched_equals_unbatched
