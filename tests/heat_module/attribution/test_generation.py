"""Generation attribution: every row of the T x (n + T) matrix is the method's single-step ``attribute`` call, step
scores against the model's own forward, batched rows and list input against one-by-one calls, chat prompts against
the tokenizer's own chat template, and sentence-level HEAT read from the rows."""

from __future__ import annotations

import copy

import pytest
import torch

from heat_module.attribution.registry import build
from heat_module.config import HEATConfig
from heat_module.heat.estimator import HEAT
from heat_module.testing import TINY_VOCAB, tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "The capital of France is"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


@pytest.fixture(scope="module")
def tiny():
    """A fp64 tiny Llama and the tiny word-level tokenizer."""
    return tiny_model("llama", seed=0).double(), tiny_tokenizer()


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def assert_rows_are_single_steps(method, gen, tol: float) -> None:
    """Row t == method.attribute(prompt + y_<t, target=y_t) over its n + t columns; NaN beyond."""
    n = gen.n_prompt
    full = torch.cat([gen.prompt_ids, gen.generated_ids])
    assert gen.matrix.shape == (gen.T, n + gen.T)
    for t in range(gen.T):
        ref = method.attribute(full[: n + t], int(full[n + t]))
        assert ref.target_id == int(gen.generated_ids[t])
        assert rel_diff(gen.matrix[t, : n + t], ref.scores) <= tol, t
        assert torch.isnan(gen.matrix[t, n + t:]).all()


# ---------------------------------------------------------------------------------------------- SmolLM2 proofs
SMOL_METHODS = [("heat", None), ("heat", HEATConfig.preset("exact")), ("attnlrp", None)]


@pytest.mark.slow
@pytest.mark.parametrize("name,config", SMOL_METHODS, ids=["heat", "heat-exact", "attnlrp"])
@pytest.mark.parametrize("given", [False, True], ids=["generated", "given"])
def test_rows_equal_single_step_calls_on_smollm2(smollm2, name, config, given):
    model, tok = smollm2
    method = build(name, model, tok, config=config)
    if given:
        gen = method.attribute_generation(PROMPT, continuation=" a city")
        assert gen.generated_ids.tolist() == tok(" a city", add_special_tokens=False)["input_ids"]
    else:
        gen = method.attribute_generation(PROMPT, max_new_tokens=3)
        expected = model.generate(torch.tensor([tok(PROMPT)["input_ids"]]), do_sample=False, max_new_tokens=3)
        assert gen.generated_ids.tolist() == expected[0, gen.n_prompt:].tolist()
    assert_rows_are_single_steps(method, gen, 1e-6)
    # the rows batched through attribute_batch (left-padded prefixes) agree up to the padded forward's round-off
    batched = method.attribute_generation(PROMPT, continuation=gen.generated_ids, batch_size=gen.T)
    assert rel_diff(batched.matrix.nan_to_num(0), gen.matrix.nan_to_num(0)) <= 1e-5


@pytest.mark.slow
def test_chat_prompt_is_the_tokenizers_own_template(smollm2):
    model, tok = smollm2
    method = build("attnlrp", model, tok)
    gen = method.attribute_generation(messages=MESSAGES, continuation="Paris.")
    expected = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert gen.prompt_ids.tolist() == list(expected)
    tokens = gen.tokens
    # the messages' contents are not special; the template's markers and role headers are
    content = {i for i, s in enumerate(gen.special.tolist()) if not s}
    assert "".join(tokens[i] for i in sorted(content) if i < gen.n_prompt) == "Be brief.Capital of France?"
    assert gen.special[[i for i, t in enumerate(tokens) if t == "<|im_start|>"]].all()
    labels = [label for _, _, label in gen.spans]
    assert labels == ["system", "user", "generation prompt", "assistant"]
    assert gen.spans[-1] == (gen.n_prompt, gen.n_prompt + gen.T, "assistant")
    # rows are still the single-step calls on the rendered ids
    assert_rows_are_single_steps(method, gen, 1e-6)
    # special tokens are left out of normalisation by default, kept on request
    norm = gen.normalized()
    assert (norm[:, gen.special].nan_to_num(0) == 0).all()
    assert torch.allclose(torch.nansum(norm, 1), torch.ones(gen.T, dtype=norm.dtype))
    kept = method.attribute_generation(messages=MESSAGES, continuation="Paris.", keep_special=True).normalized()
    assert (kept[:, gen.special].nan_to_num(0) > 0).any()
    # turns and words work on the whole matrix and on its rows
    turns = gen.aggregate("turns")
    assert turns.tokens[:3] == ["system", "user", "generation prompt"]
    assert torch.allclose(torch.nansum(turns.matrix, 1), torch.nansum(gen.matrix, 1), rtol=1e-5)
    row = turns.row(1)
    assert torch.allclose(row.scores.sum(), gen.row(1).scores.sum(), rtol=1e-5)
    words = gen.aggregate("words")
    assert words.n_prompt < gen.n_prompt and words.T == gen.T
    assert torch.allclose(torch.nansum(words.matrix, 1), torch.nansum(gen.matrix, 1), rtol=1e-5)


