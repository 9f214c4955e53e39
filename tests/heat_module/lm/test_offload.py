"""Models accelerate dispatched with CPU and disk offload: every method equals the undispatched model.

SmolLM2 comes from a GGUF file dequantised by transformers on load (:mod:`heat_module.lm.loading`), so these tests
also cover GGUF-quantised checkpoints. Its 30 layers alternate between ``"cpu"`` and ``"disk"`` (weights read from
``offload_folder`` by accelerate's hooks on every forward, ``meta`` outside it); the final norm is on disk too and
the tied embedding / LM head stay on the CPU (accelerate cannot load tied weights from disk; a tiny untied model
checks the embedding on disk, where the mask vectors and the input device come from). The reference is the same
checkpoint loaded plainly. The device map changes where the weights live, not one floating-point operation, so the
scores must agree to round-off (rtol 1e-5; they are bitwise equal here).
"""

from __future__ import annotations

import pytest
import torch

import heat_module as hm
from heat_module.attribution.registry import build
from heat_module.heat.progress import expected_seconds
from heat_module.lm.loading import load_model
from heat_module.lm.offload import input_device, is_dispatched, materialized, offloaded_modules

pytestmark = pytest.mark.usefixtures("one_thread")
TEXT = "The capital of France is"  # 5 tokens: the shared machine runs the exact preset in seconds
TEXTS = ["The capital of France is", "She poured the milk into the"]  # a padded batch (5 and 6 tokens)


def cpu_disk_map(layers: int = 30) -> dict[str, str]:
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "disk", "lm_head": "cpu"}
    device_map.update({f"model.layers.{i}": "cpu" if i % 2 else "disk" for i in range(layers)})
    return device_map


@pytest.fixture(scope="module")
def dispatched(tmp_path_factory):
    folder = tmp_path_factory.mktemp("offload")
    return load_model("smollm2", device_map=cpu_disk_map(), offload_folder=folder, memoize=False)


def attribute(model, tok, method, config):
    if method == "heat":
        with hm.HEAT(model, tok, config) as heat:
            return heat.attribute(TEXT)
    return build(method, model, tok, **config).attribute(TEXT)


@pytest.mark.slow
def test_the_model_is_really_offloaded(dispatched):
    model, _ = dispatched
    assert is_dispatched(model)
    names = offloaded_modules(model)
    assert any(n.startswith("model.layers.0.") for n in names) and not any(n.startswith("model.layers.1.")
                                                                              for n in names)
    o_proj = model.model.layers[0].self_attn.o_proj
    assert o_proj.weight.device.type == "meta"
    with materialized(model.model.layers[0]):
        assert o_proj.weight.device.type == "cpu" and o_proj.weight.abs().sum() > 0
    assert o_proj.weight.device.type == "meta"
    assert input_device(model) == torch.device("cpu")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "config"),
    [
        ("heat", hm.HEATConfig()),
        ("heat", hm.HEATConfig.preset("fast")),
        ("heat", hm.HEATConfig.preset("fisher")),
        ("heat", hm.HEATConfig.preset("exact")),
        ("heat", hm.HEATConfig(window=3, stride=2)),
        ("attnlrp", {}),
        ("gated", {}),
    ],
    ids=["default", "fast", "fisher", "exact", "windowed", "attnlrp", "gated"],
)
def test_every_method_equals_the_undispatched_model(smollm2, dispatched, method, config):
    ref = attribute(*smollm2, method, config)
    got = attribute(*dispatched, method, config)
    assert got.target_id == ref.target_id and got.scores.dtype == torch.float32
    torch.testing.assert_close(got.scores, ref.scores, rtol=1e-5, atol=1e-6 * float(ref.scores.abs().max()))


@pytest.mark.slow
def test_a_padded_batch_equals_the_undispatched_model(smollm2, dispatched):
    model, tok = smollm2
    enc = tok(TEXTS, return_tensors="pt", padding=True, padding_side="left")
    with hm.HEAT(model, tok) as heat:
        ref = heat.attribute_batch(enc.input_ids, enc.attention_mask)
    with hm.HEAT(dispatched[0], tok) as heat:
        got = heat.attribute_batch(enc.input_ids, enc.attention_mask)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.scores, b.scores, rtol=1e-5, atol=1e-6 * float(b.scores.abs().max()))


