"""M against a literal computation from eager ``output_attentions`` and per-head v·W_O (docs/design.md "M")."""

import pytest
import torch

from heat_module.heat.transition import transition_from_captures
from heat_module.lm.capture import capture, install
from heat_module.lm.projection import output_projection
from heat_module.testing import ARCHITECTURES, TINY_VOCAB, tiny_model


def naive_transition(attentions, values, w_os, n_heads, layers=None):
    """Literal docs/design.md definition: loops over layers and heads, full n×n matrices."""
    L = len(attentions)
    n = attentions[0].shape[-1]
    rho = torch.zeros(n, dtype=torch.float64)
    rho[-1] = 1
    m = torch.zeros(n, dtype=torch.float64)
    chosen = range(L) if layers is None else layers
    for layer in reversed(range(L)):
        A = attentions[layer][0].double()  # (H, n, n)
        v = values[layer][0].double()  # (H_kv, n, dh)
        dh = v.shape[-1]
        W = w_os[layer].double()  # (H*dh, d)
        phis = []
        for h in range(n_heads):
            phi = rho @ A[h]
            phis.append(phi)
            if layer in chosen:
                kv = h // (n_heads // v.shape[0])
                norms = (v[kv] @ W[h * dh:(h + 1) * dh]).abs().sum(-1)
                m += phi * norms
        rho = 0.5 * rho + 0.5 * torch.stack(phis).mean(0)
    return m / m.sum()


def eager_reference(model, ids):
    """Attention maps from a separate eager run; values from the capture (the only per-arch-free source)."""
    eager = model.config._attn_implementation
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(ids, output_attentions=True)
    model.set_attn_implementation(eager)
    install(model)
    with torch.no_grad(), capture() as records:
        model(ids)
    values = [r.value for r in records]
    w_os = [output_projection(r.module) for r in records]
    return out.attentions, values, w_os, records


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_transition_matches_eager_attentions(arch):
    model = tiny_model(arch).double()
    ids = torch.randint(4, TINY_VOCAB, (1, 10), generator=torch.Generator().manual_seed(1))
    attentions, values, w_os, records = eager_reference(model, ids)
    H = records[0].query.shape[1]
    expected = naive_transition(attentions, values, w_os, H)
    got = transition_from_captures(records, backend="torch")[0]
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-7)
    assert abs(float(got.sum()) - 1) < 1e-6
    # layer subset: sum only over chosen layers, rho still flows through all
    got_sub = transition_from_captures(records, layers=[0], backend="torch")[0]
    torch.testing.assert_close(got_sub.double(), naive_transition(attentions, values, w_os, H, layers=[0]),
                               rtol=1e-5, atol=1e-7)


def test_transition_with_independent_values_llama():
    """For a Llama model the values are recomputed from v_proj on the layer inputs (no capture involved)."""
    model = tiny_model("llama").double()
    ids = torch.randint(4, TINY_VOCAB, (1, 8), generator=torch.Generator().manual_seed(2))
    inputs = []
    hooks = [layer.self_attn.register_forward_pre_hook(lambda mod, args, kw: inputs.append(kw["hidden_states"]),
                                                       with_kwargs=True) for layer in model.model.layers]
    attentions, _, _, records = eager_reference(model, ids)
    for h in hooks:
        h.remove()
    cfg = model.config
    dh = cfg.hidden_size // cfg.num_attention_heads
    values = [layer.self_attn.v_proj(x)[0].view(-1, cfg.num_key_value_heads, dh).transpose(0, 1)[None]
              for layer, x in zip(model.model.layers, inputs[:cfg.num_hidden_layers])]
    w_os = [layer.self_attn.o_proj.weight.t() for layer in model.model.layers]
    expected = naive_transition(attentions, values, w_os, cfg.num_attention_heads)
    torch.testing.assert_close(transition_from_captures(records, backend="torch")[0].double(), expected,
                               rtol=1e-5, atol=1e-7)


def test_padding_gets_zero_and_batch_matches_single():
    model = install(tiny_model("qwen2").double())
    ids = torch.randint(4, TINY_VOCAB, (1, 7), generator=torch.Generator().manual_seed(3))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 7, dtype=torch.long)], 1)
    with torch.no_grad(), capture() as single:
        model(ids)
    from heat_module.lm.forward import position_ids_from_mask

    with torch.no_grad(), capture() as batch:
        model(padded, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    m1 = transition_from_captures(single, backend="torch")[0]
    m2 = transition_from_captures(batch, mask, backend="torch")[0]
    assert m2[:3].abs().max() == 0
    torch.testing.assert_close(m2[3:], m1, rtol=1e-5, atol=1e-7)


def test_sink_options_renormalise():
    model = install(tiny_model("llama"))
    ids = torch.randint(4, TINY_VOCAB, (1, 9))
    with torch.no_grad(), capture() as records:
        model(ids)
    keep, parts = transition_from_captures(records, return_parts=True)
    first = transition_from_captures(records, sink="first")[0]
    assert first[0] == 0 and abs(float(first.sum()) - 1) < 1e-6
    torch.testing.assert_close(first[1:], keep[0, 1:] / keep[0, 1:].sum())
    with pytest.raises(ValueError, match="sink"):
        transition_from_captures(records, sink="bogus")


@pytest.mark.parametrize("backend", ["torch", "cpp", "auto"])
def test_kernel_backends_match_on_gqa_with_padding(backend):
    """M through the rollout_phi op (C++ on CPU) equals the materialised-attention computation."""
    model = install(tiny_model("llama", layers=3))
    ids = torch.randint(4, TINY_VOCAB, (2, 11), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    from heat_module.lm.forward import position_ids_from_mask

    with torch.no_grad(), capture(weights=True) as materialised:
        model(ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    with torch.no_grad(), capture() as records:
        model(ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    assert all(r.weights is None for r in records)  # no n×n map is kept
    expected = transition_from_captures(materialised, mask)
    torch.testing.assert_close(transition_from_captures(records, mask, backend=backend), expected,
                               rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_transition_on_smollm2(smollm2, backend):
    model, tok = smollm2
    install(model)
    ids = tok("The quick brown fox jumps over the lazy", return_tensors="pt").input_ids
    attentions, values, w_os, records = eager_reference(model, ids)
    expected = naive_transition(attentions, values, w_os, model.config.num_attention_heads)
    got = transition_from_captures(records, backend=backend)[0]
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    # the attention sink: docs/design.md's M puts most of the mass on the first token of this model
    assert got[0] > 0.5


def test_rollout_layers_out_of_range_refused():
    model = install(tiny_model("qwen2"))  # 2 attention layers
    ids = torch.randint(4, TINY_VOCAB, (1, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), capture() as caps:
        model(ids)
    assert len(caps) == 2
    for layers in ([7], [2], [-3]):
        with pytest.raises(ValueError, match=r"Expected rollout_layers in \[-2, 2\).*got \[" + str(layers[0])):
            transition_from_captures(caps, layers=layers, backend="torch")
    torch.testing.assert_close(transition_from_captures(caps, layers=[-1], backend="torch"),
                               transition_from_captures(caps, layers=[1], backend="torch"))
