"""The paper-table configuration end to end on a tiny model (two examples per dataset, fixtures in the shared files'
formats), resumability, and HEAT rows recombined from the cached attribution."""

from __future__ import annotations

import json

import pytest

import heat_module.evaluation.pipeline as pipeline
import heat_module.evaluation.runner as runner
from heat_module.evaluation import Cache, EvalConfig, EvalExample, paper_study, run
from heat_module.evaluation.pipeline import run_example
from heat_module.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def records(cfg) -> list[dict]:
    return [json.loads(line) for line in cfg.cache_path.read_text().splitlines()]


def test_end_to_end_report_and_resume(files, tmp_path, monkeypatch, config_factory):
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    cfg = config_factory(files, tmp_path / "out")
    report = run(cfg, model, tok, machine="test machine")
    text = report.read_text()
    for heading in ("Table 2 shape", "Table 1 shape", "Table 5 shape", "Table 7 shape", "attention sink",
                    "Did the paper's claims hold", "Best sink option", "machine: test machine", "Over 8 examples"):
        assert heading in text
    assert "2-core" not in text and "shared" not in text.split("## Faithfulness")[0]  # no machine prose of its own
    recs = records(cfg)
    done = {(r["dataset"], r["example"]) for r in recs if r.get("kind") == "reference"}
    assert {d for d, _ in done} == {"longra", "tellmewhy", "wikibio", "curated"}
    assert len(done) == 8  # two per dataset
    curated = [r for r in recs if r["dataset"] == "curated" and r.get("method") == "heat[first]"]
    assert len(curated) == 2 and {"dsa", "f1", "soft_nc", "soft_ns", "aopc"} <= set(curated[0]["metrics"])
    longra = [r for r in recs if r["dataset"] == "longra" and r.get("method") == "random"]
    assert "distractor_mass" in longra[0]["metrics"]
    sweep = [r for r in recs if r.get("method") == "heat[keep,b=0]"]
    assert sweep and "soft_nc" not in sweep[0]["metrics"]  # model-based metrics only for sweep_sinks
    assert len([r for r in recs if r.get("kind") == "attribution"]) == 8  # HEAT ran once per example
    assert len(list((tmp_path / "out").glob("heat_figure_*.png"))) == 3

    # resume: nothing is recomputed, the attribution methods are not even built
    def boom(*a, **k):
        raise AssertionError("a finished example was recomputed")

    monkeypatch.setattr(pipeline.Methods, "get", boom)
    monkeypatch.setattr(runner.PaperScorer, "model_metrics", boom)
    n_lines = len(cfg.cache_path.read_text().splitlines())
    run(config_factory(files, tmp_path / "out", figures=False), model, tok)
    assert len(cfg.cache_path.read_text().splitlines()) == n_lines
    # a HEAT row missing from the cache is recombined from the cached attribution, without running HEAT again
    lines = [line for line in cfg.cache_path.read_text().splitlines() if '"heat[auto-median]"' not in line]
    cfg.cache_path.write_text("\n".join(lines) + "\n")
    monkeypatch.undo()
    monkeypatch.setattr(pipeline.Methods, "get", boom)
    run(config_factory(files, tmp_path / "out", figures=False), model, tok)
    redone = [json.loads(line) for line in cfg.cache_path.read_text().splitlines() if '"heat[auto-median]"' in line]
    assert len(redone) == 8 and all(r["extra"].get("attribution") == "cached" for r in redone)


def test_fisher_rows_are_a_family_of_their_own(tmp_path, monkeypatch):
    """``fisher=True`` on a finished example adds only the Fisher-curvature row: one more HEAT attribution (its own
    configuration), every other row stays cached."""
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    example = EvalExample("wikibio", "x", tok("the cat sat on the hat and")["input_ids"], -1)
    common = dict(model=(model, tok), out_dir=str(tmp_path), baselines={}, num_masks=2, progress=False,
                  betas=[0.5])
    cfg = EvalConfig(**common)
    study = paper_study(cfg)
    cache = Cache(cfg.cache_path, cfg.fingerprint())
    methods = pipeline.Methods(model, tok, 0)
    assert run_example(study, study.rows, methods, cache, example) > 0
    built = []
    real = pipeline.Methods.get
    monkeypatch.setattr(pipeline.Methods, "get", lambda self, m, o: built.append(o["config"]) or real(self, m, o))
    study = paper_study(EvalConfig(fisher=True, **common))
    assert run_example(study, study.rows, methods, cache, example) == 1
    assert [c.curvature.name for c in built if c.ablation == "full"] == ["fisher"]
    row = cache.records["wikibio/x/paper/heat-fisher[auto]"]
    assert row["extra"]["attribution"] == "computed" and {"soft_nc", "soft_ns", "aopc"} <= set(row["metrics"])
    methods.close()
