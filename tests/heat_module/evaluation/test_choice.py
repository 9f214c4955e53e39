"""The choice study (is HEAT worth choosing?) end to end on a tiny model: two examples per dataset from the fixtures in
tests/fixtures/, both stages, the report, resuming, and the decision rule on a hand-made table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import heat_module.evaluation.choice as choice
from heat_module.config import HEATConfig
from heat_module.evaluation.choice import CANDIDATES, PRIOR_ROWS, ROWS, ChoiceConfig, row_scores, run_choice
from heat_module.evaluation.choice_report import apply_rule, write_choice_report
from heat_module.heat.combine import Components, combine
from heat_module.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PATHS = {"longra": str(FIXTURES / "longra.jsonl"), "tellmewhy": str(FIXTURES / "prompts.txt"),
         "wikibio": str(FIXTURES / "prompts.txt"), "curated": str(FIXTURES / "curated.json"),
         "lambada": str(FIXTURES / "annotated_lambada.json")}


def test_end_to_end_two_examples_per_dataset(tmp_path, monkeypatch):
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    limits = {d: 2 for d in PATHS}
    cfg = ChoiceConfig(model=(model, tok), paths=PATHS, limits=limits, exact_limits=limits, seeds=(0, 1),
                       abpc_steps=3, bootstrap=20, out_dir=str(tmp_path / "out"))
    run_choice(cfg, "cheap", model, tok, log=lambda m: None)
    run_choice(cfg, "exact", model, tok, log=lambda m: None)
    recs = [json.loads(line) for line in cfg.cache_path.read_text().splitlines()]
    metrics = [r for r in recs if "/metrics/" in r["key"]]
    for d in PATHS:
        examples = {r["example"] for r in metrics if r["dataset"] == d}
        assert len(examples) == 2, d
        rows = {r["row"] for r in metrics if r["dataset"] == d}
        assert rows == set(ROWS), d
    bench = next(r for r in metrics if r["dataset"] == "longra" and r["row"] == "heat_exact")
    assert {"soft_nc", "soft_ns", "abpc", "soft_nc_rank", "soft_ns_rank"} <= set(bench["metrics"])
    assert len(bench["metrics"]["soft_nc_seeds"]) == 2
    align = next(r for r in metrics if r["dataset"] == "lambada" and r["row"] == "m_attnlrp")
    assert set(align["metrics"]) == {"dsa", "f1"}
    assert all(r["seconds"] > 0 for r in metrics if r["row"] not in ("random", *PRIOR_ROWS))
    assert {"last_token", "recency"} <= set(PRIOR_ROWS)  # the registry's model-free priors, shown beside every row

    report = write_choice_report(cfg, tmp_path / "REPORT.md", command="eval_choice.py --stage report")
    text = report.read_text()
    for part in ("Decision rule", "Outcome of the rule", "Rule not applied", "## LongRA", "## LAMBADA (annotated)",
                 "Paired differences", "Seconds per example", "Configurations compared", "eval_choice.py",
                 "![Faithfulness against cost](REPORT.png)"):
        assert part in text, part
    assert (tmp_path / "REPORT.png").read_bytes()[:4] == b"\x89PNG"

    # resume: nothing is recomputed
    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(choice, "components", boom)
    monkeypatch.setattr(choice, "model_metrics", boom)
    monkeypatch.setattr(choice, "free_metrics", boom)
    n = len(cfg.cache_path.read_text().splitlines())
    run_choice(cfg, "cheap", model, tok, log=lambda m: None)
    run_choice(cfg, "exact", model, tok, log=lambda m: None)
    assert len(cfg.cache_path.read_text().splitlines()) == n


def test_rows_from_components_by_hand():
    comp = {"M": [0.5, 0.25, 0.25], "I": [0.01, 0.03, 0.02], "A": [1.0, -2.0, 3.0], "SF": [4.0, 1.0, 0.0],
            "SE": [40.0, 10.0, 0.0], "target": 1}
    assert torch.allclose(row_scores("m_attnlrp", comp), torch.tensor([0.5, -0.5, 0.75]))
    assert torch.allclose(row_scores("m_i", comp), torch.tensor([0.0025, 0.00375, 0.0025]))
    want = combine(Components(torch.tensor(comp["M"]), torch.tensor(comp["SF"]), torch.tensor(comp["I"]), None),
                   HEATConfig(beta=0.5, gamma=0.5, normalize="sum"))
    assert torch.allclose(row_scores("heat_fisher_sum", comp), want)
    raw = combine(Components(torch.tensor(comp["M"]), torch.tensor(comp["SF"]), torch.tensor(comp["I"]), None),
                  HEATConfig(beta=0.5, gamma=0.5, normalize="none"))  # as it ran, whatever HEATConfig() says today
    assert torch.allclose(row_scores("heat_fisher", comp), raw) and not torch.allclose(raw, want)
    assert torch.allclose(row_scores("heat_exact_rank", comp),
                          torch.tensor([0.5, 0.25, 0.25]) * 0.5 * torch.tensor([1 + 1 / 3, 2 / 3 + 1, 1 / 3 + 2 / 3]))


def test_row_weights_do_not_follow_the_library_default():
    # the cached metrics are keyed by row name: a row's β, γ must stay what they were when it ran, whatever
    # HEATConfig() says today
    for row, (_, _, cfg) in ROWS.items():
        if row.startswith("heat_"):
            assert (cfg["beta"], cfg["gamma"]) == (0.5, 0.5), row
    assert (ROWS["m_i"][2]["beta"], ROWS["m_i"][2]["gamma"]) == (0.0, 0.5)


def test_rule_picks_the_best_mean_rank_among_affordable_candidates():
    def rows(values: dict[str, float], seconds: dict[str, float], n: int = 15):
        table = {}
        for d in ("longra", "tellmewhy", "wikibio"):
            for r, v in values.items():
                table[(d, r)] = {str(k): {"soft_nc": v, "soft_ns": v, "abpc": v, "seconds": seconds[r]}
                                 for k in range(n)}
        return table

    values = {r: 0.1 for r in CANDIDATES} | {"attnlrp": 0.0, "heat_fisher_sum": 0.3, "heat_exact_rank": 0.5}
    seconds = {r: 2.0 for r in CANDIDATES} | {"attnlrp": 1.0, "heat_exact_rank": 30.0}
    out = apply_rule(rows(values, seconds))
    assert out["applicable"] and out["winner"] == "heat_fisher_sum"  # heat_exact_rank is better but costs 30×
    assert "heat_exact_rank" not in out["eligible"] and out["mean_rank"]["heat_fisher_sum"] == 1.0
    short = apply_rule(rows(values, seconds, n=3))
    assert not short["applicable"] and "not enough examples" in short["reason"]


def test_paired_lines_by_hand():
    from heat_module.evaluation.choice_report import paired_lines

    # m_i beats attnlrp by exactly 0.25 on Soft-NC on the 4 examples both have (a 5th only m_i has is left out)
    table = {("longra", "m_i"): {str(k): {"soft_nc": 0.5 + k, "seconds": 1.0} for k in range(5)},
             ("longra", "attnlrp"): {str(k): {"soft_nc": 0.25 + k, "seconds": 1.0} for k in range(4)}}
    text = "\n".join(paired_lines(table, "m_i", ("attnlrp",), 50, "the winner"))
    assert "## Paired differences: the winner minus each method" in text
    row = next(line for line in text.splitlines() if line.startswith("| AttnLRP |"))
    assert row.split("|")[2].strip() == "4" and row.split("|")[3].strip().startswith("0.250 [0.250, 0.250]")
    assert "TellMeWhy" not in text  # no rows there: no table


def test_benchmark_means_and_cost_figure_by_hand(tmp_path):
    from heat_module.evaluation.choice_report import benchmark_means, draw_cost_figure

    def vals(x):
        return {"soft_nc": x, "soft_ns": x / 2, "abpc": x / 4, "seconds": 1.0}

    # m_i: LongRA mean of (0.2, 0.4) = 0.3, TellMeWhy 0.6, WikiBio 0.9 -> 0.6; attnlrp 0.1 everywhere
    table = {("longra", "m_i"): {"a": vals(0.2), "b": vals(0.4)}, ("tellmewhy", "m_i"): {"c": vals(0.6)},
             ("wikibio", "m_i"): {"d": vals(0.9)}}
    for d in ("longra", "tellmewhy", "wikibio"):
        table[(d, "attnlrp")] = {"x": vals(0.1)}
    table[("longra", "occlusion_kl")] = {"a": vals(0.5)}  # one benchmark only: no mean
    means = benchmark_means(table)
    assert means["m_i"]["soft_nc"] == pytest.approx(0.6) and means["m_i"]["abpc"] == pytest.approx(0.15)
    assert means["attnlrp"]["soft_ns"] == pytest.approx(0.05) and means["occlusion_kl"]["soft_nc"] != means[
        "occlusion_kl"]["soft_nc"]  # NaN
    path = draw_cost_figure(table, {"m_i": 8.0, "attnlrp": 1.0, "occlusion_kl": 8.0}, tmp_path / "f.png", "m_i")
    assert path == tmp_path / "f.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert draw_cost_figure(table, {"attnlrp": 0.0}, tmp_path / "g.png") is None  # no cost ratio: nothing drawn
    assert not (tmp_path / "g.png").exists()
