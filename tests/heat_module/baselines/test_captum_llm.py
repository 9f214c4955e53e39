"""captum's LLM wrappers behind our contract (skipped without captum): agreement with our own methods where the
definitions coincide (the tiny model's token 0 embeds to the zero vector)."""

from __future__ import annotations

import pytest
import torch

from heat_module.baselines import get_method

pytest.importorskip("captum")


@pytest.fixture(scope="module")
def zero_token(model):
    assert torch.count_nonzero(model.get_input_embeddings().weight[0]) == 0  # padding_idx row
    return 0


def test_feature_ablation_equals_logprob_occlusion(model, tok, batch, zero_token):
    ids, mask, rows = batch
    ours = get_method("occlusion")(model, tok, measure="logprob").attribute_batch(ids[:2], mask[:2])
    theirs = get_method("captum_feature_ablation")(model, tok, baseline_token=zero_token).attribute_batch(
        ids[:2], mask[:2])  # captum takes one example at a time: attribute_batch loops over the unpadded rows
    for a, b in zip(theirs, ours):
        assert a.method == "captum_feature_ablation" and a.target_id == b.target_id
        torch.testing.assert_close(a.scores, b.scores, atol=1e-4, rtol=1e-3)


def test_layer_integrated_gradients_equals_our_ig(model, tok, batch, zero_token):
    ids = batch[2][1]
    ours = get_method("integrated_gradients")(model, tok, steps=16, method="gauss_legendre").attribute(ids)
    theirs = get_method("captum_layer_integrated_gradients")(model, tok, steps=16, baseline_token=zero_token)
    torch.testing.assert_close(theirs.attribute(ids).scores, ours.scores, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("name", ["captum_shapley_value_sampling", "captum_lime"])
def test_sampling_methods_run_and_are_seeded(model, tok, batch, name):
    ids = batch[2][1]
    method = get_method(name)(model, tok, n_samples=4, seed=1)
    a, b = method.attribute(ids), method.attribute(ids)
    assert a.method == name and a.scores.shape == (ids.numel(),) and torch.isfinite(a.scores).all()
    torch.testing.assert_close(a.scores, b.scores)
