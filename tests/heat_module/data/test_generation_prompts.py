"""Generation requests from JSON lines: prompts or chat messages, optional continuations (and their data module)."""

import json

import pytest

from heat_module.data.generation_prompts import GenerationRequest, read_generation_requests
from heat_module.data.readers import DataError


def write(tmp_path, rows, name="req.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."}]


def test_prompts_and_chat_lines(tmp_path):
    path = write(tmp_path, [{"prompt": "The capital of France is", "continuation": " Paris."},
                            "", {"id": "c1", "messages": CHAT, "max_new_tokens": 4, "metadata": {"topic": "food"}}])
    first, second = read_generation_requests(path, max_new_tokens=8)
    assert first == GenerationRequest(id="0", prompt="The capital of France is", continuation=" Paris.",
                                      max_new_tokens=8, metadata={"source": f"{path}:1"})
    assert second.id == "c1" and second.messages == CHAT and second.prompt is None and second.continuation is None
    assert second.max_new_tokens == 4 and second.metadata == {"source": f"{path}:3", "topic": "food"}


@pytest.mark.parametrize("row, message", [
    ({"prompt": "a", "messages": CHAT}, "exactly one of 'prompt' and 'messages', got both"),
    ({"continuation": "x"}, "got neither"),
    ({"messages": [{"role": "user"}]}, "messages[0]"),
    ({"messages": []}, "non-empty list"),
    ({"prompt": "a", "max_new_tokens": 0}, "max_new_tokens"),
    ({"prompt": "a", "continuation": ""}, "continuation"),
    ({"prompt": "a", "answer": "b"}, "got also ['answer']"),
    ({"prompt": " "}, "non-empty string"),
])
def test_bad_lines_name_file_and_line(tmp_path, row, message):
    path = write(tmp_path, [{"prompt": "fine"}, row])
    with pytest.raises(DataError, match=f"{path}:2: .*" + message.replace("[", r"\[").replace("]", r"\]")):
        read_generation_requests(path)
    skipped = []
    assert len(read_generation_requests(path, on_bad=lambda where, msg: skipped.append(where))) == 1
    assert skipped == [f"{path}:2"]


def test_invalid_json_and_wrong_suffix(tmp_path):
    with pytest.raises(DataError, match=r":1: Expected a JSON object"):
        read_generation_requests(write(tmp_path, ["{not json"]))
    with pytest.raises(DataError, match="Expected a .jsonl file"):
        read_generation_requests(write(tmp_path, [{"prompt": "a"}], name="req.txt"))


def test_list_input():
    out = read_generation_requests(["Hello there", {"messages": CHAT, "id": 7}])
    assert [r.id for r in out] == ["0", "7"] and out[0].prompt == "Hello there" and out[1].messages == CHAT


def test_data_module_batches_requests(tmp_path):
    from heat_module.lightning.datamodules import GenerationDataModule

    path = write(tmp_path, [{"prompt": "a b"}, {"messages": CHAT, "id": "x"}, {"prompt": "c", "id": "x"}])
    dm = GenerationDataModule(path, max_new_tokens=3, tokenizer="never-loaded",
                              batch_size=2, limit=2)
    dm.setup("predict")
    (batch,) = list(dm.predict_dataloader())
    assert batch["ids"] == ["0", "x"] and [r.max_new_tokens for r in batch["requests"]] == [3, 3]
    with pytest.raises(DataError, match="unique example ids"):
        dup = GenerationDataModule(path, tokenizer="unused")
        dup.setup("predict")
