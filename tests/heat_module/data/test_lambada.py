"""The annotated LAMBADA reader: rationale character spans to token positions."""

from __future__ import annotations

from pathlib import Path

import pytest

from heat_module.data.lambada import load_annotated_lambada, rationale_tokens
from heat_module.testing import tiny_tokenizer

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "annotated_lambada.json"


def test_rationale_tokens_by_hand():
    offsets = [(0, 3), (4, 7), (8, 11), (11, 12), (0, 0)]
    assert rationale_tokens(offsets, [[5, 9]]) == [1, 2]  # overlaps "ab|c" and the next word
    assert rationale_tokens(offsets, [[11, 12]]) == [3]
    assert rationale_tokens(offsets, [[3, 4]]) == []  # the space between tokens


def test_fixture_gold_tokens_are_the_marked_words():
    tok = tiny_tokenizer()
    examples = load_annotated_lambada(FIXTURE, tok)
    assert [e.id for e in examples] == ["1", "2", "3"]
    words = [tok.convert_ids_to_tokens([e.input_ids[i] for i in e.gold]) for e in examples]
    assert sorted(words[0]) == ["book", "read"]
    assert sorted(words[1]) == ["dog", "river"] and words[2] == ["hat"]
    assert all(e.target_id == -1 and e.distractor is None for e in examples)


def test_bad_rows_raise(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"text": "the cat"}\n')
    with pytest.raises(ValueError, match="Expected an object with 'text' and 'rationale'"):
        load_annotated_lambada(bad, tiny_tokenizer())
