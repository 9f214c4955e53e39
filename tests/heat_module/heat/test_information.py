"""I (eq. 4): the batched prefix-sharing computation equals the naive one-forward-per-token loop."""

import pytest
import torch

from heat_module.heat.information import information, information_naive, kl_divergence
from heat_module.lm.capture import capture, consecutive_runs
from heat_module.lm.forward import embed, mask_vector, next_token_logits
from heat_module.testing import TINY_VOCAB
from tests.conftest import make_tiny


def run(model, x, mask=None):
    with torch.no_grad(), capture() as records:
        logits = next_token_logits(model, x, mask)
    return torch.log_softmax(logits, -1), records


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3", "gptj"])
@pytest.mark.parametrize("kind", ["zero", "mean", "token"])
def test_batched_equals_naive(arch, kind):
    model = make_tiny(arch)
    ids = torch.randint(4, TINY_VOCAB, (1, 9), generator=torch.Generator().manual_seed(0))
    x = embed(model, ids)
    value = mask_vector(model, kind, token_id=7)
    logp, records = run(model, x)
    ref = information_naive(model, x, None, value)
    got = information(model, x, records, logp, None, value, batch_size=4)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-9)
    assert (ref > 0).all()


def test_padded_equals_unpadded():
    model = make_tiny("phi3")
    ids = torch.randint(4, TINY_VOCAB, (1, 8), generator=torch.Generator().manual_seed(1))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 8, dtype=torch.long)], 1)
    x, xp = embed(model, ids), embed(model, padded)
    logp, records = run(model, x)
    logp_p, records_p = run(model, xp, mask)
    ref = information(model, x, records, logp, batch_size=3)
    got = information(model, xp, records_p, logp_p, mask, batch_size=3)
    assert got[:3].abs().max() == 0
    torch.testing.assert_close(got[3:], ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(information_naive(model, xp, mask)[3:], ref, rtol=1e-6, atol=1e-9)


def test_mask_vectors():
    model = make_tiny("llama")
    weight = model.get_input_embeddings().weight
    assert mask_vector(model, "zero").abs().max() == 0
    torch.testing.assert_close(mask_vector(model, "mean"), weight.mean(0))
    torch.testing.assert_close(mask_vector(model, "token", token_id=5), weight[5])
    with pytest.raises(ValueError, match="mask_token_id"):
        mask_vector(model, "token", token_id=10**6)


def test_mean_mask_follows_the_weights():
    """The cached mean embedding is recomputed when the weights change in place or are cast (a cache keyed by id
    alone returned a stale mean, and a reused id made test_mask_vectors flaky)."""
    from heat_module.testing import tiny_model

    model = tiny_model("llama", seed=0)
    weight = model.get_input_embeddings().weight
    first = mask_vector(model, "mean")
    with torch.no_grad():
        weight.add_(1.0)
    torch.testing.assert_close(mask_vector(model, "mean"), first + 1)
    model.double()
    mean = mask_vector(model, "mean")
    assert mean.dtype == torch.float64
    torch.testing.assert_close(mean, model.get_input_embeddings().weight.mean(0))


def test_consecutive_runs_and_kl():
    assert consecutive_runs([0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3], [4]]
    assert consecutive_runs([3, 4, 6], 5) == [[3, 4], [6]]
    p = torch.log_softmax(torch.tensor([1.0, 2.0, 3.0]), -1)
    q = torch.log_softmax(torch.tensor([3.0, 2.0, 1.0]), -1)
    expected = sum(float(p[i].exp() * (p[i] - q[i])) for i in range(3))
    assert abs(float(kl_divergence(p, q)) - expected) < 1e-6
    assert float(kl_divergence(p, p)) == 0


def test_fp64_model_gets_fp64_information_on_a_near_flat_prediction():
    """A float64 model's I (naive and batched) equals a float64 loop through the model's own forward at 1e-9
    relative, and so do HEAT's I and scores (fp64 components for an fp64 model, windowed too), on a prediction so flat
    that every KL is below 1e-5 (a KL computed in fp32 is off by ~10 % there)."""
    import heat_module as hm
    from heat_module.lm.capture import uninstall

    model = make_tiny("llama")
    with torch.no_grad():
        model.model.norm.weight.mul_(1e-3)  # tiny final hidden state: near-uniform next-token distribution
    ids = torch.randint(4, TINY_VOCAB, (1, 8), generator=torch.Generator().manual_seed(0))
    x = embed(model, ids).detach()

    def logp_of(inputs):  # the model's own forward, no HEAT helper
        with torch.no_grad():
            return torch.log_softmax(model(inputs_embeds=inputs, use_cache=False).logits[0, -1], -1)

    p = logp_of(x)
    assert p.dtype == torch.float64 and float(p.exp().max() * TINY_VOCAB) < 1.01  # near flat
    ref = []
    for i in range(ids.shape[1]):
        xi = x.clone()
        xi[0, i] = 0.0
        q = logp_of(xi)
        ref.append((p.exp() * (p - q)).sum())
    ref = torch.stack(ref)
    assert ref.dtype == torch.float64 and 0 < float(ref.max()) < 1e-5
    logp, records = run(model, x)
    for got in (information_naive(model, x), information(model, x, records, logp, batch_size=3)):
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=0.0)
    with hm.HEAT(model, None, hm.HEATConfig(ablation="information", normalize="none")) as heat:
        res = heat.attribute(ids[0])
    for values in (res.information, res.scores, res.transition):
        assert values.dtype == torch.float64
    torch.testing.assert_close(res.information, ref, rtol=1e-9, atol=0.0)
    torch.testing.assert_close(res.scores, ref, rtol=1e-9, atol=0.0)  # the ablation's scores are I itself
    with hm.HEAT(model, None, hm.HEATConfig(window=4, stride=4, ablation="information", normalize="none")) as heat:
        windowed = heat.attribute(ids[0])
    assert windowed.scores.dtype == torch.float64 and windowed.transition.dtype == torch.float64
    uninstall(model)


def tiny_llama4_short_floor(floor_scale=4):
    """Tiny Llama 4 (float64) whose NoPE layer scales queries by log1p(floor((arange(q) + past + 1) / floor_scale))
    · attn_scale + 1 (attention temperature tuning) with a floor_scale below the context length, so it takes effect."""
    model = make_tiny("llama4")
    touched = 0
    for module in model.modules():
        if hasattr(module, "floor_scale"):
            module.floor_scale, module.attn_scale = floor_scale, 1.0
            touched += int(module.attn_temperature_tuning and not module.use_rope)
    model.config.floor_scale, model.config.attn_scale = floor_scale, 1.0
    assert touched >= 1  # at least one layer without RoPE uses the temperature
    return model


def test_llama4_attention_temperature_batched_equals_the_models_own_loop():
    """Suffix-only runs of the prefix cache would restart the temperature's position count at 0: I must equal a
    loop through the model's own forward once the context passes floor_scale."""
    model = tiny_llama4_short_floor()
    ids = torch.randint(4, TINY_VOCAB, (1, 10), generator=torch.Generator().manual_seed(0))
    x = embed(model, ids).detach()

    def logp_of(inputs):
        with torch.no_grad():
            return torch.log_softmax(model(inputs_embeds=inputs, use_cache=False).logits[0, -1], -1)

    p = logp_of(x)
    ref = []
    for i in range(ids.shape[1]):
        xi = x.clone()
        xi[0, i] = 0.0
        ref.append((p.exp() * (p - logp_of(xi))).sum())
    ref = torch.stack(ref)
    logp, records = run(model, x)
    got = information(model, x, records, logp, batch_size=2)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-12)
