"""The context study (the default chosen again over the context, beside trivial baselines): end to end on a tiny
model, the rows from components, the context metrics leaving the final token alone, the pooled paired difference
and the decision rule on hand-made tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import heat_module.data.evidence as evidence
import heat_module.evaluation.choice as choice
import heat_module.evaluation.choice_metrics as choice_metrics
import heat_module.evaluation.pipeline as pipeline
from heat_module.config import HEATConfig
from heat_module.evaluation.choice import (
    CONTEXT_CANDIDATES,
    CONTEXT_ROWS,
    HEAT_CANDIDATES,
    ChoiceConfig,
    context_rows,
    run_context,
)
from heat_module.evaluation.choice_metrics import RowCacheForward, context_metrics_batch
from heat_module.evaluation.choice_report import apply_context_rule, pooled_difference, write_context_report
from heat_module.evaluation.datasets import EvalExample
from heat_module.evaluation.pipeline import family_scores
from heat_module.heat.combine import Components, combine
from heat_module.lm.forward import embed, make_forward_fn
from heat_module.testing import tiny_model, tiny_tokenizer
from tests.heat_module.evaluation.test_choice import PATHS, PRIORS  # the same fixture files

pytestmark = pytest.mark.usefixtures("one_thread")


def test_end_to_end_two_examples_per_dataset(tmp_path, monkeypatch):
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    # a random tiny model answers no generated item: keep them all, as if it did
    monkeypatch.setattr(evidence, "keep_answered", lambda items, m, t: list(items))
    datasets = ["longra", "tellmewhy", "wikibio", "evidence", "curated", "lambada"]
    cfg = ChoiceConfig(model=(model, tok), datasets=datasets, paths=PATHS, limits={d: 2 for d in datasets},
                       seeds=(0, 1), abpc_steps=3, bootstrap=20, held_apart=1, out_dir=str(tmp_path / "out"),
                       methods=PRIORS)
    run_context(cfg, model, tok, log=lambda m: None)
    recs = [json.loads(line) for line in cfg.cache_path.read_text().splitlines()]
    fit = next(r for r in recs if r["key"] == "fit/priors")
    assert 0 < fit["rate"] < 1 and len(fit["held"]) == 2 and fit["profile"]
    assert {h.split("/")[0] for h in fit["held"]} == {"longra", "evidence"}
    metrics = [r for r in recs if r.get("study") == "context" and r.get("kind") == "row"]
    evaluated = {(r["dataset"], r["example"]) for r in metrics}
    assert not {tuple(h.split("/", 1)) for h in fit["held"]} & evaluated  # held apart: never evaluated
    for d in datasets:
        assert len({r["example"] for r in metrics if r["dataset"] == d}) == 2, d
        assert {r["row"] for r in metrics if r["dataset"] == d} == set(CONTEXT_ROWS) == set(context_rows(PRIORS)), d
    ev = next(r for r in metrics if r["dataset"] == "evidence" and r["row"] == "m_i")
    assert {"soft_nc", "soft_ns", "abpc_deletion", "recall_evidence", "recall_evidence_noquery",
            "recall_answer"} <= set(ev["metrics"]) and len(ev["metrics"]["soft_nc_seeds"]) == 2
    assert set(next(r for r in metrics if r["dataset"] == "curated")["metrics"]) == {"dsa", "f1"}
    recency = next(r for r in metrics if r["row"] == "recency")  # the fitted rate, through the registry's build
    assert recency["scores"][-2] / recency["scores"][-1] == pytest.approx(fit["rate"], rel=1e-4)

    text = write_context_report(cfg, tmp_path / "R.md", command="eval_choice.py --stage context-report",
                                previous="# An earlier report\n").read_text()
    for part in ("Decision rule", "Outcome of the rule", "Rule not applied", "position-controlled",
                 "minus `last_token`", "minus `recency`", "## Evidence (generated)", "## LAMBADA (annotated)",
                 "recency rate", "eval_choice.py --stage context-report", "# An earlier report"):
        assert part in text, part
    assert text.index("Decision rule") < text.index("# An earlier report")  # newest first

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(pipeline.Methods, "get", boom)
    monkeypatch.setattr(choice_metrics, "context_metrics_batch", boom)
    monkeypatch.setattr(choice, "fit_priors", boom)
    n = len(cfg.cache_path.read_text().splitlines())
    run_context(cfg, model, tok, log=lambda m: None)
    assert len(cfg.cache_path.read_text().splitlines()) == n


def test_heat_rows_recombine_one_attribution_by_hand():
    rec = {"transition": {"auto": [0.5, 0.25, 0.25]}, "information": [0.01, 0.03, 0.02],
           "curvature": [4.0, 1.0, 0.0]}
    assert torch.allclose(family_scores(rec, CONTEXT_ROWS["m_i"]), torch.tensor([0.005, 0.0075, 0.005]))
    assert torch.allclose(family_scores(rec, CONTEXT_ROWS["m_i_rank"]), torch.tensor([0.5 / 3, 0.25, 0.25 * 2 / 3]))
    want = combine(Components(torch.tensor([0.5, 0.25, 0.25]), torch.tensor(rec["curvature"]),
                              torch.tensor(rec["information"]), None), HEATConfig(beta=0.5, gamma=0.5, normalize="sum"))
    assert torch.allclose(family_scores(rec, CONTEXT_ROWS["heat_fisher_sum"]), want)
    assert CONTEXT_ROWS["m_attnlrp"].method == "gated:attnlrp" and CONTEXT_ROWS["recency"].family is None
    assert set(HEAT_CANDIDATES) <= set(CONTEXT_CANDIDATES)


def context_metrics(forward, scores, x, example, target, seeds=(0,)):
    return context_metrics_batch(forward, scores[None], x, example, target, seeds, 3, 32)[0]


def test_context_metrics_never_touch_the_final_token():
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    ids = torch.tensor(tok("the cat sat on the mat and then")["input_ids"])
    x = embed(model, ids[None]).detach()
    example = EvalExample("longra", "0", ids.tolist(), -1)
    scores = torch.linspace(0.1, 1.0, len(ids))
    high_last = scores.clone()
    high_last[-1] = 100.0  # all mass on the last token: over the context nothing changes
    a = context_metrics(RowCacheForward(model), scores, x, example, 3)
    b = context_metrics(RowCacheForward(model), high_last, x, example, 3)
    for key in ("soft_nc", "soft_ns", "abpc_deletion"):
        assert a[key] == pytest.approx(b[key], abs=1e-6), key
    changed = scores.clone()
    changed[0] = 100.0  # a context token: the values move
    c = context_metrics(RowCacheForward(model), changed, x, example, 3)
    assert (c["soft_nc"], c["soft_ns"]) != pytest.approx((a["soft_nc"], a["soft_ns"]), abs=1e-6)


def test_row_cache_forward_tells_masks_apart():
    calls = []
    f = RowCacheForward(None, fn=lambda x, m: calls.append(len(x)) or x.sum(-1))
    x = torch.ones(1, 3, 2)
    f(x, torch.tensor([[1, 1, 1]]))
    f(x, torch.tensor([[1, 1, 1]]))
    f(x, torch.tensor([[0, 1, 1]]))
    assert len(calls) == 2
    f.clear()
    f(x, torch.tensor([[1, 1, 1]]))
    assert len(calls) == 3


def test_pooled_difference_weighs_datasets_equally():
    table = {("a", "x"): {str(k): {"m": 1.0} for k in range(10)}, ("a", "y"): {str(k): {"m": 0.0} for k in range(10)},
             ("b", "x"): {"0": {"m": 3.0}, "1": {"m": 3.0}}, ("b", "y"): {"0": {"m": 0.0}, "1": {"m": 0.0},
                                                                        "2": {"m": 9.0}}}
    (est, lo, hi), counts = pooled_difference(table, "x", "y", "m", ("a", "b"), 200)
    assert est == pytest.approx(2.0) and lo == pytest.approx(2.0) and hi == pytest.approx(2.0)  # not (10 + 6) / 12
    assert counts == {"a": 10, "b": 2}  # example "2" only y has: left out
    (est, _, _), _ = pooled_difference(table, "x", None, "m", ("a", "b"), 0)
    assert est == pytest.approx(2.0)


def _table(values: dict[str, float], seconds: dict[str, float], n: int = 15, noise: float = 0.01) -> dict:
    rng = np.random.default_rng(0)
    table = {}
    for d in ("longra", "tellmewhy", "wikibio", "evidence"):
        for r, v in values.items():
            table[(d, r)] = {}
            for k in range(n):
                e = float(rng.normal(0, noise))
                vals = {"soft_nc": v + e, "soft_ns": v + e, "abpc_deletion": v + e, "seconds": seconds.get(r, 0.0)}
                if d == "evidence":
                    vals["recall_evidence"] = v + e
                table[(d, r)][str(k)] = vals
    return table


def test_rule_eligibility_cost_and_ranking():
    values = {r: 0.5 for r in CONTEXT_CANDIDATES} | {"last_token": 0.2, "recency": 0.3, "position_prior": 0.3,
                                                    "attnlrp": 0.6, "m_i": 0.7, "heat_fisher": 0.9,
                                                    "occlusion_kl": 0.25}
    seconds = {r: 2.0 for r in CONTEXT_CANDIDATES} | {"attnlrp": 1.0, "heat_fisher": 30.0}
    out = apply_context_rule(_table(values, seconds), 200)
    assert out["applicable"]
    assert "heat_fisher" not in out["eligible"]  # best values, but 30× AttnLRP
    assert "occlusion_kl" not in out["eligible"]  # below recency everywhere
    assert out["winner"] == "m_i" and out["heat_winner"] == "m_i" and out["heat_beats_attnlrp"]
    assert out["score"]["m_i"] == 1.0 and out["score"]["attnlrp"] == 2.0
    # a HEAT configuration that is eligible but ranks below AttnLRP
    values |= {"m_i": 0.5}
    out = apply_context_rule(_table(values, seconds), 200)
    assert out["winner"] == "attnlrp" and out["heat_winner"] in HEAT_CANDIDATES and not out["heat_beats_attnlrp"]
    # too few examples: not applied
    assert not apply_context_rule(_table(values, seconds, n=5), 50)["applicable"]


def test_rule_needs_three_of_four_metrics_resolved():
    values = {r: 0.5 for r in CONTEXT_CANDIDATES} | {"last_token": 0.2, "recency": 0.3, "position_prior": 0.3}
    table = _table(values, {r: 1.0 for r in CONTEXT_CANDIDATES})
    for d in ("longra", "tellmewhy", "wikibio", "evidence"):  # m_i ties recency on two metrics: 2 of 4 only
        for v in table[(d, "m_i")].values():
            v["soft_ns"] = v["abpc_deletion"] = 0.3
    out = apply_context_rule(table, 200)
    assert out["beats_both"]["m_i"] == ["soft_nc", "recall_evidence"] and "m_i" not in out["eligible"]
    assert "m_i_rank" in out["eligible"]


def test_context_table_keeps_only_examples_every_row_has():
    from heat_module.evaluation.choice_report import context_table

    # example "b" was interrupted before m_i
    recs = [{"key": f"longra/{e}/context/{row}", "study": "context", "kind": "row", "dataset": "longra",
             "example": e, "row": row, "metrics": {"soft_nc": 1.0}, "seconds": 1.0}
            for e in ("a", "b") for row in CONTEXT_ROWS if not (e == "b" and row == "m_i")]
    table = context_table(recs)
    assert all(set(table[("longra", row)]) == {"a"} for row in CONTEXT_ROWS)


def test_batched_metrics_equal_one_by_one():
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    ids = torch.tensor(tok("the cat sat on the mat and then")["input_ids"])
    x = embed(model, ids[None]).detach()
    example = EvalExample("evidence", "0", ids.tolist(), -1, gold=[1, 2],
                          metadata={"query_tokens": [5, 6], "answer_tokens": [2]})
    settings = ((0, 1), 3, 7)  # mask seeds, ABPC steps, batch size
    scores = torch.rand(3, len(ids), generator=torch.Generator().manual_seed(0))
    cached = RowCacheForward(model)
    batch = context_metrics_batch(cached, scores, x, example, 3, *settings)
    for i in range(3):
        alone = context_metrics_batch(make_forward_fn(model), scores[i:i + 1], x, example, 3, *settings)[0]
        for key, value in alone.items():
            assert batch[i][key] == pytest.approx(value, abs=1e-5), (i, key)
    assert batch[0]["soft_nc"] != pytest.approx(batch[1]["soft_nc"], abs=1e-6)


def test_context_report_keeps_the_earlier_report_below_once(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "eval_choice", Path(__file__).resolve().parents[3] / "benchmarks" / "eval_choice.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "out"
    out.mkdir()
    (out / "cache.jsonl").write_text(json.dumps({"key": "fit/priors", "rate": 0.5, "profile": [0.5, 0.5],
                                                 "held": ["longra/x"]}) + "\n")
    report = tmp_path / "R.md"
    report.write_text("# The earlier report\n")
    for _ in range(2):  # a second report replaces the first and keeps the earlier one below, once
        assert module.main(["--stage", "context-report", "--out-dir", str(out), "--report", str(report),
                            "--no-notes"]) == 0
    text = report.read_text()
    assert text.startswith(module.CONTEXT_TITLE) and text.count("# The earlier report") == 1
    assert text.count(module.CONTEXT_TITLE) == 1
