"""HEATModule(generate=True) + GenerationDataModule + AttributionWriter: one GenerationResult per request, written
as ``GenerationResult.to_dict()`` lines that read back exactly, and resumed without recomputing.

The stand-in attributor builds each row as ``HEAT.attribute(prefix_t, target=y_t)``, what the real
``attribute_generation`` equals (the last test checks that through the module)."""

import json

import lightning.pytorch as pl
import pytest
import torch

import heat_module as hm
from heat_module.generation_result import GenerationResult
from heat_module.lightning.datamodules import GenerationDataModule
from heat_module.lightning.module import HEATModule
from heat_module.lightning.writer import AttributionWriter, read_predictions


@pytest.fixture(scope="module")
def tiny():
    from heat_module.testing import tiny_model, tiny_tokenizer

    return tiny_model("llama", seed=0), tiny_tokenizer()


class RowByRow:
    """attribute_generation by definition: row t = heat.attribute(prompt + y_<t, target=y_t)."""

    def __init__(self, heat):
        self.heat, self.calls = heat, []

    def attribute_generation(self, prompt, *, messages=None, continuation=None, max_new_tokens=None, **kw):
        assert messages is None and not kw
        self.calls.append(prompt)
        tok = self.heat.tokenizer
        prompt_ids = list(tok(prompt)["input_ids"])
        if continuation is not None:
            answer = list(tok(continuation, add_special_tokens=False)["input_ids"])
        else:  # greedy, one token at a time (the attribution's target is the model's argmax)
            answer = []
            for _ in range(max_new_tokens):
                answer.append(int(self.heat.attribute(torch.tensor(prompt_ids + answer)).target_id))
        ids = prompt_ids + answer
        n, T = len(prompt_ids), len(answer)
        matrix = torch.full((T, n + T), float("nan"))
        for t in range(T):
            matrix[t, : n + t] = self.heat.attribute(torch.tensor(ids[: n + t]), target=ids[n + t]).scores.float()
        return GenerationResult(torch.tensor(prompt_ids), torch.tensor(answer), tok.convert_ids_to_tokens(ids),
                                matrix, {"probability": torch.rand(T)}, method="heat")


def trainer(*callbacks):
    return pl.Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))


@pytest.mark.usefixtures("one_thread")
def test_generation_predictions_round_trip_and_resume(tiny, tmp_path):
    model, tok = tiny
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "the cat sat on the", "continuation": "mat and"},
        {"id": "g", "prompt": "a dog ran", "max_new_tokens": 2}]) + "\n")
    module = HEATModule(model, tok, hm.HEATConfig(beta=0.0, progress=False), generate=True)
    module.heat = RowByRow(module.heat)
    out = tmp_path / "out"
    batches = trainer(AttributionWriter(out)).predict(module, datamodule=GenerationDataModule(path, tokenizer=tok))
    results = [r for b in batches for r in b]
    rows = read_predictions(out)
    assert [row["id"] for row in rows] == ["0", "g"] and [r.T for r in results] == [2, 2]
    for row, res in zip(rows, results):
        back = GenerationResult.from_dict(row)
        assert back.tokens == res.tokens and back.extra["id"] == row["id"]
        torch.testing.assert_close(back.matrix, res.matrix, rtol=0, atol=0, equal_nan=True)
        assert torch.isnan(back.matrix[0, -1]) and not torch.isnan(back.matrix[1, :-1]).any()
    assert rows[0]["config_hash"] == module.attribution_hash() != hm.HEATConfig(beta=0.0).hash()
    again = HEATModule(model, tok, hm.HEATConfig(beta=0.0, progress=False), generate=True)
    again.heat = RowByRow(again.heat)
    trainer(AttributionWriter(out)).predict(again, datamodule=GenerationDataModule(path, tokenizer=tok),
                                            return_predictions=False)
    assert again.heat.calls == [] and len(read_predictions(out)) == 2


def test_generation_mode_checks_its_batches(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="generate=True with generation_options"):
        HEATModule(model, tok, generation_options={"keep_special": True})
    plain = HEATModule(model, tok, hm.HEATConfig(beta=0.0, progress=False))
    with pytest.raises(TypeError, match="generation requests: use HEATModule"):
        plain.predict_step({"requests": [], "ids": [], "metadata": []})
    gen = HEATModule(model, tok, hm.HEATConfig(beta=0.0, progress=False), generate=True)
    with pytest.raises(TypeError, match="Expected a batch of generation requests"):
        gen.predict_step({"input_ids": torch.ones(1, 3, dtype=torch.long)})


@pytest.mark.usefixtures("one_thread")
def test_real_generation_rows_equal_single_step_calls(tiny, tmp_path):
    model, tok = tiny
    module = HEATModule(model, tok, hm.HEATConfig(beta=0.0, progress=False), generate=True)
    data = GenerationDataModule([{"prompt": "the cat sat on the", "continuation": "mat and"},
                                 {"prompt": "a dog ran", "max_new_tokens": 2}], tokenizer=tok)
    batches = trainer(AttributionWriter(tmp_path)).predict(module, datamodule=data)
    stand_in = RowByRow(hm.HEAT(model, tok, hm.HEATConfig(beta=0.0, progress=False)))
    for res, args in zip([r for b in batches for r in b], [("the cat sat on the", "mat and", None),
                                                           ("a dog ran", None, 2)]):
        expected = stand_in.attribute_generation(args[0], continuation=args[1], max_new_tokens=args[2])
        assert res.generated_ids.tolist() == expected.generated_ids.tolist()
        torch.testing.assert_close(res.matrix.float(), expected.matrix, rtol=1e-5, atol=1e-7, equal_nan=True)
    assert [GenerationResult.from_dict(row).T for row in read_predictions(tmp_path)] == [2, 2]
