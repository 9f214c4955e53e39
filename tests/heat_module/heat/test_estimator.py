"""HEAT end to end (eq. 5): combination, ablations, batching, determinism and bad input; the default HEATConfig()
(Fisher S, exact I, normalize="sum") and M·I (``HEATConfig.preset("mi")``) against literal computations."""

import json

import pytest
import torch

import heat_module as hm
from heat_module.heat import Components, combine
from heat_module.heat.cost import information_fe, model_attention_share
from heat_module.heat.curvature import rademacher
from heat_module.heat.i_exact import ExactI
from heat_module.heat.objective import gradient
from heat_module.heat.s_exact import ExactS
from heat_module.heat.s_fisher import FisherS
from heat_module.testing import TINY_VOCAB
from tests.conftest import make_tiny
from tests.heat_module.heat.dense_reference import eager_copy, fisher_reference


@pytest.fixture(scope="module")
def tiny_heat(tiny_tok):
    return hm.HEAT(make_tiny("llama"), tiny_tok, hm.HEATConfig.preset("exact", curvature=ExactS(probes=2)))  # eq. 5


TEXT = "the cat sat on the hat because it was warm and the dog ran"


def literal_m_times_i(model, ids: torch.Tensor) -> torch.Tensor:
    """(n,) M·I (``HEATConfig.preset("mi")``), literally (:func:`literal_m_and_i`)."""
    m, info = literal_m_and_i(model, ids)
    return m * info


