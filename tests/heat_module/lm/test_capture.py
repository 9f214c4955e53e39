import copy

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


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_weights_capture_equals_eager_output_attentions(arch):
    """The captured probabilities equal transformers' own ``output_attentions=True`` of an eager copy that never
    went through ``install`` (every layer; left padding in the batch; padded query rows left out)."""
    ref = tiny_model(arch, attn_implementation="eager")
    model = install(copy.deepcopy(ref))
    ids = torch.randint(4, TINY_VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    with torch.no_grad():
        expected = ref(ids, attention_mask=mask, output_attentions=True).attentions
        with capture(weights=True) as records:
            model(ids, attention_mask=mask)
    assert ref.config._attn_implementation == "eager" and len(records) == len(expected) == 2
    for rec, att in zip(records, expected):
        assert rec.weights.shape == att.shape == (2, 4, 7, 7)
        torch.testing.assert_close(rec.weights[1], att[1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rec.weights[0, :, 2:], att[0, :, 2:], rtol=1e-5, atol=1e-6)


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


def tiny_alibi_falcon():
    """falcon-rw style: ALiBi, the position bias added to the attention mask per head."""
    from transformers import AutoModelForCausalLM, FalconConfig

    cfg = FalconConfig(vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, alibi=True,
                       multi_query=False, parallel_attn=False, bias=True, new_decoder_architecture=False,
                       pad_token_id=0)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()


@pytest.mark.parametrize("method", ["heat", "heat_batched", "exact", "attention_rollout"])
def test_alibi_is_refused_before_any_score(method):
    """The bias lives in the mask (per head, finite non-zero entries): HEAT's captures, prefix cache and rollout
    would drop it, so every computation that records attention refuses it; outside them the model is unchanged."""
    import heat_module as hm
    from heat_module.baselines import get_method

    model = tiny_alibi_falcon()
    ids = torch.randint(4, TINY_VOCAB, (12,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(ids[None]).logits
    config = {"heat": hm.HEATConfig(), "heat_batched": hm.HEATConfig(information={"name": "exact", "batch_size": 2}),
              "exact": hm.HEATConfig.preset("exact")}.get(method)
    impl = model.config._attn_implementation
    with pytest.raises(TypeError, match=r"'falcon'.*ALiBi"):  # refused from the config, before install
        get_method(method)(model) if config is None else hm.HEAT(model, None, config)
    assert model.config._attn_implementation == impl
    with torch.no_grad():
        torch.testing.assert_close(model(ids[None]).logits, before, rtol=0, atol=0)  # the model is unchanged
