"""HEATModule / HEATPredictMixin: trainer.predict equals HEAT.attribute per example, test metrics, dispatch, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

import heat_module as hm
from heat_module.data import CuratedDataModule, TextPromptsDataModule
from heat_module.lightning.module import ExampleError, HEATModule, HEATPredictMixin, attribute_padded_batch
from heat_module.metrics.registry import metric_entry

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"
PROMPTS = ["the cat sat on the", "she ordered a pizza and cut it with a", "my red car"]  # 5, 9, 3 tokens
CHEAP = hm.HEATConfig(beta=0.0)  # transition + information only: plumbing tests


@pytest.fixture(scope="module")
def tiny():
    from heat_module.testing import tiny_model, tiny_tokenizer

    return tiny_model("llama", seed=0), tiny_tokenizer()


def trainer(**kwargs) -> pl.Trainer:
    defaults = dict(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False)
    return pl.Trainer(**{**defaults, **kwargs})


def flat(batches):
    return [r for batch in batches for r in batch]


def assert_same_result(got: hm.AttributionResult, ref: hm.AttributionResult, rtol: float, atol_rel: float) -> None:
    assert got.tokens == ref.tokens and got.target_id == ref.target_id
    for name in ("scores", "transition", "curvature", "information"):
        a, b = getattr(got, name), getattr(ref, name)
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol_rel * float(b.abs().max()), msg=name)


def test_predict_equals_attribute_on_each_example_tiny(tiny):
    """Padded batch of 3 (lengths 5, 9, 3) through trainer.predict == HEAT.attribute alone (full exact HEAT).

    Tolerance: rtol 1e-4 and atol 1e-5·max|ref| (the batched forward with left padding differs from the unpadded
    one by fp32 round-off only).
    """
    model, tok = tiny
    config = hm.HEATConfig(beta=0.5, gamma=0.5, curvature={"name": "exact", "probes": 2})
    module = HEATModule(model, tok, config)
    data = TextPromptsDataModule(PROMPTS, targets=[None, " knife", None], tokenizer=tok, batch_size=3)
    results = flat(trainer().predict(module, datamodule=data))
    assert [r.extra["id"] for r in results] == ["0", "1", "2"]
    heat = hm.HEAT(model, tok, config)
    for r, prompt, target in zip(results, PROMPTS, [None, " knife", None]):
        assert r.curvature is not None
        assert_same_result(r, heat.attribute(prompt, target), rtol=1e-4, atol_rel=1e-5)
    assert results[1].target == "knife"


def test_inference_mode_gives_a_clear_error(tiny):
    model, tok = tiny
    module = HEATModule(model, tok, CHEAP)
    data = TextPromptsDataModule(PROMPTS[:1], tokenizer=tok)
    with pytest.raises(RuntimeError, match=r"use Trainer\(inference_mode=False\)"):
        trainer(inference_mode=True).predict(module, datamodule=data)


class _Recorder:
    """An attributor that records the rows it is asked to attribute."""

    def __init__(self, heat):
        self.heat, self.calls = heat, []

    def attribute_batch(self, input_ids, attention_mask, target_ids):
        self.calls.append(input_ids.shape)
        return self.heat.attribute_batch(input_ids, attention_mask, target_ids)


def test_done_ids_are_skipped_before_any_compute(tiny):
    model, tok = tiny
    data = TextPromptsDataModule(PROMPTS, tokenizer=tok, batch_size=3)
    data.setup()
    batch = next(iter(data.predict_dataloader()))
    rec = _Recorder(hm.HEAT(model, tok, CHEAP))
    out = attribute_padded_batch(rec, batch, done_ids={"0", "1"})
    assert [r.extra["id"] for r in out] == ["2"]
    assert rec.calls == [torch.Size([1, 3])]  # one row, padding columns dropped
    assert attribute_padded_batch(rec, batch, done_ids={"0", "1", "2"}) == [] and len(rec.calls) == 1


def test_skip_bad_examples_returns_an_error_item(tiny):
    model, tok = tiny
    too_long = " ".join(["the"] * 130)  # the tiny model has 128 positions
    data = TextPromptsDataModule([PROMPTS[0], too_long], tokenizer=tok, batch_size=2)
    data.setup()
    batch = next(iter(data.predict_dataloader()))
    heat = hm.HEAT(model, tok, CHEAP)
    with pytest.raises(ValueError, match="at most 128 tokens"):
        attribute_padded_batch(heat, batch)
    out = attribute_padded_batch(heat, batch, skip_bad_examples=True)
    assert isinstance(out[0], hm.AttributionResult) and isinstance(out[1], ExampleError)
    assert out[1].id == "1" and out[1].error_type == "ValueError" and "128" in out[1].error


def test_mixin_in_a_users_own_module(tiny):
    model, tok = tiny

    class Mine(HEATPredictMixin, pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lm = model
            self.heat_config = CHEAP

        def heat_model(self):
            return self.lm

        def predict_step(self, batch, batch_idx):
            return self.heat_predict_step(batch, batch_idx)

    data = TextPromptsDataModule(PROMPTS[:2], tokenizer=tok, batch_size=2)
    results = flat(trainer().predict(Mine(), datamodule=data))
    heat = hm.HEAT(model, tok, CHEAP)
    for r, prompt in zip(results, PROMPTS):
        torch.testing.assert_close(r.scores, heat.attribute(tok(prompt)["input_ids"]).scores, rtol=1e-4, atol=1e-6)


def test_example_file_runs(tiny, tmp_path):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import own_lightning_module
    finally:
        sys.path.pop(0)
    results = own_lightning_module.main(["--model", "tiny", "--out", str(tmp_path)])
    assert [r.extra["id"] for r in results] == ["0", "1"]
    assert len((tmp_path / "predictions-rank0.jsonl").read_text().splitlines()) == 2


def test_test_step_updates_metrics_as_annotations_allow(tiny):
    """trainer.test on the curated fixture: DSA equals the definition applied to HEAT.attribute's scores."""
    model, tok = tiny
    module = HEATModule(model, tok, CHEAP, metrics=["dsa", "f1", "aopc", "soft_nc"],
                        metric_options={"soft_nc": {"num_masks": 2}, "aopc": {"percents": [10, 50]}})
    data = CuratedDataModule(FIXTURES / "curated.json", tokenizer=tok, batch_size=2, limit=3)
    logged = trainer().test(module, datamodule=data)[0]
    assert logged["test/num_examples"] == 3
    for key in ("test/dsa", "test/f1", "test/span_f1", "test/aopc", "test/soft_nc", "test/soft_nc_random"):
        assert key in logged and torch.isfinite(torch.tensor(logged[key])), key
    heat = hm.HEAT(model, tok, CHEAP)
    values = []
    for e in data.examples:
        s = heat.attribute(e.input_ids, e.target_id).scores.clamp_min(0)
        s = s / s.sum()  # DSA's definition: normalised over the context, gold minus distractor mass
        values.append(float(s[e.gold].sum() - s[e.distractor].sum()))
    assert logged["test/dsa"] == pytest.approx(sum(values) / len(values), rel=1e-4, abs=1e-6)


