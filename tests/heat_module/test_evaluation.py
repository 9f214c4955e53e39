"""The evaluation end to end on a tiny model (two examples per dataset, fixtures in the shared files' formats),
resumability, the sink recombination, and the statistics helpers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from heat_module.evaluation import (
    EvalConfig,
    bootstrap_ci,
    eval_command,
    gate_options,
    log_ratio_ci,
    parse_methods,
    run,
    select_examples,
    sink_transitions,
    variants,
)
from heat_module.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

CURATED = [
    {"id": f"c{k}", "narrative_segment": narrative, "sciq_support_segment": support,
     "question": "why ?", "answer": answer, "target_first_answer_token": answer,
     "input_text": f"{narrative} <s> {support} <s> Question: why ?",
     "important_words": words, "important_word_indices_in_sciq_support": indices}
    for k, (narrative, support, answer, words, indices) in enumerate([
        ("the dog ran in the park .", "the plant made light under the sun .", "plant", ["plant", "light"], [1, 3]),
        ("she lost her hat in the wind .", "water and light made the tree green .", "tree", ["water", "tree"], [0, 6]),
        ("he read a book .", "the sun gave light to the leaves .", "sun", ["sun", "leaves"], [1, 6]),
    ])
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    prompt = "the cat sat on the hat . ( the dog ran in the park ) . i saw the"
    tokens = prompt.split(" ")
    start, end = tokens.index("("), tokens.index(")")
    rows = [{"id": k, "prompt": p, "target_text": " cat", "input_text": [t if i == 0 else " " + t for i, t in
                                                                          enumerate(p.split(" "))],
             "distractor_start": start, "distractor_end": end}
            for k, p in enumerate([prompt, prompt.replace("i saw", "we saw"), prompt.replace("cat sat", "dog sat")])]
    (root / "longra_a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "longra_b.jsonl").write_text(json.dumps(rows[0]) + "\n")  # a duplicate across files
    (root / "tellmewhy.txt").write_text("the cat was happy . why was the cat\nhe ate the bread . why did he eat\n"
                                        "she read a book . why\n")
    (root / "wikibio.txt").write_text("paris is the capital of\nthe river is cold and\nthe old house\n")
    (root / "curated.json").write_text(json.dumps({"examples": CURATED}))
    return root


def make_config(files, out_dir, **kw) -> EvalConfig:
    defaults = dict(model="tiny", longra=str(files / "longra_*.jsonl"), tellmewhy=str(files / "tellmewhy.txt"),
                    wikibio=str(files / "wikibio.txt"), curated=str(files / "curated.json"), limit=2, num_masks=2,
                    bootstrap=50, out_dir=str(out_dir), progress=False, betas=[0.0, 0.5, 1.0],
                    sweep_sinks=["first"], baselines=parse_methods(["attention_rollout", "gradient_norm", "random",
                                                                     "ig=integrated_gradients:steps=4"]))
    defaults.update(kw)
    return EvalConfig(**defaults)


def test_end_to_end_report_and_resume(files, tmp_path, monkeypatch):
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    cfg = make_config(files, tmp_path / "out")
    report = run(cfg, model, tok)
    text = report.read_text()
    for heading in ("Table 2 shape", "Table 1 shape", "Table 5 shape", "Table 7 shape", "attention sink",
                    "Did the paper's claims hold", "Best sink option"):
        assert heading in text
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
    import heat_module.evaluation as ev

    def boom(*a, **k):
        raise AssertionError("a finished example was recomputed")

    monkeypatch.setattr(ev.Evaluator, "method", boom)
    monkeypatch.setattr(ev.Scorer, "model_metrics", boom)
    n_lines = len(cfg.cache_path.read_text().splitlines())
    run(make_config(files, tmp_path / "out", figures=False), model, tok)
    assert len(cfg.cache_path.read_text().splitlines()) == n_lines
    # a HEAT row missing from the cache is recombined from the stored components, without running HEAT again
    lines = [line for line in cfg.cache_path.read_text().splitlines() if '"heat[auto-median]"' not in line]
    cfg.cache_path.write_text("\n".join(lines) + "\n")
    monkeypatch.undo()
    monkeypatch.setattr(ev.Evaluator, "method", boom)
    monkeypatch.setattr(ev.Evaluator, "heat", property(boom))
    run(make_config(files, tmp_path / "out", figures=False), model, tok)
    redone = [json.loads(line) for line in cfg.cache_path.read_text().splitlines() if '"heat[auto-median]"' in line]
    assert len(redone) == 8 and all(r["extra"].get("components") == "cached" for r in redone)


def test_heat_rows_are_recombined_from_one_computation(files, tmp_path):
    """The sink options of M come from one rollout; 'keep' equals the transition module's own M."""
    from heat_module.heat import HEAT
    from heat_module.transition import transition_from_captures

    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    heat = HEAT(model, tok)
    ids = torch.tensor(tok("the cat sat on the red hat and")["input_ids"])
    _, captures = heat._forward(ids[None], torch.ones_like(ids)[None])
    m, diag = sink_transitions(captures)
    for sink in ("keep", "first", "auto"):
        torch.testing.assert_close(m[sink], transition_from_captures(captures, sink=sink)[0])
    assert m["first"][0] == 0 and 0 <= diag["first_share"] <= 1
    gates = gate_options(torch.tensor([0.7, 0.1, 0.2, 0.0]), [0])
    torch.testing.assert_close(gates["auto"], torch.tensor([0.0, 1 / 3, 2 / 3, 0.0]))
    torch.testing.assert_close(gates["auto-median"], torch.tensor([0.1, 0.1, 0.2, 0.0]) / 0.4)
    torch.testing.assert_close(gate_options(torch.tensor([0.5, 0.5]), [])["auto"], torch.tensor([0.5, 0.5]))
    keys = [v.key for v in variants(make_config(files, tmp_path))]
    assert "heat[keep]" in keys and "heat-transition[auto]" in keys and "heat[first,b=0]" in keys
    assert len(keys) == len(set(keys))


