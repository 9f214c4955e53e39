"""Generation rows computed together from the longest prefix (heat_module.attribution.shared_generation) against the
per-row calls (``share=False``: each row the method's own ``attribute`` on its prefix): tiny random models of several
architectures (a sliding window, learned sinks) in fp64, SmolLM2 in fp32 and fp64, generated and given answers, a
chat prompt, list input; which methods share; the cost; and a mutated shared path that the comparison catches."""

from __future__ import annotations

import copy

import pytest
import torch

from heat_module.attribution import shared_generation
from heat_module.attribution.registry import build
from heat_module.config import HEATConfig
from heat_module.heat.cost import information_fe, model_attention_share
from heat_module.heat.information import information_naive
from heat_module.lm.forward import embed, mask_vector
from heat_module.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
PROMPT = [5, 6, 7, 8, 9, 10, 11]
ANSWER = [12, 13, 14, 15, 16]

#: M·I, the HEAT configuration whose rows are shared entirely (M and the exact I; a config with S shares M and I and
#: computes S per row)
MI = HEATConfig.preset("mi")

# (registry name, build options, tolerance in fp64): M comes from an fp32 rollout (for every model), I and the
# occlusion runs in the model's precision
METHODS = [
    ("heat", {"config": HEATConfig.preset("mi", progress=False)}, 1e-6),
    ("heat", {"config": HEATConfig.preset("mi", progress=False, sink="keep",
                                               information={"name": "exact", "mask": "mean"}, normalize="sum")}, 1e-6),
    ("heat", {"config": HEATConfig.preset("mi", progress=False, ablation="information")}, 1e-10),
    ("heat", {"config": HEATConfig(progress=False)}, 1e-6),  # the default: Fisher S per row, M and I shared
    ("heat", {"config": HEATConfig.preset("exact", progress=False)}, 1e-6),  # exact S (HVPs) per row
    ("heat", {"config": HEATConfig.preset("fisher", progress=False, normalize="rank")}, 1e-6),
    ("occlusion", {"measure": "kl"}, 1e-6),
    ("occlusion", {"measure": "prob", "replacement": "mean"}, 1e-6),
    ("gated", {"method": "occlusion"}, 1e-6),
    ("gated", {"method": "input_x_gradient"}, 1e-6),
]
METHOD_IDS = ["heat", "heat-keep-mean-sum", "heat-I-only", "heat-default", "heat-exact", "heat-fisher-rank",
              "occlusion-kl", "occlusion-prob-mean", "gated-occlusion",
              "gated-ixg"]


@pytest.fixture(scope="module", params=["llama", "gpt2", "gemma3_sliding", "gpt_oss"])
def tiny64(request):
    """fp64 tiny random models: Llama, GPT-2, Gemma 3 with sliding-window layers, GPT-OSS (learned sinks)."""
    return request.param, tiny_model(request.param, seed=0).double()


def max_rel_diff(a, b, n: int) -> float:
    """The largest over rows t of max|a_t − b_t| / max|b_t| over the row's n + t columns."""
    out = 0.0
    for t in range(b.T):
        x, y = a.matrix[t, : n + t].double(), b.matrix[t, : n + t].double()
        out = max(out, float((x - y).abs().max() / y.abs().max().clamp_min(1e-30)))
    return out


def assert_shared_equals_rows(method, tol: float, **inputs):
    shared = method.attribute_generation(**inputs)
    assert shared.extra["shared"] is True
    given = {k: v for k, v in inputs.items() if k != "max_new_tokens"}
    single = method.attribute_generation(**{**given, "continuation": shared.generated_ids}, share=False)
    assert single.extra["shared"] is False
    assert torch.equal(shared.generated_ids, single.generated_ids)
    n = shared.n_prompt
    assert max_rel_diff(shared, single, n) <= tol
    for t in range(shared.T):  # the causal triangle stays empty; row t's result is the per-row call's shape
        assert torch.isnan(shared.matrix[t, n + t:]).all()
        assert shared.rows[t].target_id == single.rows[t].target_id
        assert shared.rows[t].tokens == single.rows[t].tokens
        a, b = shared.rows[t].curvature, single.rows[t].curvature  # S per row: the per-row call's own S
        assert (a is None) == (b is None)
        if b is not None:
            assert float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) <= 1e-10
            assert "curvature_cost" in shared.rows[t].cost.details
    return shared, single


# ------------------------------------------------------------------------------------------ tiny models, fp64
@pytest.mark.parametrize("name,options,tol", METHODS, ids=METHOD_IDS)
def test_shared_rows_equal_per_row_calls_on_tiny_models(tiny64, name, options, tol):
    arch, model = tiny64
    method = build(name, model, None, **options)
    assert_shared_equals_rows(method, tol, prompt=PROMPT, continuation=ANSWER)


def test_shared_rows_of_a_generated_answer(tiny64):
    arch, model = tiny64
    method = build("heat", model, None, config=MI)
    shared, _ = assert_shared_equals_rows(method, 1e-6, prompt=PROMPT, max_new_tokens=4)
    assert shared.extra["generated"] is True


