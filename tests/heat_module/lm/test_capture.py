import pytest
import torch

from heat_module.lm.capture import capture, check_supported, install
from heat_module.lm.projection import output_projection
from heat_module.testing import ARCHITECTURES, TINY_VOCAB, tiny_model


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_install_keeps_outputs_and_captures_every_layer(arch):
    model = tiny_model(arch)
    ids = torch.randint(4, TINY_VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        ref = model(ids, attention_mask=mask).logits
        install(model)
        with capture() as records:
            out = model(ids, attention_mask=mask).logits
    assert model.config._attn_implementation == "heat"
    torch.testing.assert_close(out[1], ref[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[0, 3:], ref[0, 3:], rtol=1e-4, atol=1e-5)
    assert len(records) == model.config.num_hidden_layers if hasattr(model.config, "num_hidden_layers") else True
    rec = records[0]
    B, H, n, dh = rec.query.shape
    assert (B, n) == (2, 9) and rec.key.shape[2] == n and H % rec.key.shape[1] == 0
    assert rec.name == "layers.0.attn" and records[-1].layer == len(records) - 1
    # the mask is causal and hides the left padding (without the mask function it would be missing)
    assert rec.mask is not None and rec.mask.shape[-2:] == (n, n)
    future = torch.ones(n, n, dtype=torch.bool).triu(1)
    assert (rec.mask[1, 0][future] < -1e4).all() and (rec.mask[1, 0][~future] == 0).all()
    assert (rec.mask[0, 0, 5, :3] < -1e4).all()
    assert output_projection(rec.module).shape == (H * dh, model.config.hidden_size if hasattr(
        model.config, "hidden_size") else model.config.n_embd)


def test_weights_capture_is_probability():
    model = install(tiny_model("llama"))
    ids = torch.randint(4, TINY_VOCAB, (1, 7))
    with torch.no_grad(), capture(weights=True) as records:
        model(ids)
    w = records[1].weights
    torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)))
    assert w.triu(1).abs().max() == 0


def test_encoder_only_model_is_rejected():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    with pytest.raises(TypeError, match="decoder-only causal LM.*BertModel"):
        check_supported(bert)


def test_non_transformers_module_is_rejected():
    with pytest.raises(TypeError, match="Expected a transformers PreTrainedModel"):
        check_supported(torch.nn.Linear(3, 3))


def test_model_without_attention_interface_is_rejected():
    model = tiny_model("llama")
    model._can_set_attn_implementation = lambda: False  # as models with hand-written attention report
    with pytest.raises(TypeError, match="AttentionInterface"):
        install(model)
