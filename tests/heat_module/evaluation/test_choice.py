"""The choice study (is HEAT worth choosing?) end to end on a tiny model: two examples per dataset from the fixtures
in tests/fixtures/, both stages, the report, resuming, its rows equal to the methods' public ``attribute``, and the
decision rule on a hand-made table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import heat_module.evaluation.choice_metrics as choice_metrics
import heat_module.evaluation.pipeline as pipeline
from heat_module.attribution.registry import build
from heat_module.config import HEATConfig
from heat_module.evaluation.choice import CANDIDATES, ROWS, ChoiceConfig, choice_rows, run_choice
from heat_module.evaluation.choice_report import apply_rule, write_choice_report
from heat_module.evaluation.config import parse_methods
from heat_module.evaluation.datasets import load_dataset
from heat_module.evaluation.pipeline import family_scores
from heat_module.heat.combine import Components, combine
from heat_module.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PATHS = {"longra": str(FIXTURES / "longra.jsonl"), "tellmewhy": str(FIXTURES / "prompts.txt"),
         "wikibio": str(FIXTURES / "prompts.txt"), "curated": str(FIXTURES / "curated.json"),
         "lambada": str(FIXTURES / "annotated_lambada.json")}
PRIORS = parse_methods(["last_token", "recency"])  # the registry rows of the recorded runs


def rows_of(cfg) -> list[dict]:
    recs = [json.loads(line) for line in cfg.cache_path.read_text().splitlines()]
    return [r for r in recs if r.get("study") == "choice" and r.get("kind") == "row"]


def test_end_to_end_two_examples_per_dataset(tmp_path, monkeypatch):
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    limits = {d: 2 for d in PATHS}
    cfg = ChoiceConfig(model=(model, tok), paths=PATHS, limits=limits, exact_limits=limits, seeds=(0, 1),
                       abpc_steps=3, bootstrap=20, out_dir=str(tmp_path / "out"), methods=PRIORS)
    run_choice(cfg, "cheap", model, tok, log=lambda m: None)
    run_choice(cfg, "exact", model, tok, log=lambda m: None)
    metrics = rows_of(cfg)
    for d in PATHS:
        examples = {r["example"] for r in metrics if r["dataset"] == d}
        assert len(examples) == 2, d
        rows = {r["row"] for r in metrics if r["dataset"] == d}
        assert rows == set(choice_rows(PRIORS)) == set(ROWS) | {"last_token", "recency"}, d
    bench = next(r for r in metrics if r["dataset"] == "longra" and r["row"] == "heat_exact")
    assert {"soft_nc", "soft_ns", "abpc", "soft_nc_rank", "soft_ns_rank"} <= set(bench["metrics"])
    assert len(bench["metrics"]["soft_nc_seeds"]) == 2
    align = next(r for r in metrics if r["dataset"] == "lambada" and r["row"] == "m_attnlrp")
    assert set(align["metrics"]) == {"dsa", "f1"}
    assert all(r["seconds"] > 0 for r in metrics)  # each row's own attribute (a HEAT row: its attribution)

    report = write_choice_report(cfg, tmp_path / "REPORT.md", command="eval_choice.py --stage report")
    text = report.read_text()
    for part in ("Decision rule", "Outcome of the rule", "Rule not applied", "## LongRA", "## LAMBADA (annotated)",
                 "Paired differences", "Seconds per example", "Configurations compared", "eval_choice.py",
                 "![Faithfulness against cost](REPORT.png)", "`build('gated:attnlrp', model, tok)"):
        assert part in text, part
    assert (tmp_path / "REPORT.png").read_bytes()[:4] == b"\x89PNG"

    # resume: nothing is recomputed
    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(pipeline.Methods, "get", boom)
    monkeypatch.setattr(choice_metrics, "benchmark_metrics", boom)
    monkeypatch.setattr(choice_metrics, "free_metrics", boom)
    n = len(cfg.cache_path.read_text().splitlines())
    run_choice(cfg, "cheap", model, tok, log=lambda m: None)
    run_choice(cfg, "exact", model, tok, log=lambda m: None)
    assert len(cfg.cache_path.read_text().splitlines()) == n


def test_rows_are_the_methods_public_attribute(tmp_path):
    """The gate on AttnLRP, occlusion-KL and HEAT's rows are what ``build(...).attribute`` / ``HEAT(config).
    attribute`` give on the same example, not a formula of our own over cached parts."""
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    cfg = ChoiceConfig(model=(model, tok), datasets=["wikibio"], paths=PATHS, limits={"wikibio": 1}, seeds=(0,),
                       abpc_steps=2, out_dir=str(tmp_path), methods={})
    run_choice(cfg, "cheap", model, tok, log=lambda m: None)
    rows = {r["row"]: r for r in rows_of(cfg)}
    example = next(e for e in load_dataset("wikibio", PATHS["wikibio"], tok) if e.id == rows["attnlrp"]["example"])
    ids = torch.tensor(example.input_ids)
    target = rows["attnlrp"]["target_id"]
    for label, method in (("m_attnlrp", build("gated:attnlrp", model, tok)),
                          ("occlusion_kl", build("occlusion", model, tok, measure="kl")),
                          ("heat_fisher", build("heat", model, tok, config=HEATConfig.preset("fisher")))):
        want = method.attribute(ids, target=target).scores.float()
        torch.testing.assert_close(torch.tensor(rows[label]["scores"]), want, rtol=1e-4, atol=1e-7)


def test_heat_rows_recombine_one_attribution_by_hand():
    rec = {"transition": {"auto": [0.5, 0.25, 0.25]}, "information": [0.01, 0.03, 0.02],
           "curvature": [4.0, 1.0, 0.0]}
    assert torch.allclose(family_scores(rec, ROWS["m_i"]), torch.tensor([0.0025, 0.00375, 0.0025]))
    want = combine(Components(torch.tensor([0.5, 0.25, 0.25]), torch.tensor(rec["curvature"]),
                              torch.tensor(rec["information"]), None), HEATConfig(beta=0.5, gamma=0.5, normalize="sum"))
    assert torch.allclose(family_scores(rec, ROWS["heat_fisher_sum"]), want)
    raw = combine(Components(torch.tensor([0.5, 0.25, 0.25]), torch.tensor(rec["curvature"]),
                             torch.tensor(rec["information"]), None),
                  HEATConfig(beta=0.5, gamma=0.5, normalize="none"))  # as it ran, whatever HEATConfig() says today
    assert torch.allclose(family_scores(rec, ROWS["heat_fisher"]), raw) and not torch.allclose(raw, want)
    assert torch.allclose(family_scores(rec, ROWS["heat_exact_rank"]),
                          torch.tensor([0.5, 0.25, 0.25]) * 0.5 * torch.tensor([1 + 1 / 3, 2 / 3 + 1, 1 / 3 + 2 / 3]))


def test_row_weights_do_not_follow_the_library_default():
    # the cached metrics are keyed by row name: a row's β, γ must stay what they were when it ran, whatever
    # HEATConfig() says today
    for label, row in ROWS.items():
        if label.startswith("heat_"):
            assert (row.recombine.beta, row.recombine.gamma) == (0.5, 0.5), label
    assert (ROWS["m_i"].recombine.beta, ROWS["m_i"].recombine.gamma) == (0.0, 0.5)


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