@pytest.mark.slow
def test_lightning_predict_equals_the_undispatched_model(smollm2, dispatched):
    import lightning.pytorch as pl

    from heat_module.data import TextPromptsDataModule
    from heat_module.lightning.module import HEATModule

    model, tok = dispatched
    trainer = pl.Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    data = TextPromptsDataModule(TEXTS, tokenizer=tok, batch_size=2)
    results = [r for batch in trainer.predict(HEATModule(model, tok), datamodule=data) for r in batch]
    with hm.HEAT(*smollm2) as heat:
        for r, text in zip(results, TEXTS):
            ref = heat.attribute(text)
            torch.testing.assert_close(r.scores, ref.scores, rtol=1e-5, atol=1e-6 * float(ref.scores.abs().max()))


@pytest.mark.slow
def test_forward_over_reverse_is_refused_on_an_offloaded_model(dispatched):
    model, tok = dispatched
    cfg = hm.HEATConfig.preset("exact", curvature={"name": "exact", "hvp_mode": "forward_over_reverse"})
    with hm.HEAT(model, tok, cfg) as heat:
        with pytest.raises(ValueError, match="offloads.*forward_over_reverse"):
            heat.attribute(TEXT)


@pytest.mark.parametrize(
    ("method", "config"),
    [
        ("heat", hm.HEATConfig()),
        ("heat", hm.HEATConfig(information={"name": "exact", "mask": "mean"})),
        ("heat", hm.HEATConfig(information={"name": "exact", "mask": "token", "mask_token_id": 3})),
        ("heat", hm.HEATConfig.preset("fast")),
        ("heat", hm.HEATConfig.preset("exact")),
        ("integrated_gradients", {"steps": 4}),
        ("occlusion", {}),
        ("occlusion", {"replacement": "mean"}),
    ],
    ids=["default", "mask-mean", "mask-token", "fast", "exact", "ig", "occlusion", "occlusion-mean"],
)
def test_an_embedding_on_disk(tmp_path, tiny_tok, method, config):
    """Everything on disk but the LM head: the masks read the offloaded embedding, inputs go to its execution
    device. Reference: the same checkpoint loaded plainly (same attention implementation, same weights)."""
    from heat_module.testing import tiny_model

    tiny = tiny_model("llama", seed=0)
    assert not tiny.config.tie_word_embeddings
    tiny.save_pretrained(tmp_path / "model")
    tiny_tok.save_pretrained(tmp_path / "model")
    device_map = {"model.embed_tokens": "disk", "model.rotary_emb": "cpu", "model.norm": "disk", "lm_head": "cpu"}
    device_map.update({f"model.layers.{i}": "disk" for i in range(tiny.config.num_hidden_layers)})
    plain, _ = load_model(str(tmp_path / "model"), tiny_tok, memoize=False)
    model, _ = load_model(str(tmp_path / "model"), tiny_tok, device_map=device_map, offload_folder=tmp_path / "off",
                          memoize=False)
    assert model.model.embed_tokens.weight.device.type == "meta" and input_device(model) == torch.device("cpu")
    assert expected_seconds(model, 8, 1) == expected_seconds(plain, 8, 1)  # a CPU model, not a meta one
    text = "the cat sat on the"
    if method == "heat":
        with hm.HEAT(plain, tiny_tok, config) as heat:
            ref = heat.attribute(text)
        with hm.HEAT(model, tiny_tok, config) as heat:
            got = heat.attribute(text)
    else:
        ref = build(method, plain, tiny_tok, **config).attribute(text)
        got = build(method, model, tiny_tok, **config).attribute(text)
    torch.testing.assert_close(got.scores, ref.scores, rtol=1e-5, atol=1e-6 * float(ref.scores.abs().max()))