def test_selection_is_prefix_stable():
    from heat_module.evaluation import EvalExample

    examples = [EvalExample("d", str(k), [1] * (3 + k % 5), -1) for k in range(30)]
    small, large = select_examples(examples, 5, 6, seed=0), select_examples(examples, 10, 6, seed=0)
    assert [e.id for e in large[:5]] == [e.id for e in small]
    assert all(len(e.input_ids) <= 6 for e in large)


def test_bootstrap_helpers():
    rng = np.random.default_rng(0)
    values = rng.normal(1.0, 0.1, size=200)
    est, lo, hi = bootstrap_ci(values, 500, seed=0)
    assert est == pytest.approx(values.mean()) and lo < est < hi and hi - lo < 0.05
    est, lo, hi = log_ratio_ci([2.0, 2.2, 1.8], [1.0, 1.1, 0.9], 200, seed=0)
    assert est == pytest.approx(math.log(2.0))
    assert math.isnan(bootstrap_ci([1.0], 10, 0)[1])


def test_parse_methods_and_cli_errors():
    specs = parse_methods(["occlusion", "ig8=integrated_gradients:steps=8,baseline=mean"])
    assert specs["ig8"] == ("integrated_gradients", {"steps": 8, "baseline": "mean"})
    assert specs["occlusion"][0] == "occlusion"
    with pytest.raises(SystemExit):
        eval_command(["--datasets", "nope"])
    with pytest.raises(ValueError, match="limit"):
        EvalConfig(limit=0)


def test_fisher_rows_reuse_the_stored_components(tmp_path, monkeypatch):
    """``fisher=True`` on a finished example only adds the Fisher-curvature row (M and I come from the cache)."""
    pytest.importorskip("heat_module.scalable")
    import heat_module.evaluation as ev

    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    example = ev.EvalExample("wikibio", "x", tok("the cat sat on the hat and")["input_ids"], -1)
    common = dict(model="tiny", out_dir=str(tmp_path), baselines={}, num_masks=2, progress=False, betas=[0.5])
    assert ev.Evaluator(EvalConfig(**common), model, tok).run_example(example) > 0
    evaluator = ev.Evaluator(EvalConfig(fisher=True, **common), model, tok)
    monkeypatch.setattr(type(evaluator.heat), "components", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    assert evaluator.run_example(example) == 1
    row = evaluator.cache.records["wikibio/x/heat-fisher[auto]"]
    assert row["extra"]["components"] == "cached" and {"soft_nc", "soft_ns", "aopc"} <= set(row["metrics"])
