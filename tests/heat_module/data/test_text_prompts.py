import pytest

from heat_module.data import DataError, TextPromptsDataModule


def _examples(dm):
    dm.setup("predict")
    return dm.examples


def test_list_of_prompts_and_targets(tok):
    dm = TextPromptsDataModule(["the cat sat on the", "a dog"], targets=[" road", None], tokenizer=tok)
    ex = _examples(dm)
    assert [e.id for e in ex] == ["0", "1"]
    assert ex[0].input_ids == tok("the cat sat on the")["input_ids"]
    assert ex[0].target_id == tok.convert_tokens_to_ids("road") and ex[1].target_id == -1


def test_text_file_one_prompt_per_line_with_limit(tok, fixtures):
    lines = (fixtures / "prompts.txt").read_text().splitlines()
    ex = _examples(TextPromptsDataModule(fixtures / "prompts.txt", tokenizer=tok, limit=3))
    assert len(ex) == 3 and [e.metadata["prompt"] for e in ex] == lines[:3]
    assert ex[2].metadata["source"].endswith("prompts.txt:3")


def test_jsonl_file_with_ids_and_targets(tok, fixtures):
    ex = _examples(TextPromptsDataModule(fixtures / "prompts.jsonl", tokenizer=tok))
    assert [e.id for e in ex] == ["cat", "pizza", "paris"]  # the blank line is ignored
    assert [e.target_id for e in ex] == [tok.convert_tokens_to_ids("road"), -1, tok.convert_tokens_to_ids("paris")]


def test_batches_are_left_padded(tok, fixtures):
    dm = TextPromptsDataModule(fixtures / "prompts.txt", tokenizer=tok, batch_size=4)
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["input_ids"].shape[0] == 4
    assert (batch["attention_mask"][:, -1] == 1).all() and (batch["attention_mask"][:, 0] == 0).any()


def test_empty_prompt_names_file_and_line(tok, tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("the cat sat\n\na dog ran\n")
    with pytest.raises(DataError, match=r"p\.txt:2: Expected a non-empty prompt"):
        _examples(TextPromptsDataModule(path, tokenizer=tok))
    with pytest.raises(DataError, match=r"prompts\[1\]: Expected a non-empty prompt"):
        _examples(TextPromptsDataModule(["a", "  "], tokenizer=tok))


def test_empty_prompt_skipped_with_skip_bad_examples(tok, tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("the cat sat\n\na dog ran\n")
    dm = TextPromptsDataModule(path, tokenizer=tok, skip_bad_examples=True)
    with pytest.warns(UserWarning, match="p.txt:2"):
        ex = _examples(dm)
    assert [e.id for e in ex] == ["0", "2"] and dm.skipped[0]["where"].endswith("p.txt:2")


def test_multi_token_target(tok):
    with pytest.raises(DataError, match=r"Expected the target ' red car' to be exactly one token, got 2 tokens"):
        _examples(TextPromptsDataModule(["the cat sat on a"], targets=[" red car"], tokenizer=tok))
    ex = _examples(TextPromptsDataModule(["the cat sat on a"], targets=[" red car"], tokenizer=tok,
                                         multi_token_target="first"))
    assert ex[0].target_id == tok.convert_tokens_to_ids("red")


def test_malformed_jsonl_line(tok, tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "the cat"}\n{"prompt": "a dog"\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: Expected a JSON object, got invalid JSON"):
        _examples(TextPromptsDataModule(path, tokenizer=tok))


def test_missing_file_and_bad_arguments(tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        _examples(TextPromptsDataModule(tmp_path / "nope.txt", tokenizer=tok))
    with pytest.raises(ValueError, match="Expected 1 targets"):
        _examples(TextPromptsDataModule(["a"], targets=["b", "c"], tokenizer=tok))
    with pytest.raises(ValueError, match="Expected batch_size to be an integer >= 1, got 0"):
        TextPromptsDataModule(["a"], tokenizer=tok, batch_size=0)
