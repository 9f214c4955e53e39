"""Export of a generation matrix: inseq's decoder-only format with every step (read back by our importer) and the
long DataFrame."""

from __future__ import annotations

import json
import math

import pytest
import torch

from heat_module.baselines.inseq_import import load_inseq
from heat_module.heat.estimator import HEAT
from heat_module.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def generated():
    model, tok = tiny_model("llama", seed=0).double(), tiny_tokenizer()
    return HEAT(model, tok).attribute_generation("the cat sat on the", max_new_tokens=3)


def test_inseq_export_has_every_step(generated, tmp_path):
    path = tmp_path / "gen.json"
    generated.to_inseq(path)
    doc = json.loads(path.read_text())
    assert doc["__instance_type__"] == ["inseq.data.attribution", "FeatureAttributionOutput"]
    (seq,) = doc["attributes"]["sequence_attributions"]
    attrs = seq["attributes"]
    n, T = generated.n_prompt, generated.T
    assert attrs["attr_pos_start"] == n and attrs["attr_pos_end"] == n + T
    assert [t["attributes"]["token"] for t in attrs["source"]] == generated.tokens[:n]
    assert [t["attributes"]["id"] for t in attrs["target"]] == torch.cat(
        [generated.prompt_ids, generated.generated_ids]).tolist()
    array = attrs["target_attributions"]
    assert array["shape"] == [n + T, T]
    values = torch.tensor([[math.nan if v is None else v for v in row] for row in array["__ndarray__"]])
    assert torch.equal(values.isnan(), generated.matrix.T.isnan())
    assert torch.allclose(values.nan_to_num(0), generated.matrix.T.double().nan_to_num(0).float())
    probs = attrs["step_scores"]["probability"]["__ndarray__"]
    assert probs == pytest.approx(generated.step_scores["probability"].tolist())
    assert doc["attributes"]["info"]["generated_texts"] == ["".join(generated.tokens)]


def test_inseq_export_reads_back_step_by_step(generated, tmp_path):
    path = tmp_path / "gen.json"
    generated.to_inseq(path)
    for t in range(generated.T):
        (back,) = load_inseq(path, step=t)
        assert back.target_id == int(generated.generated_ids[t])
        assert torch.allclose(back.scores, generated.row(t).scores.float())


def test_inseq_export_refuses_merged_columns(generated, tmp_path):
    with pytest.raises(ValueError, match="export before aggregate"):
        generated.aggregate("words").to_inseq(tmp_path / "x.json")


def test_dataframe_is_the_long_table(generated):
    pytest.importorskip("pandas")
    frame = generated.to_dataframe()
    n, T = generated.n_prompt, generated.T
    assert len(frame) == sum(n + t for t in range(T))
    row = frame[(frame.step == 2) & (frame.column == 1)].iloc[0]
    assert row.score == pytest.approx(float(generated.matrix[2, 1]))
    assert row.target == generated.generated_tokens[2] and row.token == generated.tokens[1]
