"""The paper's tables and the choice study are two configurations of ONE pipeline: the same function runs both,
writing into the same cache class, and both reports read its rows; a method registered with an evaluation row is a
row of both without any list to edit."""

from __future__ import annotations

import pytest
import torch

import heat_module.evaluation.pipeline as pipeline
from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import register_method, unregister_method
from heat_module.evaluation import Cache, EvalConfig, paper_rows, parse_methods, run
from heat_module.evaluation.choice import EXACT_ROWS, ChoiceConfig, choice_rows, context_rows, run_choice
from heat_module.evaluation.choice_report import metric_table, write_choice_report
from heat_module.testing import tiny_model, tiny_tokenizer
from tests.heat_module.evaluation.test_choice import PATHS

pytestmark = pytest.mark.usefixtures("one_thread")


def settings(tmp_path, model, tok, methods):
    paper = EvalConfig(model=(model, tok), datasets=["wikibio", "curated"], paths=PATHS, limit=1, num_masks=2,
                       bootstrap=10, heat=False, baselines=methods, out_dir=str(tmp_path), figures=False,
                       progress=False)
    choice = ChoiceConfig(model=(model, tok), datasets=["wikibio", "curated"], paths=PATHS,
                          limits={"wikibio": 1, "curated": 1}, seeds=(0,), abpc_steps=2, bootstrap=10,
                          out_dir=str(tmp_path), cache_name="cache-choice.jsonl", methods=methods)
    return paper, choice


def test_both_configurations_run_through_one_pipeline_and_one_cache(tmp_path, monkeypatch):
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    calls = []
    real = pipeline.run_example

    def spy(study, rows, methods, cache, example):
        calls.append((study.name, type(cache)))
        return real(study, rows, methods, cache, example)

    monkeypatch.setattr(pipeline, "run_example", spy)
    paper, choice = settings(tmp_path, model, tok, parse_methods(["random", "last_token"]))
    paper_text = run(paper, model, tok).read_text()
    run_choice(choice, "cheap", model, tok, log=None)
    assert {name for name, _ in calls} == {"paper", "choice"} and {cls for _, cls in calls} == {Cache}
    # one folder of cache files: the paper's rows and the choice study's rows side by side, each report reads its own
    records = Cache(tmp_path / "cache.jsonl").records.values()
    studies = {(r["study"], r["row"]) for r in records if r.get("kind") == "row"}
    assert {("paper", "random"), ("paper", "last_token"), ("choice", "random"), ("choice", "m_attnlrp")} <= studies
    assert "Last token (prior, no model)" in paper_text
    table = metric_table(records)
    cheap = [row for row in choice_rows(choice.methods) if row not in EXACT_ROWS]  # the cheap stage's rows
    assert set(table) == {(d, row) for d in ("wikibio", "curated") for row in cheap}
    choice_text = write_choice_report(choice, tmp_path / "CHOICE.md").read_text()
    assert "| Last token (prior, no model) | 1 |" in choice_text and "| AttnLRP | 1 |" in choice_text


def test_a_registered_method_is_a_row_of_both_configurations(tmp_path):
    @register_method("throwaway_first", title="First token (test)", uses_model=False,
                     evaluation={"throwaway_first": ("First token (test)", {})})
    class FirstToken(Attributor):
        def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
            scores = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
            scores[:, 0] = 1.0
            return scores, None

    try:
        assert "throwaway_first" in [r.label for r in paper_rows(EvalConfig())]
        assert "throwaway_first" in choice_rows() and "throwaway_first" in context_rows()
        model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
        paper, choice = settings(tmp_path, model, tok, parse_methods(None))  # the rows the registry declares
        assert "throwaway_first" in paper.baselines
        run(paper, model, tok)
        choice.methods = None  # the rows the registry declares
        run_choice(choice, "cheap", model, tok, log=None)
        rows = [r for r in Cache(tmp_path / "cache.jsonl").records.values()
                if r.get("kind") == "row" and r["row"] == "throwaway_first"]
        assert {r["study"] for r in rows} == {"paper", "choice"}
        assert all(r["scores"][0] == 1.0 and sum(r["scores"]) == 1.0 for r in rows)
    finally:
        unregister_method("throwaway_first")