def literal_m_and_i(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,) M and (n,) I with the default sink rule, literally, on an eager copy that never went through HEAT's
    capture code (Llama only: values recomputed from v_proj on each layer's input).

    M (docs/design.md "M"): the rollout ρ ← ½ρ + ½·mean_h ρA^{l,h} from the last position down, M_i = Σ_{l,h}
    Φ^{l,h}_i N^{l,h}_i with Φ^{l,h} = ρA^{l,h} and N^{l,h}_i = ‖v^{l,h}_i W_O^{l,h}‖₁, normalised; then the
    ``sink="auto"`` rule (positions with ≥ 20 % of Σ_{l,h} Φ and a mean N below half the context mean get 0, M is
    renormalised). I (eq. 4): KL(P(·|X) ‖ P(·|X with x_i = 0)) by one full forward per token.
    """
    ref = eager_copy(model)
    inputs = []
    hooks = [layer.self_attn.register_forward_pre_hook(lambda mod, args, kw: inputs.append(kw["hidden_states"]),
                                                       with_kwargs=True) for layer in ref.model.layers]
    x = ref.get_input_embeddings()(ids[None]).detach()
    with torch.no_grad():
        out = ref(inputs_embeds=x, output_attentions=True)
    for h in hooks:
        h.remove()
    cfg = ref.config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    dh = cfg.hidden_size // heads
    n = ids.numel()
    rho = torch.zeros(n, dtype=torch.float64)
    rho[-1] = 1
    m, phi_mass, norm_mass = (torch.zeros(n, dtype=torch.float64) for _ in range(3))
    for layer in reversed(range(cfg.num_hidden_layers)):
        attn = ref.model.layers[layer].self_attn
        a = out.attentions[layer][0].double()  # (H, n, n)
        v = attn.v_proj(inputs[layer])[0].view(n, kv_heads, dh).transpose(0, 1).double()  # (H_kv, n, dh)
        w_o = attn.o_proj.weight.t().double()  # (H·dh, d)
        phis = []
        for h in range(heads):
            phi = rho @ a[h]
            norms = (v[h // (heads // kv_heads)] @ w_o[h * dh:(h + 1) * dh]).abs().sum(-1)
            m += phi * norms
            phi_mass += phi
            norm_mass += norms / (heads * cfg.num_hidden_layers)
            phis.append(phi)
        rho = 0.5 * rho + 0.5 * torch.stack(phis).mean(0)
    sinks = (phi_mass / phi_mass.sum() >= 0.2) & (norm_mass / norm_mass.mean() < 0.5)
    m = torch.where(sinks, 0.0, m / m.sum())
    m = m / m.sum()
    with torch.no_grad():
        logp = torch.log_softmax(ref(inputs_embeds=x).logits[0, -1].double(), -1)
        info = torch.zeros(n, dtype=torch.float64)
        for i in range(n):
            masked = x.clone()
            masked[0, i] = 0.0
            logq = torch.log_softmax(ref(inputs_embeds=masked).logits[0, -1].double(), -1)
            info[i] = (logp.exp() * (logp - logq)).sum()
    return m, info


@pytest.mark.parametrize("text", [TEXT, "a red bird sat in the old tree and"])
def test_mi_is_m_times_i(tiny_tok, text):
    """``preset("mi")``: Attr_i = M_i·I_i (eq. 5 with β = 0, γ = 1), no HVP, no gradient; its cost is one captured
    forward plus the prefix-shared masked runs of I."""
    cfg = hm.HEATConfig.preset("mi")
    assert (cfg.beta, cfg.gamma, cfg.alpha, cfg.ablation, cfg.sink) == (0.0, 1.0, 0.0, "full", "auto")
    assert cfg.curvature is None and cfg.information == ExactI(mask="zero")
    model = make_tiny("llama")
    res = hm.HEAT(model, tiny_tok, cfg).attribute(text)
    n = len(res.tokens)
    torch.testing.assert_close(res.scores.double(), literal_m_times_i(model, res.token_ids), rtol=1e-5, atol=1e-9)
    assert res.curvature is None and res.first_order is None
    assert res.cost["hvps"] == 0 and res.cost["gradients"] == 0 and "curvature" not in res.cost["seconds"]
    assert res.cost["forward_passes"] == n + 1
    share = model_attention_share(model, n)  # a suffix's queries attend to every earlier key
    expected = 1 + information_fe(n, cfg.information.batch_size, True, share)
    assert res.cost["forward_equivalents"] == pytest.approx(expected)


@pytest.mark.parametrize("text", [TEXT, "a red bird sat in the old tree and"])
def test_default_is_fisher_s_and_exact_i_normalised_by_sum(tiny_tok, text):
    """HEATConfig(), the choice study's pick: Attr_i = M_i·(0.5·S_i/Σ S + 0.5·I_i/Σ I) with the Fisher S over the 16
    most probable next tokens (each gradient from its own backward on an eager copy) and I of eq. 4, literally; its
    cost is the masked runs of I plus one forward and one 16-cotangent backward, no HVP."""
    cfg = hm.HEATConfig()
    assert (cfg.beta, cfg.gamma, cfg.normalize, cfg.curvature, cfg.information) == (0.5, 0.5, "sum", FisherS(),
                                                                                    ExactI())
    model = make_tiny("llama")
    res = hm.HEAT(model, tiny_tok, cfg).attribute(text)
    m, info = literal_m_and_i(model, res.token_ids)
    x = model.get_input_embeddings()(res.token_ids[None]).detach()
    s = fisher_reference(eager_copy(model), x, rademacher(1, x.shape[1], x.shape[2], seed=cfg.seed, dtype=x.dtype), 16)
    torch.testing.assert_close(res.curvature.double(), s, rtol=1e-4, atol=1e-7)
    expected = m * (0.5 * s / s.sum() + 0.5 * info / info.sum())
    torch.testing.assert_close(res.scores.double(), expected, rtol=1e-4, atol=1e-9)
    assert res.cost["hvps"] == 0 and res.cost["gradients"] > 0


def sink_model(tok, first_word: str):
    """The tiny Llama with an attention sink at ``first_word``'s position 0 (the ``sink="auto"`` rule must fire):
    q_proj = 0 makes attention uniform over the causal prefix, so position 0 collects the most rollout mass (Φ); its
    embedding is a basis vector e_0 whose input column is shrunk ×0.05 in every v_proj, gate_proj and up_proj, so the
    residual stream there stays near e_0 and its value norms N stay far below the context mean — small, not zero, so
    M_0 > 0 unless the rule removes it."""
    model = make_tiny("llama")
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[tok.convert_tokens_to_ids(first_word)] = torch.nn.functional.one_hot(torch.tensor(0), emb.shape[1])
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.zero_()
            for lin in (layer.self_attn.v_proj, layer.mlp.gate_proj, layer.mlp.up_proj):
                lin.weight[:, 0] *= 0.05
    return model


def test_mi_is_m_times_i_with_a_sink(tiny_tok):
    """The literal reference through its sink branch: on :func:`sink_model` position 0 is a sink (M_0 > 0 with
    ``sink="keep"``, 0 by default), and M·I still equals the literal computation — so a wrong sink rule
    (threshold, statistic, or renormalisation) fails here, not only in the hand-worked rollout of test_variants."""
    text = "red bird sat in the tree"
    model = sink_model(tiny_tok, text.split()[0])
    res = hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("mi")).attribute(text)
    kept = hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("mi", sink="keep")).attribute(text)
    assert float(kept.transition[0]) > 0.05 and float(res.transition[0]) == 0.0
    assert float(res.transition[1:].sum()) == pytest.approx(1.0)
    torch.testing.assert_close(res.scores.double(), literal_m_times_i(model, res.token_ids), rtol=1e-5, atol=1e-9)


def test_attribute_combines_components(tiny_heat):
    res = tiny_heat.attribute(TEXT)
    n = len(res.tokens)
    assert n == len(TEXT.split()) and res.scores.shape == (n,)
    expected = res.transition * (0.5 * res.curvature + 0.5 * res.information)
    torch.testing.assert_close(res.scores, expected)
    assert abs(float(res.transition.sum()) - 1) < 1e-6
    assert (res.curvature > 0).all() and (res.information >= 0).all()
    assert res.cost["hvps"] == n * 2 and res.cost["forward_passes"] >= n + 1
    json.dumps(res.to_dict())
    assert hm.AttributionResult.from_dict(res.to_dict()).tokens == res.tokens


@pytest.mark.parametrize("ablation", ["transition", "curvature", "information", "no_gate", "uniform_gate"])
def test_ablations(ablation):
    n = 4
    parts = Components(torch.tensor([0.4, 0.3, 0.2, 0.1]), torch.tensor([1.0, 2, 3, 4]),
                       torch.tensor([4.0, 3, 2, 1]), torch.tensor([1.0, 1, 1, 1]))
    cfg = hm.HEATConfig(beta=0.25, gamma=0.75, alpha=0.5, ablation=ablation, normalize="none")
    inner = 0.25 * parts.curvature + 0.75 * parts.information
    expected = {
        "transition": parts.transition,
        "curvature": parts.curvature,
        "information": parts.information,
        "no_gate": inner + 0.5,
        "uniform_gate": (inner + 0.5) / n,  # eq. 22 with M = 1/n
    }[ablation]
    torch.testing.assert_close(combine(parts, cfg), expected)


def test_first_order_inside_the_gate_eq22_by_hand():
    """HEAT+FO, appendix eq. 22: Attr_i = M[i]·(α‖∇g‖₁ + βS_i + γI_i), numbers worked by hand."""
    parts = Components(torch.tensor([0.4, 0.3, 0.2, 0.1]), torch.tensor([1.0, 2, 3, 4]),
                       torch.tensor([4.0, 3, 2, 1]), torch.tensor([2.0, 0, 4, 8]))
    # α = 0.5, β = 0.25, γ = 0.75: inner_i = 0.5·fo + 0.25·S + 0.75·I
    #   i=0: 1 + 0.25 + 3 = 4.25;  i=1: 0 + 0.5 + 2.25 = 2.75;  i=2: 2 + 0.75 + 1.5 = 4.25;  i=3: 4 + 1 + 0.75 = 5.75
    cfg = hm.HEATConfig(beta=0.25, gamma=0.75, alpha=0.5, normalize="none")
    torch.testing.assert_close(combine(parts, cfg), torch.tensor([0.4 * 4.25, 0.3 * 2.75, 0.2 * 4.25, 0.1 * 5.75]))
    with pytest.raises(TypeError, match="first_order"):  # one form only: the paper's
        hm.HEATConfig(first_order="outside")


def test_first_order_term_is_gradient_norm(tiny_tok):
    model = make_tiny("gpt2")
    heat = hm.HEAT(model, tiny_tok, hm.HEATConfig(alpha=1.0, beta=0.0, gamma=0.0, normalize="none"))
    res = heat.attribute(TEXT)
    x = model.get_input_embeddings()(res.token_ids[None])
    _, grad = gradient(model, x, res.target_id)
    torch.testing.assert_close(res.first_order, grad[0].abs().sum(-1).to(res.first_order.dtype))
    torch.testing.assert_close(res.scores, res.transition * res.first_order)  # eq. 22 with β = γ = 0
    assert res.curvature is None and res.information is None


@pytest.mark.parametrize("ablation", ["transition", "curvature", "information"])
def test_single_component_ablation_spends_no_gradient_on_the_alpha_term(tiny_tok, ablation):
    """These ablations return one component; combine drops α‖∇g‖₁, so it is not computed."""
    model = make_tiny("gpt2")
    res = hm.HEAT(model, tiny_tok, hm.HEATConfig(alpha=1.0, ablation=ablation, progress=False)).attribute(TEXT)
    assert res.first_order is None and "first_order" not in res.cost.seconds


def test_batch_equals_single(tiny_heat, tiny_tok):
    texts = [TEXT, "a red bird sat in the tree", "my hat is stuck in the old"]
    enc = tiny_tok(texts, return_tensors="pt", padding=True)
    targets = torch.tensor([-1, 40, -1])
    batch = tiny_heat.attribute_batch(enc["input_ids"], enc["attention_mask"], targets)
    for text, target, res in zip(texts, targets.tolist(), batch):
        single = tiny_heat.attribute(text, target=None if target < 0 else target)
        assert res.tokens == single.tokens and res.target_id == single.target_id
        for name in ("scores", "transition", "curvature", "information"):
            torch.testing.assert_close(getattr(res, name), getattr(single, name), rtol=1e-5, atol=1e-7)
    assert batch[1].target_id == 40


def test_deterministic_under_seed(tiny_tok):
    model = make_tiny("qwen2")
    a = hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("exact", seed=3)).attribute(TEXT)  # the seed seeds S's probes
    b = hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("exact", seed=3)).attribute(TEXT)
    c = hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("exact", seed=4)).attribute(TEXT)
    assert torch.equal(a.scores, b.scores)
    assert not torch.equal(a.curvature, c.curvature)


def test_bad_input(tiny_heat, tiny_tok):
    with pytest.raises(ValueError, match="non-empty text"):
        tiny_heat.attribute("   ")
    with pytest.raises(ValueError, match="target id"):
        tiny_heat.attribute(TEXT, target=TINY_VOCAB + 5)
    with pytest.raises(ValueError, match="exactly one token"):  # a multi-token target goes to the sentence path,
        tiny_heat.attribute(TEXT, target="cat", foil="cat dog")  # a foil must be one token
    with pytest.raises(ValueError, match="maximum positions"):
        tiny_heat.attribute(torch.randint(4, TINY_VOCAB, (200,)))
    with pytest.raises(ValueError, match="token ids in"):
        tiny_heat.attribute([1, 2, 10**6])
    with pytest.raises(ValueError, match="left padding"):
        tiny_heat.attribute_batch(torch.ones(1, 4, dtype=torch.long), torch.tensor([[1, 1, 1, 0]]))
    with pytest.raises(TypeError, match="HEATConfig"):
        hm.HEAT(make_tiny("llama"), tiny_tok, {"beta": 1})


def test_non_finite_component_is_named(tiny_tok):
    model = make_tiny("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="component"):
        hm.HEAT(model, tiny_tok, hm.HEATConfig()).attribute(TEXT)


def test_outputs(tiny_heat, tmp_path):
    res = tiny_heat.attribute(TEXT)
    top = res.topk(3)
    assert [t[2] for t in top] == sorted(res.scores.tolist(), reverse=True)[:3]
    page = res.to_html()
    assert "<html>" in page and "cat" in page and "Top tokens" in page
    res.save_png(str(tmp_path / "x.png"))
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["default", "mi", "exact"])
def test_real_model_attribution(smollm2, preset):
    model, tok = smollm2
    heat = hm.HEAT(model, tok, hm.HEATConfig.preset(preset))
    res = heat.attribute("The capital of France is")
    assert res.target.strip() == "Paris"
    assert (res.curvature is None) == (preset == "mi")  # M·I computes no S; the default the Fisher S
    for name in ("scores", "transition", "curvature", "information"):
        value = getattr(res, name)
        if value is None:
            continue
        assert torch.isfinite(value).all() and (value >= 0).all(), name
    assert abs(float(res.transition.sum()) - 1) < 1e-5
    assert " France" in [t for _, t, _ in res.topk(3)] or " capital" in [t for _, t, _ in res.topk(3)]


@pytest.mark.parametrize("window", [None, 6])
def test_rollout_layers_out_of_range_refused_not_wrapped(tiny_tok, window):
    """[7] on a 2-layer model is refused (not taken modulo 2, which would be [1]); [-1] is the top layer."""
    model = make_tiny("llama")
    ids = torch.randint(4, TINY_VOCAB, (10,), generator=torch.Generator().manual_seed(0))
    with hm.HEAT(model, tiny_tok, hm.HEATConfig(rollout_layers=[7], window=window)) as heat:
        with pytest.raises(ValueError, match=r"Expected rollout_layers in \[-2, 2\) .* got \[7\]"):
            heat.attribute(ids)
    with hm.HEAT(model, tiny_tok, hm.HEATConfig(rollout_layers=[-1], window=window)) as heat:
        top = heat.attribute(ids).transition
    with hm.HEAT(model, tiny_tok, hm.HEATConfig(rollout_layers=[1], window=window)) as heat:
        torch.testing.assert_close(heat.attribute(ids).transition, top)
