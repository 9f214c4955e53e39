import pytest

from heat_module.data import DataError, LongRADataModule


def test_fixture_drops_multi_token_targets_and_says_how_many(tok, fixtures):
    dm = LongRADataModule(fixtures / "longra.jsonl", tokenizer=tok)
    with pytest.warns(UserWarning, match="dropped 1 of 4 examples"):
        dm.setup("predict")
    assert dm.num_dropped == 1 and [e.id for e in dm.examples] == ["0", "1", "2"]
    assert [tok.decode([e.target_id]) for e in dm.examples] == ["dog", "paris", "bread"]
    assert dm.examples[1].metadata["category"] == "capital"


def test_distractor_span_maps_to_this_tokenizer(tok, fixtures):
    dm = LongRADataModule(fixtures / "longra.jsonl", tokenizer=tok)
    with pytest.warns(UserWarning):
        dm.setup()
    e = dm.examples[0]
    sentence = "( the sun was warm , but that was before the rain ) ."
    assert [e.input_ids[i] for i in e.distractor] == tok(sentence)["input_ids"]
    assert e.distractor == list(range(14, 28))
    batch = next(iter(dm.predict_dataloader()))
    assert batch["distractor_mask"].any(-1).all() and not batch["has_gold"].any()


def test_malformed_line_names_file_and_line(tok, fixtures):
    with pytest.raises(DataError, match=r"longra_malformed\.jsonl:2: Expected a JSON object, got invalid JSON"):
        LongRADataModule(fixtures / "longra_malformed.jsonl", tokenizer=tok).setup()


def test_missing_fields_and_empty_prompt(tok, tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_text('{"prompt": "the cat", "target_text": " sat"}\n{"prompt": "a dog"}\n')
    with pytest.raises(DataError, match=r"l\.jsonl:2: Expected string fields 'prompt' and 'target_text', got keys"):
        LongRADataModule(path, tokenizer=tok).setup()
    path.write_text('{"prompt": "", "target_text": " sat"}\n')
    with pytest.raises(DataError, match=r"l\.jsonl:1: Expected a non-empty prompt"):
        LongRADataModule(path, tokenizer=tok).setup()


def test_missing_file(tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="Expected an existing data file"):
        LongRADataModule(tmp_path / "missing.jsonl", tokenizer=tok).setup()
