"""Fixtures for the metric tests: a tiny Llama, its forward_fn, and a small left-padded batch."""

from __future__ import annotations

import pytest
import torch

from heat_module.lm.forward import make_forward_fn
from heat_module.testing import TINY_VOCAB, tiny_model

LENGTHS = (7, 5, 9)  # real tokens per example; the batch is left padded to max(LENGTHS)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", seed=0)


@pytest.fixture(scope="module")
def forward_fn(model):
    return make_forward_fn(model)


@pytest.fixture(scope="module")
def batch(model):
    """``(inputs_embeds (3, 9, d), attention_mask (3, 9), target_ids (3,), examples)``.

    ``examples`` lists each example unpadded as ``(embeds (n_b, d), target_id)``. Targets are the greedy
    next tokens of the unpadded examples.
    """
    gen = torch.Generator().manual_seed(1)
    n = max(LENGTHS)
    emb = model.get_input_embeddings()
    x = torch.zeros(len(LENGTHS), n, emb.weight.shape[1])
    mask = torch.zeros(len(LENGTHS), n, dtype=torch.long)
    examples = []
    with torch.no_grad():
        for b, n_b in enumerate(LENGTHS):
            ids = torch.randint(4, TINY_VOCAB, (n_b,), generator=gen)
            e = emb(ids)
            x[b, n - n_b:] = e
            x[b, : n - n_b] = emb.weight[0]  # the pad token's embedding, as a tokenizer batch would give
            mask[b, n - n_b:] = 1
            target = int(model(inputs_embeds=e[None]).logits[0, -1].argmax())
            examples.append((e, target))
    targets = torch.tensor([t for _, t in examples])
    return x, mask, targets, examples


@pytest.fixture
def scores(batch) -> torch.Tensor:
    """(3, 9) random scores, some negative; padding positions get a large junk value that must be ignored."""
    _, mask, _, _ = batch
    g = torch.Generator().manual_seed(5)
    s = torch.rand(mask.shape, generator=g) - 0.3
    return torch.where(mask.bool(), s, torch.full_like(s, 7.0))
