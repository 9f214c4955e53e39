"""HEATModule's test metrics come from the metric registry: every metric a batch carries can be asked for by name
(ABPC and Sensitivity included), the defaults are the registry's, and what a batch cannot feed is refused."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

import heat_module as hm
from heat_module.data import TextPromptsDataModule
from heat_module.lightning.module import BATCH_INPUTS, HEATModule
from heat_module.lm.forward import embed, make_forward_fn
from heat_module.metrics.functional import abpc
from heat_module.metrics.registry import available_metrics, default_metrics, metric_entry
from heat_module.testing import grad_x_input_fn, tiny_model, tiny_tokenizer

PROMPTS = ["the cat sat on the", "my red car"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama", seed=0), tiny_tokenizer()


def test_abpc_and_sensitivity_by_name(tiny):
    model, tok = tiny
    module = HEATModule(model, tok, method="random", metrics=["abpc", "sensitivity"],
                        metric_options={"abpc": {"steps": 4},
                                        "sensitivity": {"attribute_fn": grad_x_input_fn(model), "num_samples": 2}})
    trainer = pl.Trainer(accelerator="cpu", devices=1, inference_mode=False, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    logged = trainer.test(module, datamodule=TextPromptsDataModule(PROMPTS, tokenizer=tok, batch_size=1),
                          verbose=False)[0]
    assert logged["test/num_examples"] == 2 and logged["test/sensitivity"] > 0
    want = []
    for prompt in PROMPTS:  # ABPC of the random method's scores, by the functional form
        res = hm.baselines.get_method("random")(model, tok).attribute(prompt)
        x = embed(model, res.token_ids[None])
        want.append(float(abpc(res.scores[None], x, None, torch.tensor([res.target_id]), make_forward_fn(model),
                               steps=4)))
    assert logged["test/abpc"] == pytest.approx(sum(want) / 2, abs=1e-5)


def test_defaults_come_from_the_registry_and_the_rest_is_refused(tiny):
    model, tok = tiny
    assert HEATModule(model, tok, method="random").metric_names == tuple(default_metrics())
    carried = [n for n in available_metrics() if metric_entry(n).inputs in BATCH_INPUTS]
    assert {"abpc", "sensitivity", "soft_nc", "dsa"} <= set(carried)
    with pytest.raises(ValueError, match="two phrasings"):
        HEATModule(model, tok, method="random", metrics=["active_passive_robustness"])
    with pytest.raises(ValueError, match="Expected a metric name"):
        HEATModule(model, tok, method="random", metrics=["no_such_metric"])
    with pytest.raises(ValueError, match="attribute_fn"):
        HEATModule(model, tok, method="random", metrics=["sensitivity"])