def test_shared_components_equal_per_row_components(tiny64):
    """M to the fp32 rollout's round-off, I (computed in fp64) to 1e-10, row by row."""
    arch, model = tiny64
    method = build("heat", model, None, config=MI)
    shared, single = assert_shared_equals_rows(method, 1e-6, prompt=PROMPT, continuation=ANSWER)
    for a, b in zip(shared.rows, single.rows):
        assert a.information.dtype == b.information.dtype == torch.float64
        assert float((a.information - b.information).abs().max() / b.information.abs().max()) <= 1e-10
        assert float((a.transition - b.transition).abs().max()) <= 1e-6
        assert float(a.transition.sum()) == pytest.approx(1.0, abs=1e-6)


def test_shared_information_equals_the_models_own_masked_forwards(tiny64):
    """I of every shared row against one full forward of the model per masked token of the row's own prefix
    (:func:`information_naive`: no capture, no prefix cache). The occlusion rows above are compared with the
    occlusion baseline, which is such a literal forward per masked copy too."""
    arch, model = tiny64
    method = build("heat", model, None, config=MI)
    shared = method.attribute_generation(PROMPT, continuation=ANSWER)
    full = torch.tensor(PROMPT + ANSWER)
    for t, row in enumerate(shared.rows):
        x = embed(model, full[None, : len(PROMPT) + t])
        ref = information_naive(model, x, None, mask_vector(model, "zero"))
        assert float((row.information - ref).abs().max() / ref.abs().max()) <= 1e-10


def test_shared_list_input_equals_one_by_one(tiny64):
    arch, model = tiny64
    method = build("heat", model, None, config=MI)
    prompts, answers = [PROMPT, [20, 21, 22]], [ANSWER, [23, 24, 25, 26]]
    many = method.attribute_generation(prompts, continuation=answers, batch_size=2)
    for prompt, answer, got in zip(prompts, answers, many):
        one = method.attribute_generation(prompt, continuation=answer, share=False)
        assert got.extra["shared"] is True
        assert max_rel_diff(got, one, len(prompt)) <= 1e-6


# ------------------------------------------------------------------------------------------ which methods share
@pytest.mark.parametrize("name,options,shared", [
    ("heat", {"config": HEATConfig.preset("mi")}, True),  # M·I: M and the exact I
    ("heat", {}, True),  # the default HEATConfig(): M and the exact I shared, the Fisher S per row
    ("heat", {"config": HEATConfig.preset("exact")}, True),  # M and I shared, S's Hessian-vector products per row
    ("heat", {"config": HEATConfig.preset("fast")}, False),  # Fisher S and I: one backward per target
    ("heat", {"config": HEATConfig.preset("mi", alpha=0.5)}, False),  # the first-order term: a gradient per target
    ("heat", {"config": HEATConfig.preset("mi", window=4)}, False),  # HEAT-WIN
    ("occlusion", {}, True),
    ("gated", {"method": "attnlrp"}, True),  # the gate is shared, AttnLRP's rows are per row
    ("attnlrp", {}, False),
    ("input_x_gradient", {}, False),
])
def test_the_shared_path_is_chosen_automatically_where_exact(name, options, shared):
    model = tiny_model("llama", seed=0).double()
    method = build(name, model, None, **options)
    gen = method.attribute_generation(PROMPT, continuation=ANSWER[:3])
    assert gen.extra["shared"] is shared
    assert (shared_generation.row_builder(method) is not None) is shared
    if not shared:
        ref = method.attribute(PROMPT, ANSWER[0])
        assert torch.equal(gen.matrix[0, : len(PROMPT)], ref.scores.to(gen.matrix.dtype))


def test_a_subclass_keeps_the_per_row_path():
    """A subclass may change what a row computes: only the exact classes share."""
    from heat_module.heat.estimator import HEAT

    class Mine(HEAT):
        pass

    method = Mine(tiny_model("llama", seed=0).double(), None)
    assert shared_generation.row_builder(method) is None
    assert method.attribute_generation(PROMPT, continuation=ANSWER[:2]).extra["shared"] is False


def test_a_contrast_keeps_the_per_row_path():
    method = build("heat", tiny_model("llama", seed=0).double(), tiny_tokenizer(), config=MI)
    gen = method.attribute_generation("the cat sat on", continuation="the mat", foil="dog")
    assert gen.extra["shared"] is False


# ------------------------------------------------------------------------------------------ cost
def test_shared_cost_is_one_captured_forward_and_n_masked_runs():
    model = tiny_model("llama", seed=0).double()
    method = build("heat", model, None, config=MI)
    shared = method.attribute_generation(PROMPT, continuation=ANSWER)
    single = method.attribute_generation(PROMPT, continuation=ANSWER, share=False)
    n, T = len(PROMPT), len(ANSWER)
    N = n + T - 1
    assert shared.cost.forward_passes == 1 + N
    assert shared.cost.forward_equivalents == pytest.approx(
        1 + information_fe(N, method.config.information.batch_size, True, model_attention_share(model, N)))
    assert "longest prefix (11 tokens)" in shared.cost.details["shared_cost"]
    assert sum(r.cost.forward_passes for r in shared.rows) == 1 + N  # the rows sum to the whole
    assert single.cost.forward_passes == sum(1 + n + t for t in range(T))
    occ = build("occlusion", model, None, batch_size=4).attribute_generation(PROMPT, continuation=ANSWER)
    assert occ.cost.forward_passes == 1 + N
    share = model_attention_share(model, N)
    assert occ.cost.forward_equivalents == pytest.approx(1 + information_fe(N, 4, True, share))


