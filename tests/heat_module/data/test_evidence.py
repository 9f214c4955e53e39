"""The generated evidence benchmark: items of a few seeds checked by hand (texts, answers and spans written out
here), structural checks over hundreds of items, token positions through a real fast tokenizer's offsets, and the
filter that keeps what a model answers right."""

from __future__ import annotations

import pytest
import torch

from heat_module.data.evidence import (
    KINDS,
    WOMEN,
    EvidenceItem,
    evidence_tokens,
    generate_evidence_items,
    keep_answered,
    to_example,
)


def spans(item: EvidenceItem, name: str) -> list[str]:
    return [item.text[a:b] for a, b in getattr(item, name)]


HAND_CHECKED = [  # (seed, index, text, answer, evidence, answer word, query), read and checked by a person
    (0, 0, "Paul's rabbit is called Simba. Emma's rabbit is called Ruby. Rosa's rabbit is called Rocky. Nina's rabbit "
     "is called Coco. Paul's rabbit is called", " Simba", ["Paul's rabbit is called Simba"], ["Simba"],
     ["Paul's rabbit is called"]),
    (0, 1, "Paul lives in Ottawa. Ottawa is in Canada. Berlin is in Germany. Henry lives in Berlin. So Henry lives in "
     "the country of", " Germany", ["Berlin is in Germany", "Henry lives in Berlin"], ["Germany"],
     ["So Henry lives in the country of"]),
    (0, 2, "Nina and Mark went to the library. Nina brought a box. Mark brought a bag. The weather was nice and we "
     "walked along the river for a long time. We bought some bread and cheese for the trip. Later, she opened the",
     " box", ["Nina brought a box"], ["box"], ["Later, she opened the"]),
    (7, 1, "Maria lives in Rome. Vienna is in Austria. Rome is in Italy. Sofia lives in Vienna. So Maria lives in the "
     "country of", " Italy", ["Maria lives in Rome", "Rome is in Italy"], ["Italy"],
     ["So Maria lives in the country of"]),
    (7, 2, "Carl and Sofia went to the market. Carl brought a letter. Sofia brought a laptop. Later, she opened the",
     " laptop", ["Sofia brought a laptop"], ["laptop"], ["Later, she opened the"]),
    (7, 3, "The name of our dog is Rocky. Later that evening the wind became stronger. Then we went home and had "
     "dinner together. We talked about books, films and music. The weather was nice and we walked along the river for "
     "a long time. As I said, the name of our dog is", " Rocky", ["The name of our dog is Rocky"], ["Rocky"],
     ["As I said, the name of our dog is"]),
]


@pytest.mark.parametrize("seed,index,text,answer,evidence,word,query", HAND_CHECKED,
                         ids=[f"seed{c[0]}-{c[1]}" for c in HAND_CHECKED])
def test_items_checked_by_hand(seed, index, text, answer, evidence, word, query):
    item = generate_evidence_items(index + 1, seed=seed)[index]
    assert item.kind == KINDS[index % len(KINDS)]
    assert item.text == text
    assert item.answer == answer
    assert spans(item, "evidence") == evidence
    assert spans(item, "answer_spans") == word
    assert spans(item, "query") == query


def test_hundreds_of_items_are_consistent_and_reproducible():
    items = generate_evidence_items(400, seed=3)
    assert items == generate_evidence_items(400, seed=3)
    assert items[:10] == generate_evidence_items(10, seed=3)
    assert items != generate_evidence_items(400, seed=4)
    assert {i.kind for i in items} == set(KINDS) and len({i.id for i in items}) == 400
    for item in items:
        (q_start, q_end), = item.query
        assert q_end == len(item.text)  # the query ends the prompt; the answer follows it
        for a_start, a_end in item.answer_spans:
            assert item.text[a_start:a_end] == item.answer.strip()
            assert any(s <= a_start and a_end <= e for s, e in item.evidence)
        assert all(e <= q_start for _, e in item.evidence)  # evidence is in the context, never the query
        if item.kind == "coreference":
            referent = spans(item, "evidence")[0].split()[0]
            assert (referent in WOMEN) == (" she " in item.text[q_start:])
        if item.kind == "key_value":  # the query names the owner of the evidence fact
            assert spans(item, "evidence")[0].startswith(item.text[q_start:].split(" is called")[0])


def test_token_positions_follow_the_tokenizer_offsets():
    from heat_module.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    item = generate_evidence_items(3, seed=0)[2]  # "... Nina brought a box. ... Later, she opened the"
    enc = tok(item.text, return_offsets_mapping=True)
    tokens = evidence_tokens(item, tok)
    assert tokens["input_ids"] == enc["input_ids"]
    words = [item.text[a:b] for a, b in enc["offset_mapping"]]
    assert [words[i] for i in tokens["evidence"]] == ["Nina", "brought", "a", "box"]
    assert [words[i] for i in tokens["answer"]] == ["box"]
    assert [words[i] for i in tokens["query"]] == ["Later", ",", "she", "opened", "the"]
    example = to_example(item, tok)
    assert example.gold == tokens["evidence"] and example.target_id == tok.convert_tokens_to_ids("<unk>")
    assert example.metadata["query_tokens"] == tokens["query"]


class AlwaysSays(torch.nn.Module):
    """A stand-in LM whose greedy next token is always ``token_id``."""

    def __init__(self, token_id: int, vocab: int):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab))
        self.bias.data[token_id] = 1.0

    def forward(self, input_ids: torch.Tensor):
        return type("Out", (), {"logits": self.bias.expand(*input_ids.shape, -1)})()


def test_keep_answered_keeps_exactly_the_items_answered_right():
    from heat_module.testing import tiny_tokenizer

    tok = tiny_tokenizer()
    items = generate_evidence_items(8, seed=0, kinds=("coreference",))
    answers = [i.answer.strip() for i in items]
    model = AlwaysSays(tok.convert_tokens_to_ids("book"), len(tok))
    kept = keep_answered(items, model, tok)
    assert [i.id for i in kept] == [i.id for i, a in zip(items, answers) if a == "book"]
    assert kept, "the seed should give at least one 'book' item"


def test_errors():
    with pytest.raises(ValueError, match="Expected kinds"):
        generate_evidence_items(3, kinds=("riddle",))
    with pytest.raises(ValueError, match="Expected evidence spans inside"):
        EvidenceItem("x", "planted", "abc", " d", ((0, 9),), (), ())