@pytest.mark.slow
def test_a_rendered_chat_string_gets_one_bos(smollm2):
    """A tokenizer that adds a BOS (<|im_start|> here) must not add it again to a string rendered by its template."""
    from tokenizers import processors

    model, tok = smollm2
    tok = copy.deepcopy(tok)
    bos = tok.convert_tokens_to_ids("<|im_start|>")
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<|im_start|> $A",
                                                                  special_tokens=[("<|im_start|>", bos)])
    assert tok("Hello")["input_ids"][0] == bos  # the tokenizer does add a BOS to plain text
    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    expected = list(tok(text, add_special_tokens=False)["input_ids"])
    method = build("attnlrp", model, tok)
    ids = method.encode(text).tolist()
    assert ids == expected
    assert ids[:2] != [bos, bos]
    assert method.encode("Hello").tolist()[0] == bos


# ---------------------------------------------------------------------------------------------- tiny-model checks
def test_step_scores_match_the_models_own_forward(tiny):
    model, tok = tiny
    method = build("gradient_norm", model, tok)
    gen = method.attribute_generation([5, 6, 7, 8, 9], max_new_tokens=4)
    full = torch.cat([gen.prompt_ids, gen.generated_ids])
    for t in range(gen.T):
        with torch.no_grad():
            logits = model(full[None, : gen.n_prompt + t]).logits[0, -1]
        p = torch.softmax(logits, -1)
        y = int(full[gen.n_prompt + t])
        assert gen.step_scores["probability"][t] == pytest.approx(float(p[y]), rel=1e-6)
        assert int(gen.step_scores["rank"][t]) == int((p > p[y]).sum())
        assert gen.step_scores["entropy"][t] == pytest.approx(float(-(p * p.log()).sum()), rel=1e-6)
    assert (gen.step_scores["rank"] == 0).all()  # greedy


@pytest.mark.parametrize("name", ["heat", "occlusion", "attnlrp", "gated:attnlrp"])
def test_batched_rows_equal_single_steps(tiny, name):
    model, tok = tiny
    method = build(name, model, tok)
    # share=False: the rows through attribute_batch even where they could be shared (test_shared_generation.py)
    gen = method.attribute_generation([5, 6, 7, 8], continuation=[9, 10, 11, 12, 13], batch_size=3, share=False)
    assert gen.T == 5 and gen.extra["shared"] is False
    assert_rows_are_single_steps(method, gen, 1e-6)  # HEAT and M · scores are float32 scores


def test_generation_stops_after_eos(tiny):
    model, tok = tiny
    method = build("gradient_norm", model, tok)
    free = method.attribute_generation([5, 6, 7], max_new_tokens=3)
    assert free.T == 3
    before = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = int(free.generated_ids[1])  # pretend the second greedy token is EOS
    try:
        gen = method.attribute_generation([5, 6, 7], max_new_tokens=3)
    finally:
        model.generation_config.eos_token_id = before
    assert gen.generated_ids.tolist() == free.generated_ids[:2].tolist()


def test_list_generation_equals_one_by_one(tiny):
    model, tok = tiny
    method = HEAT(model, tok)
    prompts = ["the cat sat on", "where is paris"]
    many = method.attribute_generation(prompts, continuation=["the mat", "in france"], batch_size=2)
    for prompt, cont, got in zip(prompts, ["the mat", "in france"], many):
        one = method.attribute_generation(prompt, continuation=cont)
        assert torch.equal(got.prompt_ids, one.prompt_ids) and torch.equal(got.generated_ids, one.generated_ids)
        assert rel_diff(got.matrix.nan_to_num(0), one.matrix.nan_to_num(0)) <= 1e-6


@pytest.mark.parametrize("batch_size", [1, 2])
def test_attribute_list_equals_one_by_one(tiny, batch_size):
    model, tok = tiny
    texts = ["the cat sat on the", "where is", "paris is the capital of"]
    targets = ["mat", None, "france"]
    for method in (HEAT(model, tok), build("occlusion", model, tok)):
        results = method.attribute(texts, targets=targets, batch_size=batch_size)
        assert len(results) == 3
        for text, target, got in zip(texts, targets, results):
            one = method.attribute(text, target)
            assert got.tokens == one.tokens and got.target_id == one.target_id
            assert rel_diff(got.scores, one.scores) <= 1e-6