@pytest.mark.parametrize("config", [HEATConfig(progress=False), HEATConfig.preset("exact", progress=False)],
                         ids=["default", "exact"])
def test_shared_cost_with_s_is_the_shared_m_and_i_plus_each_rows_own_s(config):
    """Row t: 1/T of the shared M and I (as for M·I) plus its own captured forward and the S estimator's cost, which
    is what the per-row call spends on S."""
    model = tiny_model("llama", seed=0).double()
    shared = build("heat", model, None, config=config).attribute_generation(PROMPT, continuation=ANSWER)
    single = build("heat", model, None, config=config).attribute_generation(PROMPT, continuation=ANSWER, share=False)
    mi = build("heat", model, None, config=MI).attribute_generation(PROMPT, continuation=ANSWER)
    n = len(PROMPT)
    for t, (a, b, m) in enumerate(zip(shared.rows, single.rows, mi.rows)):
        s_passes = b.cost.forward_passes - (1 + n + t)  # the per-row call: captured forward, n + t masked runs, S
        assert a.cost.forward_passes == m.cost.forward_passes + 1 + s_passes
        assert a.cost.hvps == b.cost.hvps
        assert a.cost.gradients == b.cost.gradients


# ------------------------------------------------------------------------------------------ the test can fail
def test_a_mutated_shared_path_is_caught(monkeypatch):
    """Every row's rollout started at the last position (as if the longest prefix were every row's context) or the
    masked runs read one position too late: the comparison with the per-row calls fails."""
    model = tiny_model("llama", seed=0).double()
    method = build("heat", model, None, config=MI)
    single = method.attribute_generation(PROMPT, continuation=ANSWER, share=False)
    n = len(PROMPT)
    assert max_rel_diff(method.attribute_generation(PROMPT, continuation=ANSWER), single, n) <= 1e-6

    with monkeypatch.context() as m:
        m.setattr(shared_generation, "row_positions", lambda n, T, device=None: torch.full((T,), n + T - 2,
                                                                                         device=device))
        assert max_rel_diff(method.attribute_generation(PROMPT, continuation=ANSWER), single, n) > 1e-3

    original = shared_generation.masked_runs

    def late(*args, **kwargs):  # each run's logits shifted by one position
        for run, logits, start in original(*args, **kwargs):
            yield run, torch.roll(logits, 1, dims=1), start

    with monkeypatch.context() as m:
        m.setattr(shared_generation, "masked_runs", late)
        assert max_rel_diff(method.attribute_generation(PROMPT, continuation=ANSWER), single, n) > 1e-3


# ------------------------------------------------------------------------------------------ SmolLM2
SMOL = [("heat", {"config": HEATConfig.preset("mi", progress=False)}), ("heat", {"config": HEATConfig(progress=False)}),
        ("occlusion", {"measure": "kl"}), ("gated", {"method": "attnlrp"})]


@pytest.mark.slow
@pytest.mark.parametrize("name,options", SMOL, ids=["heat", "heat-default", "occlusion-kl", "gated-attnlrp"])
@pytest.mark.parametrize("inputs", [{"prompt": "The capital of France is", "max_new_tokens": 4},
                                    {"prompt": "The capital of France is", "continuation": " a city"},
                                    {"messages": MESSAGES, "continuation": " Paris."}],
                         ids=["generated", "given", "chat"])
def test_shared_rows_equal_per_row_calls_on_smollm2(smollm2, name, options, inputs):
    """fp32: the rows agree to 1e-5, the round-off floor of the model's own forward (the longest prefix's logits
    differ from a prefix's own forward by ~1e-6 relative, and HEAT's per-row call itself moves by up to ~3e-6 when
    only its masked-run batch size changes)."""
    model, tok = smollm2
    assert_shared_equals_rows(build(name, model, tok, **options), 1e-5, **inputs)


@pytest.mark.slow
def test_shared_rows_equal_per_row_calls_on_smollm2_fp64(smollm2):
    """fp64 SmolLM2: scores to 1e-6 (M is an fp32 rollout), I to 1e-10."""
    model, tok = smollm2
    model64 = copy.deepcopy(model).double()
    method = build("heat", model64, tok, config=HEATConfig.preset("mi", progress=False))
    shared, single = assert_shared_equals_rows(method, 1e-6, messages=MESSAGES, continuation=" Paris.")
    for a, b in zip(shared.rows, single.rows):
        assert float((a.information - b.information).abs().max() / b.information.abs().max()) <= 1e-10
