import pytest
import torch

from heat_module.data import Example, LeftPadCollator, UnrepeatedShardSampler, char_spans_to_tokens


def test_left_padding_keeps_annotations_aligned():
    examples = [Example("a", [5, 6, 7], 9, gold=[0, 2], distractor=[1]), Example("b", [8], -1, metadata={"k": 1})]
    batch = LeftPadCollator(pad_id=0)(examples)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["target_ids"].tolist() == [9, -1]
    assert batch["gold_mask"].tolist() == [[True, False, True], [False, False, False]]
    assert batch["distractor_mask"].tolist() == [[False, True, False], [False, False, False]]
    assert batch["has_gold"].tolist() == [True, False]
    assert batch["ids"] == ["a", "b"] and batch["metadata"] == [{}, {"k": 1}]


def test_example_checks_positions():
    with pytest.raises(ValueError, match=r"Expected gold positions in \[0, 2\)"):
        Example("x", [1, 2], gold=[2])


@pytest.mark.parametrize("n, world", [(7, 2), (3, 3), (1, 2), (0, 2), (10, 3)], ids=lambda v: str(v))
def test_unrepeated_sampler_covers_every_index_once(n, world):
    seen = []
    for rank in range(world):
        sampler = UnrepeatedShardSampler(list(range(n)), world, rank)
        got = list(sampler)
        assert len(got) == len(sampler)
        seen += got
    assert sorted(seen) == list(range(n))


def test_char_spans_to_tokens_skips_special_tokens():
    offsets = [(0, 0), (0, 3), (3, 4), (5, 9)]
    assert char_spans_to_tokens(offsets, [(0, 3)]) == [1]
    assert char_spans_to_tokens(offsets, [(2, 6)]) == [1, 2, 3]
    assert torch.tensor(char_spans_to_tokens(offsets, [])).numel() == 0
