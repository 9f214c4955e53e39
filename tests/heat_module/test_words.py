"""Word / sentence / span aggregation (heat_module/words.py, AttributionResult.aggregate) on a real byte-level BPE:
word scores equal the sums of their pieces and there are as many words as a whitespace split gives."""

import re

import pytest
import torch

import heat_module as hm
from heat_module.lm.capture import install
from heat_module.testing import tiny_model

TEXT = "The unbelievable cartographers mapped extraordinary territories. Nobody followed them!"
CORPUS = ["the cat sat on the mat", "a map of the territory", "they followed the river", "nobody saw them",
          "maps and more maps", "the believer mapped it"] * 5


@pytest.fixture(scope="module")
def bpe():
    """A small byte-level BPE trained here (offline): long words split into several pieces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<pad>"])
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


def random_result(tokenizer, text=TEXT, seed=0):
    ids = tokenizer(text)["input_ids"]
    gen = torch.Generator().manual_seed(seed)
    return hm.AttributionResult(
        tokens=[tokenizer.decode([i]) for i in ids], token_ids=torch.tensor(ids), target="x", target_id=0,
        scores=torch.rand(len(ids), generator=gen), transition=torch.rand(len(ids), generator=gen),
    ), ids


def expected_words(tokenizer, text, ids):
    """Independently: each whitespace word's token indices, from the tokenizer's offsets."""
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    words = [m.span() for m in re.finditer(r"\S+", text)]
    groups = [[] for _ in words]
    for i, (a, b) in enumerate(offsets):
        first = a + len(text[a:b]) - len(text[a:b].lstrip())
        groups[next(k for k, (s, e) in enumerate(words) if s <= first < e)].append(i)
    return groups


def test_word_scores_are_sums_of_pieces(bpe):
    res, ids = random_result(bpe)
    assert len(ids) > len(TEXT.split()) + 3  # multi-piece words are present
    words = res.aggregate("words", tokenizer=bpe)
    assert len(words) == len(TEXT.split())
    assert [w.strip() for w in words.tokens] == TEXT.split()
    groups = expected_words(bpe, TEXT, ids)
    assert max(len(g) for g in groups) >= 3
    for k, g in enumerate(groups):
        torch.testing.assert_close(words.scores[k], res.scores[g].sum())
        torch.testing.assert_close(words.transition[k], res.transition[g].sum())
    assert words.extra["level"] == "words" and words.extra["reduce"] == "sum" and words.extra["groups"] == groups
    # without a tokenizer the decoded token strings (which concatenate to the text) give the same words
    assert res.aggregate("words").extra["groups"] == groups


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_word_reduce_max_mean(bpe, reduce):
    res, ids = random_result(bpe, seed=1)
    words = res.aggregate("words", reduce=reduce, tokenizer=bpe)
    for k, g in enumerate(expected_words(bpe, TEXT, ids)):
        want = res.scores[g].max() if reduce == "max" else res.scores[g].mean()
        torch.testing.assert_close(words.scores[k], want)


def test_sentences_and_spans(bpe):
    res, ids = random_result(bpe)
    sents = res.aggregate("sentences", tokenizer=bpe)
    assert len(sents) == 2 and sents.tokens[0].endswith("territories.") and sents.tokens[1].strip().endswith("!")
    torch.testing.assert_close(sents.scores.sum(), res.scores.sum())
    spans = res.aggregate([(0, 3), (5, 7)], reduce="max")
    assert len(spans) == len(ids) - 2 - 1
    torch.testing.assert_close(spans.scores[0], res.scores[:3].max())
    torch.testing.assert_close(spans.scores[3], res.scores[5:7].max())
    with pytest.raises(ValueError, match="Expected level"):
        res.aggregate("paragraphs")
    with pytest.raises(ValueError, match="Expected reduce"):
        res.aggregate("words", reduce="median")
    with pytest.raises(ValueError, match="disjoint"):
        res.aggregate([(0, 3), (2, 4)])


@pytest.mark.usefixtures("one_thread")
def test_heat_result_to_words(bpe):
    model = install(tiny_model("llama", vocab_size=len(bpe)).double())
    res = hm.HEAT(model, bpe, hm.HEATConfig(beta=0.0, progress=False)).attribute(TEXT)
    groups = expected_words(bpe, TEXT, res.token_ids.tolist())
    for words in (res.aggregate("words"), res.aggregate("words", tokenizer=bpe)):
        assert len(words) == len(TEXT.split()) and words.extra["groups"] == groups
        for k, g in enumerate(groups):
            torch.testing.assert_close(words.scores[k], res.scores[g].sum())
            torch.testing.assert_close(words.information[k], res.information[g].sum())


@pytest.mark.parametrize("tokens, groups", [
    (["x y", " z"], [[0], [1]]),  # a token with inner whitespace: "x" and "y" are one group
    (["x", " y z", "w"], [[0], [1, 2]]),  # " y z" joins "y" with "zw" (which "w" ends)
    (["a", " ", "b c", "\n"], [[0], [1, 2, 3]]),  # whitespace-only tokens join the next group, the last at the end
])
def test_words_with_tokens_that_span_whitespace(tokens, groups):
    result = hm.AttributionResult(tokens=tokens, token_ids=torch.arange(len(tokens)), target="t", target_id=0,
                                  scores=torch.arange(1.0, len(tokens) + 1))
    words = result.aggregate("words")
    assert words.extra["groups"] == groups
    assert "".join(words.tokens) == "".join(tokens)
    assert torch.equal(words.scores, torch.tensor([float(sum(i + 1 for i in g)) for g in groups]))
