import json

import pytest

from heat_module.data import CuratedDataModule, DataError, build_curated_examples, save_curated_dataset
from heat_module.data.curated import SEPARATOR, word_spans

SHARED = "../shared/data/heta/heta_qa_dataset_100_unique.json"


def test_builder_indices_follow_the_shared_convention(fixtures):
    ex = build_curated_examples(fixtures / "narratives.txt", fixtures / "supports.jsonl")
    assert len(ex) == 4 and ex[0]["base_pair_id"] == "narrative_00__plants"
    assert ex[1]["important_word_indices_in_sciq_support"] == [1, 4, 6, 12, 15]  # every occurrence of roots/water/tree
    assert ex[0]["input_text"] == (f"{ex[0]['narrative_segment']} {SEPARATOR} {ex[0]['sciq_support_segment']} "
                                   f"{SEPARATOR} Question: {ex[0]['question']}")
    zipped = build_curated_examples(fixtures / "narratives.txt", fixtures / "supports.jsonl", pairing="zip")
    assert [e["base_pair_id"] for e in zipped] == ["narrative_00__plants", "narrative_01__roots"]


def test_builder_rejects_an_important_word_missing_from_the_support():
    rows = [{"support": "the sun is warm .", "question": "why ?", "answer": "sun", "important_words": ["moon"]}]
    with pytest.raises(DataError, match=r"supports_with_questions\[0\]: .*\['moon'\] missing"):
        build_curated_examples(["a story ."], rows)


def test_fixture_gold_distractor_and_target(tok, fixtures):
    dm = CuratedDataModule(fixtures / "curated.json", tokenizer=tok, limit=2)
    dm.setup("test")
    assert [e.id for e in dm.examples] == ["fixture_00000", "fixture_00001"]
    e = dm.examples[0]
    words = tok.convert_ids_to_tokens(e.input_ids)
    assert [words[i] for i in e.gold] == ["plant", "leaves", "light", "water"]
    narrative = "the old house by the river was closed after the cold winter and she was sad ."
    assert [e.input_ids[i] for i in e.distractor] == tok(narrative)["input_ids"]
    assert e.distractor == list(range(len(e.distractor)))
    assert tok.decode([e.target_id]) == "leaves"
    batch = next(iter(dm.test_dataloader()))
    assert batch["has_gold"].all() and not (batch["gold_mask"] & batch["distractor_mask"]).any()


def test_save_and_reload_roundtrip(tok, fixtures, tmp_path):
    ex = build_curated_examples(["my dog ran in the park ."], fixtures / "supports.jsonl", id_prefix="own")
    path = save_curated_dataset(ex, tmp_path / "own.json")
    dm = CuratedDataModule(path, tokenizer=tok)
    dm.setup()
    assert [e.id for e in dm.examples] == ["own_00000", "own_00001"]


def test_word_spans_trim_punctuation():
    text = "the plant, (roots) grow."
    assert [text[a:b] for a, b in word_spans(text)] == ["the", "plant", "roots", "grow"]


def test_malformed_json_names_file_and_line(tok, tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"examples": [\n  {"id": "a",\n   "narrative_segment": "x" "y"}\n]}\n')
    with pytest.raises(DataError, match=r"c\.json:3: Expected valid JSON"):
        CuratedDataModule(path, tokenizer=tok).setup()


def test_bad_example_names_file_and_example(tok, fixtures, tmp_path):
    data = json.loads((fixtures / "curated.json").read_text())
    data["examples"][1]["important_word_indices_in_sciq_support"] = [0, 99]
    del data["examples"][2]["sciq_support_segment"]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"c\.json: example 1 \(id 'fixture_00001'\): Expected important_word_indices"):
        CuratedDataModule(path, tokenizer=tok).setup()
    dm = CuratedDataModule(path, tokenizer=tok, skip_bad_examples=True)
    with pytest.warns(UserWarning, match="example 2"):
        dm.setup()
    assert [e.id for e in dm.examples] == ["fixture_00000", "fixture_00003"] and len(dm.skipped) == 2


def test_not_a_list_of_examples(tok, tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"data": []}')
    with pytest.raises(DataError, match="Expected a JSON list of examples or an object with an 'examples' list"):
        CuratedDataModule(path, tokenizer=tok).setup()


@pytest.mark.slow
def test_shared_file_with_smollm2_tokenizer(smollm2):
    from heat_module.data.readers import resolve_path

    try:
        resolve_path(SHARED)
    except FileNotFoundError:
        pytest.skip("shared curated file not available")
    _, tokenizer = smollm2
    dm = CuratedDataModule(SHARED, tokenizer=tokenizer, limit=3)
    dm.setup()
    e = dm.examples[0]
    gold = "".join(tokenizer.decode([e.input_ids[i]]) for i in e.gold)
    assert gold == " Photosynthesis primarily occurs leaves plant chloroplasts capture light"
    assert tokenizer.decode([e.target_id]) == " leaves"
    assert tokenizer.decode([e.input_ids[i] for i in e.distractor]).startswith("The protagonist returns")
