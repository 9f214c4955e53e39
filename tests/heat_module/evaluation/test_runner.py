"""The evaluation end to end on a tiny model (two examples per dataset, fixtures in the shared files' formats),
resumability, and the Fisher rows recombined from stored components."""

from __future__ import annotations

import json

import pytest

import heat_module.evaluation.runner as runner
from heat_module.evaluation import EvalConfig, EvalExample, Evaluator, run
from heat_module.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_end_to_end_report_and_resume(files, tmp_path, monkeypatch, config_factory):
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    cfg = config_factory(files, tmp_path / "out")
    report = run(cfg, model, tok, machine="test machine")
    text = report.read_text()
    for heading in ("Table 2 shape", "Table 1 shape", "Table 5 shape", "Table 7 shape", "attention sink",
                    "Did the paper's claims hold", "Best sink option", "machine: test machine"):
        assert heading in text
    assert "2-core" not in text and "shared" not in text.split("## Faithfulness")[0]  # no machine prose of its own
    records = [json.loads(line) for line in cfg.cache_path.read_text().splitlines()]
    done = {(r["dataset"], r["example"]) for r in records if r["method"] == "__reference__"}
    assert {d for d, _ in done} == {"longra", "tellmewhy", "wikibio", "curated"}
    assert len(done) == 8  # two per dataset
    curated = [r for r in records if r["dataset"] == "curated" and r["method"] == "heat[first]"]
    assert len(curated) == 2 and {"dsa", "f1", "soft_nc", "soft_ns", "aopc"} <= set(curated[0]["metrics"])
    longra = [r for r in records if r["dataset"] == "longra" and r["method"] == "random"]
    assert "distractor_mass" in longra[0]["metrics"]
    sweep = [r for r in records if r["method"] == "heat[keep,b=0]"]
    assert sweep and "soft_nc" not in sweep[0]["metrics"]  # model-based metrics only for sweep_sinks
    assert len(list((tmp_path / "out").glob("heat_figure_*.png"))) == 3

    # resume: nothing is recomputed, the attribution methods are not even called
    def boom(*a, **k):
        raise AssertionError("a finished example was recomputed")

    monkeypatch.setattr(runner.Evaluator, "method", boom)
    monkeypatch.setattr(runner.Scorer, "model_metrics", boom)
    n_lines = len(cfg.cache_path.read_text().splitlines())
    run(config_factory(files, tmp_path / "out", figures=False), model, tok)
    assert len(cfg.cache_path.read_text().splitlines()) == n_lines
    # a HEAT row missing from the cache is recombined from the stored components, without running HEAT again
    lines = [line for line in cfg.cache_path.read_text().splitlines() if '"heat[auto-median]"' not in line]
    cfg.cache_path.write_text("\n".join(lines) + "\n")
    monkeypatch.undo()
    monkeypatch.setattr(runner.Evaluator, "method", boom)
    monkeypatch.setattr(runner.Evaluator, "heat", property(boom))
    run(config_factory(files, tmp_path / "out", figures=False), model, tok)
    redone = [json.loads(line) for line in cfg.cache_path.read_text().splitlines() if '"heat[auto-median]"' in line]
    assert len(redone) == 8 and all(r["extra"].get("components") == "cached" for r in redone)


def test_fisher_rows_reuse_the_stored_components(tmp_path, monkeypatch):
    """``fisher=True`` on a finished example only adds the Fisher-curvature row (M and I come from the cache)."""
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    example = EvalExample("wikibio", "x", tok("the cat sat on the hat and")["input_ids"], -1)
    common = dict(model="tiny", out_dir=str(tmp_path), baselines={}, num_masks=2, progress=False, betas=[0.5])
    assert Evaluator(EvalConfig(**common), model, tok).run_example(example) > 0
    evaluator = Evaluator(EvalConfig(fisher=True, **common), model, tok)
    monkeypatch.setattr(type(evaluator.heat), "components", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert evaluator.run_example(example) == 1
    row = evaluator.cache.records["wikibio/x/heat-fisher[auto]"]
    assert row["extra"]["components"] == "cached" and {"soft_nc", "soft_ns", "aopc"} <= set(row["metrics"])
