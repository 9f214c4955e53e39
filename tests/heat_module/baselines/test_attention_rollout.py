"""Attention rollout and last-layer attention against a literal matrix product of ``output_attentions``."""

from __future__ import annotations

import pytest
import torch

from heat_module.baselines import get_method
from heat_module.testing import tiny_model


def literal_rollout(model, ids: torch.Tensor, residual: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(row p of Â^{L-1}···Â^0, row p of the last layer's head mean) from an eager model's attentions."""
    with torch.no_grad():
        attentions = model(ids[None], output_attentions=True).attentions
    n = ids.numel()
    rollout = torch.eye(n, dtype=torch.float64)
    for a in attentions:  # bottom-up product R ← Â^l R
        hat = residual * torch.eye(n, dtype=torch.float64) + (1 - residual) * a[0].double().mean(0)
        hat = hat / hat.sum(-1, keepdim=True)
        rollout = hat @ rollout
    return rollout[-1].float(), attentions[-1][0].mean(0)[-1].float()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_matches_literal_product(arch, batch):
    reference = tiny_model(arch, seed=1, attn_implementation="eager")
    ids = batch[2][2]
    expected_rollout, expected_last = literal_rollout(reference, ids)
    model = tiny_model(arch, seed=1)  # same weights, the default (sdpa) implementation
    got = get_method("attention_rollout")(model).attribute(ids)
    torch.testing.assert_close(got.scores, expected_rollout, atol=1e-5, rtol=1e-4)
    assert got.scores.sum() == pytest.approx(1.0, abs=1e-5)
    last = get_method("last_layer_attention")(model).attribute(ids)
    torch.testing.assert_close(last.scores, expected_last, atol=1e-5, rtol=1e-4)
    assert got.method == "attention_rollout" and last.method == "last_layer_attention"


def test_residual_option_and_validation(model, batch):
    ids = batch[2][0]
    reference = tiny_model("llama", seed=0, attn_implementation="eager")
    expected, _ = literal_rollout(reference, ids, residual=0.2)
    got = get_method("attention_rollout")(model, residual=0.2).attribute(ids)
    torch.testing.assert_close(got.scores, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="residual"):
        get_method("attention_rollout")(model, residual=1.0)
    with pytest.raises(ValueError, match="head_fusion"):
        get_method("attention_rollout")(model, head_fusion="median")


def test_batched_equals_unbatched_with_left_padding(model, batch, check_batched):
    check_batched(get_method("attention_rollout")(model), batch)
    check_batched(get_method("last_layer_attention")(model), batch)


@pytest.mark.parametrize("name", ["attention_rollout", "last_layer_attention", "gated"])
def test_hybrid_decoder_refused_before_any_forward(name):
    """LFM2 mixes tokens by short convolutions beside attention: attention alone does not describe it (the same
    refusal as HEAT's gate M), and the model is left untouched."""
    model = tiny_model("lfm2")
    impl = model.config._attn_implementation
    with pytest.raises(ValueError, match=r"Expected a decoder whose token mixing is all attention .* hybrid .*'conv'"):
        get_method(name)(model)
    assert model.config._attn_implementation == impl
