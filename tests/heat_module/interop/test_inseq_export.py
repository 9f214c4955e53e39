"""Export to inseq's saved format: round trip through our importer, and the JSON checked against inseq's schema as
its serialization code writes it (inseq/data/attribution.py, inseq/utils/serialization.py)."""

import json
import math

import pytest
import torch

import heat_module as hm
from heat_module.baselines.inseq_import import load_inseq
from heat_module.interop import save_inseq
from heat_module.result import ResultList

# The public dataclass fields of inseq's classes (what TensorWrapper.to_dict / class_instance_encode keep).
SEQUENCE_FIELDS = {"source", "target", "source_attributions", "target_attributions", "step_scores",
                   "sequence_scores", "attr_pos_start", "attr_pos_end"}
OUTPUT_FIELDS = {"sequence_attributions", "step_attributions", "info"}


def make(tokens, scores, target, target_id, method="heat"):
    return hm.AttributionResult(tokens=tokens, token_ids=torch.arange(10, 10 + len(tokens)), target=target,
                                target_id=target_id, scores=torch.tensor(scores), method=method)


@pytest.fixture
def results():
    return [make(["The", " capital", " of", " France", " is"], [0.1, 0.5, 0.05, 0.9, -0.2], " Paris", 77),
            make(["I", " like"], [0.3, 0.7], " tea", 78)]


def decode_ndarray(obj):
    """inseq's numpy_obj_hook for plain-list arrays: the data must have the declared shape."""
    assert set(obj) <= {"__ndarray__", "dtype", "shape", "Corder"} and {"__ndarray__", "dtype", "shape"} <= set(obj)
    data = torch.tensor([[math.nan if v is None else v for v in row] for row in obj["__ndarray__"]])
    assert list(data.shape) == list(obj["shape"]) and obj["dtype"] == "float32"
    return data


def test_round_trip_through_load_inseq(results, tmp_path):
    path = tmp_path / "heat.json"
    save_inseq(results, path)
    back = load_inseq(path)
    assert len(back) == 2
    for want, got in zip(results, back):
        assert got.tokens == want.tokens and got.target == want.target and got.target_id == want.target_id
        assert got.token_ids.tolist() == want.token_ids.tolist() and got.method == "heat"
        torch.testing.assert_close(got.scores, want.scores)


def test_json_matches_inseq_schema(results, tmp_path):
    path = tmp_path / "heat.json"
    ResultList(results).to_inseq(str(path))
    doc = json.loads(path.read_text())
    assert doc["__instance_type__"] == ["inseq.data.attribution", "FeatureAttributionOutput"]
    attrs = doc["attributes"]
    assert set(attrs) == OUTPUT_FIELDS and attrs["step_attributions"] is None
    assert attrs["info"]["attribution_method"] == "heat" and attrs["info"]["attribute_target"] is True
    assert len(attrs["info"]["input_texts"]) == len(attrs["sequence_attributions"]) == 2
    for res, seq in zip(results, attrs["sequence_attributions"]):
        assert seq["__instance_type__"] == ["inseq.data.attribution", "FeatureAttributionSequenceOutput"]
        s = seq["attributes"]
        assert set(s) == SEQUENCE_FIELDS
        n = len(res)
        for tok in s["target"] + s["source"]:
            assert tok["__instance_type__"] == ["inseq.utils.typing", "TokenWithId"]
            assert set(tok["attributes"]) == {"token", "id"}
        assert [t["attributes"]["token"] for t in s["target"]] == res.tokens + [res.target]
        assert s["source"] == s["target"][:n]  # decoder-only: the source is the prefix before attr_pos_start
        assert s["attr_pos_start"] == n and s["attr_pos_end"] == n + 1 and s["source_attributions"] is None
        attr = decode_ndarray(s["target_attributions"])
        assert attr.shape == (n + 1, 1)  # (len(target), generation steps)
        torch.testing.assert_close(attr[:n, 0], res.scores)
        assert math.isnan(attr[n, 0])
    # the sort_keys=True layout of inseq's json_advanced_dump
    assert path.read_text() == json.dumps(doc, indent=4, sort_keys=True, allow_nan=True)


def test_single_result_to_inseq_and_empty_list(results, tmp_path):
    results[0].to_inseq(str(tmp_path / "one.json"))
    assert len(load_inseq(tmp_path / "one.json")) == 1
    with pytest.raises(ValueError, match="at least one result"):
        save_inseq([], tmp_path / "none.json")