def test_attribute_list_with_multi_token_targets(tiny):
    model, tok = tiny
    method = HEAT(model, tok)
    texts = ["the cat sat on", "where is"]
    targets = ["the mat", "paris"]
    results = method.attribute(texts, targets=targets, batch_size=2)
    sentence = method.attribute(texts[0], targets[0])
    assert results[0].extra["targets"] == sentence.extra["targets"]
    assert torch.equal(results[0].scores, sentence.scores)
    assert torch.equal(results[1].scores, method.attribute(texts[1], targets[1]).scores)
    with pytest.raises(ValueError, match="one target per item"):
        method.attribute(texts, targets=["mat"])


def test_sentence_level_heat_reads_the_generation_rows(tiny):
    model, tok = tiny
    method = HEAT(model, tok, HEATConfig.preset("mi"))  # M·I: its rows are shared
    prompt = torch.tensor([5, 6, 7, 8, 9])
    gen = method.attribute_generation(prompt, max_new_tokens=3)
    for how in ("mean", "max", "sum"):
        sent = method.attribute_sentence(prompt, max_new_tokens=3, aggregation=how)
        assert sent.extra["targets"] == gen.generated_ids.tolist()
        assert torch.equal(torch.tensor(sent.extra["per_target"]["scores"], dtype=gen.matrix.dtype), gen.matrix[:, :5])
        assert torch.equal(sent.scores, gen.sentence(how).scores)
        # eq. 23 by hand from the single-step calls (the rows are shared: equal up to the fp32 rollout's round-off)
        rows = [method.attribute(torch.cat([prompt, gen.generated_ids[:t]]), int(gen.generated_ids[t])).scores[:5]
                for t in range(3)]
        stacked = torch.stack(rows)
        ref = {"mean": stacked.mean(0), "max": stacked.max(0).values, "sum": stacked.sum(0)}[how]
        assert float((sent.scores - ref).abs().max() / ref.abs().max()) <= 1e-6
        assert sent.method == "heat-sentence"


def test_input_errors(tiny):
    model, tok = tiny
    method = build("gradient_norm", model, tok)
    with pytest.raises(ValueError, match="exactly one of prompt or messages"):
        method.attribute_generation()
    with pytest.raises(ValueError, match="max_new_tokens"):
        method.attribute_generation([5, 6])
    with pytest.raises(ValueError, match="chat template"):
        method.attribute_generation(messages=MESSAGES, max_new_tokens=2)
    with pytest.raises(ValueError, match="target id"):
        method.attribute_generation([5, 6], continuation=[TINY_VOCAB + 3])


TINY_TEMPLATE = ("{% for m in messages %}<bos> {{ m['role'] }} {{ m['content'] }} <eos> {% endfor %}"
                 "{% if add_generation_prompt %}<bos> answer {% endif %}")


def test_list_of_conversations_equals_one_by_one(tiny):
    model, tok = tiny
    tok = copy.deepcopy(tok)
    tok.chat_template = TINY_TEMPLATE
    method = build("occlusion", model, tok)
    chats = [[{"role": "question", "content": "where is paris"}],
             [{"role": "question", "content": "the cat"}, {"role": "answer", "content": "sat on the door"}]]
    many = method.attribute_generation(messages=chats, max_new_tokens=2, batch_size=2)
    for chat, got in zip(chats, many):
        one = method.attribute_generation(messages=chat, max_new_tokens=2)
        expected = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
        assert got.prompt_ids.tolist() == list(expected["input_ids"] if hasattr(expected, "keys") else expected)
        assert got.generated_ids.tolist() == one.generated_ids.tolist() and got.spans == one.spans
        assert rel_diff(got.matrix.nan_to_num(0), one.matrix.nan_to_num(0)) <= 1e-6
    second = many[1]
    assert [label for _, _, label in second.spans] == ["question", "answer", "generation prompt", "assistant"]
    words = [second.tokens[i] for i in range(second.n_prompt) if not second.special[i]]
    assert words == ["the", "cat", "sat", "on", "the", "door"]


def test_contrastive_rows_name_their_foil(tiny):
    model, tok = tiny
    method = HEAT(model, tok, HEATConfig.preset("mi"))  # M·I: the exact I of a contrast
    gen = method.attribute_generation([5, 6, 7, 8], continuation=[9, 10], foil=11)
    for t in range(2):
        ref = method.attribute(torch.cat([gen.prompt_ids, gen.generated_ids[:t]]), int(gen.generated_ids[t]),
                               foil=11)
        assert torch.equal(gen.matrix[t, : 4 + t], ref.scores.to(gen.matrix.dtype))
    assert gen.foil == method.token_strings(torch.tensor([11]))[0]