def test_prompts_without_gold_skip_dsa(tiny):
    model, tok = tiny
    module = HEATModule(model, tok, CHEAP, metrics=["dsa", "f1"])
    logged = trainer().test(module, datamodule=TextPromptsDataModule(PROMPTS, tokenizer=tok))[0]
    assert logged["test/num_examples"] == 3 and "test/dsa" not in logged and "test/f1" not in logged


def test_method_dispatch(tiny):
    model, tok = tiny
    module = HEATModule(model, tok, method="random")
    data = TextPromptsDataModule(PROMPTS[:2], tokenizer=tok, batch_size=2)
    results = flat(trainer().predict(module, datamodule=data))
    assert [r.method for r in results] == ["random", "random"]
    with pytest.raises(ValueError, match="Expected a method name"):
        HEATModule(model, tok, method="no_such_method")


@pytest.mark.slow
def test_predict_equals_attribute_on_each_example_smollm2(smollm2):
    """SmolLM2, exact curvature with one probe, a padded batch of two short prompts (5 and 3 tokens).

    Tolerance: rtol 1e-3, atol 1e-4·max|ref| (fp32; the padded batched forward and the unpadded one differ by
    round-off, which second-order terms amplify a little).
    """
    model, tok = smollm2
    config = hm.HEATConfig(beta=0.5, gamma=0.5, curvature={"name": "exact", "probes": 1})
    prompts = ["The capital of France is", "Water boils at"]
    module = HEATModule(model, tok, config)
    results = flat(trainer().predict(module, datamodule=TextPromptsDataModule(prompts, tokenizer=tok, batch_size=2)))
    heat = hm.HEAT(model, tok, config)
    for r, prompt in zip(results, prompts):
        assert_same_result(r, heat.attribute(prompt), rtol=1e-3, atol_rel=1e-4)
    assert results[0].target.strip() == "Paris"


@pytest.mark.slow
def test_ddp_two_processes_write_every_example_once(tmp_path):
    """tests/scripts/ddp_predict.py: 2 CPU processes (gloo) predict 7 prompts and test them; no duplicates."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "ddp_predict.py"), "--out", str(tmp_path),
                           "--n", "7"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    shards = sorted(tmp_path.glob("predictions-rank*.jsonl"))
    assert [p.name for p in shards] == ["predictions-rank0.jsonl", "predictions-rank1.jsonl"]
    ids = [json.loads(line)["id"] for p in shards for line in p.read_text().splitlines()]
    assert sorted(ids) == sorted(str(i) for i in range(7))
    assert all(p.read_text().strip() for p in shards)  # both ranks did work
    metrics = json.loads((tmp_path / "test_metrics.json").read_text())
    assert metrics["test/num_examples"] == 7  # a padded DistributedSampler would count 8
    names = json.loads((tmp_path / "metric_names.json").read_text())  # every registered metric a batch carries
    assert {"soft_nc", "soft_ns", "aopc", "abpc", "sensitivity"} <= set(names)
    gold_free = [n for n in names if n not in ("dsa", "f1")]  # the prompts have no gold tokens
    logged = [f"test/{key}" for n in gold_free for key in metric_entry(n).keys]
    assert set(logged) <= set(metrics), sorted(metrics)


def test_mask_with_holes_is_refused_before_any_compute(tiny):
    model, tok = tiny
    ids = torch.randint(4, 60, (2, 5), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 1, 1]]),
             "ids": ["a", "b"]}
    with hm.HEAT(model, tok, CHEAP) as heat:
        for skip in (False, True):
            with pytest.raises(ValueError, match=r"left-padding attention_mask .* got row 1 = \[1, 0, 0, 1, 1\]"):
                attribute_padded_batch(heat, batch, skip_bad_examples=skip)
