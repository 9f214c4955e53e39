"""GenerationResult: shape checks, rows, column aggregation, exact save/load and to_dict/from_dict round trips."""

from __future__ import annotations

import math

import pytest
import torch

from heat_module.generation_result import GenerationResult, reduce_nan
from heat_module.heat.estimator import HEAT
from heat_module.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
NAN = math.nan


@pytest.fixture(scope="module")
def generated():
    model, tok = tiny_model("llama", seed=0).double(), tiny_tokenizer()
    return HEAT(model, tok).attribute_generation("the cat sat on the", max_new_tokens=3)


def small() -> GenerationResult:
    matrix = torch.tensor([[0.1, 0.2, 0.3, NAN, NAN], [0.4, 0.5, 0.6, 0.7, NAN]])
    return GenerationResult(torch.tensor([1, 2, 3]), torch.tensor([4, 5]), ["a", " b", "c", " d", "e"], matrix,
                            {"probability": torch.tensor([0.5, 0.25])}, spans=[(0, 3, "user"), (3, 5, "assistant")])


def equal(a: GenerationResult, b: GenerationResult) -> None:
    assert torch.equal(a.prompt_ids, b.prompt_ids) and torch.equal(a.generated_ids, b.generated_ids)
    assert a.matrix.dtype == b.matrix.dtype
    assert torch.equal(a.matrix.isnan(), b.matrix.isnan())
    assert torch.equal(a.matrix.nan_to_num(0), b.matrix.nan_to_num(0))
    assert a.step_scores.keys() == b.step_scores.keys()
    for k in a.step_scores:
        assert a.step_scores[k].dtype == b.step_scores[k].dtype and torch.equal(a.step_scores[k], b.step_scores[k])
    assert torch.equal(a.special, b.special)
    assert (a.tokens, a.spans, a.method, a.options, a.foil, a.extra) == (b.tokens, b.spans, b.method, b.options,
                                                                           b.foil, b.extra)
    assert (a.rows is None) == (b.rows is None)
    for ra, rb in zip(a.rows or [], b.rows or []):
        for name in ("token_ids", "scores", "transition", "curvature", "information", "first_order"):
            va, vb = getattr(ra, name), getattr(rb, name)
            assert (va is None) == (vb is None)
            if va is not None:
                assert va.dtype == vb.dtype and torch.equal(va, vb), name
        assert (ra.tokens, ra.target, ra.target_id, ra.config, ra.extra) == (rb.tokens, rb.target, rb.target_id,
                                                                               rb.config, rb.extra)
        assert ra.cost.to_dict() == rb.cost.to_dict()


def test_save_load_round_trip_is_exact(generated, tmp_path):
    assert generated.rows is not None and generated.rows[0].information is not None
    path = tmp_path / "gen.safetensors"
    generated.save(path)
    equal(GenerationResult.load(path), generated)


def test_dict_round_trip_is_exact(generated):
    equal(GenerationResult.from_dict(generated.to_dict()), generated)
    lean = small()
    equal(GenerationResult.from_dict(lean.to_dict()), lean)


def test_load_refuses_other_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="Expected a 'heat-generation-result/1'"):
        GenerationResult.load(tmp_path / "x.safetensors")


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"Expected matrix of shape \(2, 5\)"):
        GenerationResult(torch.tensor([1, 2, 3]), torch.tensor([4, 5]), ["a"] * 5, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="step score 'probability'"):
        GenerationResult(torch.tensor([1, 2, 3]), torch.tensor([4, 5]), ["a"] * 5, torch.zeros(2, 5),
                         {"probability": torch.zeros(3)})


def test_row_is_the_prefix_of_the_matrix_row(generated):
    assert generated.n_prompt == 5 and generated.T == 3
    lean = small()
    row = lean.row(1)
    assert row.tokens == ["a", " b", "c", " d"] and row.target == "e" and row.target_id == 5
    assert torch.equal(row.scores, torch.tensor([0.4, 0.5, 0.6, 0.7]))
    assert generated.row(2) is generated.rows[2]


def test_aggregate_words_turns_and_spans():
    lean = small()
    words = lean.aggregate("words")
    assert words.tokens == ["a", " bc", " de"] and words.n_prompt == 2
    assert torch.equal(words.matrix.nan_to_num(-1), torch.tensor([[0.1, 0.5, -1.0], [0.4, 1.1, 0.7]]).float())
    turns = lean.aggregate("turns")
    assert turns.tokens == ["user", "assistant"] and turns.spans == [(0, 1, "user"), (1, 2, "assistant")]
    assert turns.row(1).scores.tolist() == pytest.approx([1.5, 0.7])
    spans = lean.aggregate([(0, 2)], reduce="max")
    assert spans.tokens == ["a b", "c", " d", "e"]
    assert spans.matrix[1, :2].tolist() == pytest.approx([0.5, 0.6])
    with pytest.raises(ValueError, match="across both"):
        lean.aggregate([(2, 4)])
    with pytest.raises(ValueError, match="already aggregated"):
        words.aggregate("words")


def test_reduce_nan_keeps_all_nan_groups_nan():
    values = torch.tensor([[1.0, NAN], [NAN, NAN]])
    for how, first in (("sum", 1.0), ("mean", 1.0), ("max", 1.0)):
        out = reduce_nan(values, how)
        assert out[0] == first and math.isnan(out[1])


def test_normalized_leaves_out_special_columns():
    lean = small()
    lean.special = torch.tensor([True, False, False, False, False])
    norm = lean.normalized()
    assert norm[:, 0].tolist() == [0.0, 0.0]
    assert torch.nansum(norm, 1).tolist() == pytest.approx([1.0, 1.0])
    assert norm[1, 0] == 0 and lean.normalized(keep_special=True)[1, 0] > 0
