"""Reading inseq's saved attributions (``FeatureAttributionOutput.save`` JSON) from fixtures written here."""

from __future__ import annotations

import base64
import gzip
import json

import numpy as np
import pytest
import torch

from heat_module.baselines import get_method
from heat_module.baselines.inseq_import import load_inseq

NAN = float("nan")


def token(tok: str, i: int, wrapped: bool = True) -> dict:
    attrs = {"id": i, "token": tok}
    return {"__instance_type__": ["inseq.utils.typing", "TokenWithId"], "attributes": attrs} if wrapped else attrs


def ndarray(a: np.ndarray, compact: str | None) -> dict:
    if compact is None:
        data = a.tolist()
    else:
        raw = np.ascontiguousarray(a).tobytes()
        data = "b64:" + base64.standard_b64encode(raw).decode() if compact == "b64" else (
            "b64.gz:" + base64.standard_b64encode(gzip.compress(raw)).decode())
    out = {"__ndarray__": data, "dtype": str(a.dtype), "shape": list(a.shape)}
    if a.ndim > 1:
        out["Corder"] = True
    return out


PROMPT = [("the", 10), ("cat", 20), ("sat", 30)]
GENERATED = [("on", 40), ("it", 50)]
# rows: target tokens (prompt + generated); columns: generation steps; NaN after the explained position
ATTR = np.array([[0.5, 0.1], [0.3, 0.2], [0.2, 0.3], [NAN, 0.4], [NAN, NAN]], dtype=np.float32)


def write_fixture(path, compact: str | None = "b64", wrapped: bool = True, granular: bool = False, gz: bool = False):
    attr = ATTR
    if granular:  # a trailing hidden dimension whose L2 norm is ATTR
        attr = np.stack([ATTR * 0.6, ATTR * 0.8], axis=-1).astype(np.float32)
    tokens = [token(t, i, wrapped) for t, i in PROMPT + GENERATED]
    seq = {
        "attr_pos_end": 5, "attr_pos_start": 3, "source": [token(t, i, wrapped) for t, i in PROMPT],
        "target": tokens, "source_attributions": None,
        "target_attributions": ndarray(attr, compact) if wrapped else attr.tolist(),
        "step_scores": {"probability": ndarray(np.array([0.9, 0.5], dtype=np.float32), compact) if wrapped
                        else [0.9, 0.5]},
        "sequence_scores": None,
    }
    if wrapped:
        seq = {"__instance_type__": ["inseq.data.attribution", "FeatureAttributionSequenceOutput"], "attributes": seq}
    out = {"info": {"attribution_method": "reagent", "model_name": "gpt2", "input_texts": ["the cat sat"]},
           "sequence_attributions": [seq, seq], "step_attributions": None}
    if wrapped:
        out = {"__instance_type__": ["inseq.data.attribution", "FeatureAttributionOutput"], "attributes": out}
    text = json.dumps(out, indent=4, sort_keys=True)  # NaN written as NaN, as inseq's allow_nan=True does
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("compact", [None, "b64", "b64.gz"])
def test_reads_each_array_encoding(tmp_path, compact):
    results = load_inseq(write_fixture(tmp_path / "out.json", compact=compact))
    assert len(results) == 2
    res = results[0]
    assert res.method == "reagent" and res.tokens == ["the", "cat", "sat"] and res.token_ids.tolist() == [10, 20, 30]
    assert res.target == "on" and res.target_id == 40
    torch.testing.assert_close(res.scores, torch.tensor([0.5, 0.3, 0.2]))


def test_later_step_gzip_file_primitives_and_granular(tmp_path):
    step1 = load_inseq(write_fixture(tmp_path / "a.json.gz", gz=True), step=1)[0]
    assert step1.tokens == ["the", "cat", "sat", "on"] and step1.target == "it"
    torch.testing.assert_close(step1.scores, torch.tensor([0.1, 0.2, 0.3, 0.4]))
    plain = load_inseq(write_fixture(tmp_path / "b.json", wrapped=False))[0]
    torch.testing.assert_close(plain.scores, torch.tensor([0.5, 0.3, 0.2]))
    granular = load_inseq(write_fixture(tmp_path / "c.json", granular=True))[0]
    torch.testing.assert_close(granular.scores, torch.tensor([0.5, 0.3, 0.2]))
    summed = load_inseq(write_fixture(tmp_path / "d.json", granular=True), reduce="sum")[0]
    torch.testing.assert_close(summed.scores, torch.tensor([0.5, 0.3, 0.2]) * 1.4)
    with pytest.raises(ValueError, match="step"):
        load_inseq(tmp_path / "b.json", step=2)


def test_inseq_scores_method_looks_up_by_ids(tmp_path, model):
    method = get_method("inseq")(model, path=str(write_fixture(tmp_path / "out.json")))
    res = method.attribute([10, 20, 30])
    assert res.method == "reagent" and res.target_id == 40
    with pytest.raises(KeyError, match="inseq attribution"):
        method.attribute([10, 20, 31])
    with pytest.raises(KeyError):
        method.attribute([10, 20, 30], target=41)
