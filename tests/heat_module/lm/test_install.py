"""Installing HEAT leaves the model as it was: bit-for-bit logits, the original implementation
restored on close, several HEAT objects on one model, and no attention argument dropped silently."""

import copy

import pytest
import torch

from heat_module import HEAT, HEATConfig
from heat_module.lm.capture import ATTN_IMPLEMENTATION, capture, heat_attention_forward, install, uninstall
from heat_module.testing import ARCHITECTURES, EXTRA_ARCHITECTURES, TINY_VOCAB, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(n: int = 11, pad: int = 3, seed: int = 0):
    ids = torch.randint(4, TINY_VOCAB, (2, n), generator=torch.Generator().manual_seed(seed))
    am = torch.ones_like(ids)
    am[0, :pad] = 0
    return ids, am


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit for bit (NaN where both are NaN: a model may itself give NaN on fully padded rows)."""
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


@pytest.mark.parametrize("arch", ARCHITECTURES + EXTRA_ARCHITECTURES)
def test_logits_unchanged_by_install(arch):
    model = tiny_model(arch)
    original = model.config._attn_implementation
    ids, am = _batch()
    with torch.no_grad():
        before = model(ids, attention_mask=am).logits
        install(model)
        assert model.config._attn_implementation == ATTN_IMPLEMENTATION
        during = model(ids, attention_mask=am).logits
        uninstall(model)
        after = model(ids, attention_mask=am).logits
    assert _same(before, during), (before - during).abs().nan_to_num().max()
    assert _same(before, after)
    assert model.config._attn_implementation == original


def test_eager_model_keeps_double_backward_after_close():
    model = tiny_model("llama", attn_implementation="eager").double()
    reference = copy.deepcopy(model)
    ids = torch.tensor([[5, 9, 17, 30]])
    x = model.get_input_embeddings()(ids)[:, :, :4].detach()

    def f(m):
        def g(z):
            emb = m.get_input_embeddings()(ids).detach().clone()
            emb[:, :, :4] = z
            return torch.log_softmax(m(inputs_embeds=emb).logits[0, -1], -1)[7]
        return g

    with HEAT(model, config=HEATConfig.preset("exact")) as heat:  # S: HEAT's double-backward path
        heat.attribute(ids[0])
    assert model.config._attn_implementation == "eager"
    got = torch.autograd.functional.hessian(f(model), x)
    expected = torch.autograd.functional.hessian(f(reference), x)
    assert torch.equal(got, expected)


def test_two_heat_objects_on_one_model():
    model = tiny_model("llama").double()
    ids = torch.tensor([5, 9, 17, 30, 8])
    cfg = HEATConfig.preset("exact", curvature={"name": "exact", "hvp_chunk_size": 4})
    first, second = HEAT(model, config=cfg), HEAT(model, config=cfg)
    expected = second.attribute(ids).scores
    first.close()
    first.close()  # idempotent: does not undo the second object's install
    assert model.config._attn_implementation == ATTN_IMPLEMENTATION
    torch.testing.assert_close(second.attribute(ids).scores, expected, rtol=0, atol=0)
    second.close()
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError, match="closed"):
        first.attribute(ids)


def test_unknown_attention_argument_raises_naming_it():
    model = tiny_model("llama")
    layer = model.model.layers[0].self_attn
    q = torch.randn(1, 4, 3, 8)
    k = v = torch.randn(1, 2, 3, 8)
    with capture(), pytest.raises(NotImplementedError, match="attn_bias_extra"):
        heat_attention_forward(layer, q, k, v, None, scaling=0.3, attn_bias_extra=torch.ones(1))
    with capture(), pytest.raises(ValueError, match="dropout"):
        heat_attention_forward(layer, q, k, v, None, scaling=0.3, dropout=0.1)
    # outside HEAT's own paths every argument goes to the model's original function (which ignores unknown ones)
    out, _ = heat_attention_forward(layer, q, k, v, None, scaling=0.3, attn_bias_extra=torch.ones(1))
    assert out.shape == (1, 3, 4, 8)
