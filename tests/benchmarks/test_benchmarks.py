"""Every benchmark script runs end to end at a tiny size and prints what its report is built from.

The figures themselves are not checked (timings are machine- and load-dependent); what is checked is that each
script still runs against the current package, prints its ratio lines, and that the quantities that must agree
between the compared modes (metric values, merged tables) do.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


def run_script(name: str, *args: str, timeout: int = 600) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )
    assert proc.returncode == 0, f"{name} {args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def ratio_lines(out: str) -> dict[str, float]:
    """``ratio,n,threads,value,target`` rows printed after the blank line of the kernel benchmarks."""
    table = out.split("ratio,n,threads,value,target", 1)
    assert len(table) == 2, f"Expected the ratio table in the output, got:\n{out[-2000:]}"
    values = {}
    for line in table[1].strip().splitlines():
        name, n, _threads, value, _target = line.split(",")
        values[f"{name}@{n}"] = float(value)
    return values


def test_bench_rollout_tiny():
    out = run_script("bench_rollout_phi.py", "--n", "64", "--layers", "2", "--loop-max-n", "64", "--threads", "1")
    assert out.startswith("# machine: ")
    ratios = ratio_lines(out)
    assert any(k.startswith("cpu_peak_mem_reference_over_sdpa_steady") for k in ratios)
    assert all(v >= 0 for v in ratios.values())  # memory at n = 64 may be below the 0.1 MiB resolution


def test_bench_first_order_attention_tiny():
    """Both first-order attention paths run and give the same gradients on a causal mask."""
    import json

    out = run_script("bench_first_order_attention.py", "--lengths", "40", "--cotangents", "2")
    row = json.loads(out.strip().splitlines()[-1])
    assert row["n"] == 40 and row["causal_kernel_forward_s"] >= 0 and row["blockwise_backward_per_cotangent_s"] >= 0
    assert row["max_gradient_difference"] < 1e-5


def test_bench_block_norm_tiny():
    out = run_script("bench_block_norm.py", "--n", "32", "--probes", "1", "--threads", "1")
    rows = [line for line in out.splitlines() if line.startswith("block_norm,cpu,")]
    assert {line.split(",")[2] for line in rows} >= {"reference"}
    ratio_lines(out)


@pytest.mark.slow
def test_bench_metrics_tiny(tmp_path):
    path = tmp_path / "metrics.csv"
    out = run_script("bench_metrics.py", "--examples", "2", "--num-masks", "1", "--update-batch", "2",
                     "--batch-size", "4", "--ceiling-rows", "2", "--threads", "1", "--csv", str(path))  # fmt: skip
    assert re.search(r"batching ceiling \(2 copies of one \d+-token example\)", out)
    diff = float(re.search(r"over metric values ([0-9.e+-]+)", out).group(1))
    assert diff < 1e-4  # both modes compute the same metric
    (row,) = list(csv.DictReader(path.open()))
    assert int(row["rows"]) == 2 * (2 + 2 * 2 * 1) and float(row["speedup"]) > 0


@pytest.mark.slow
def test_bench_information_and_curvature_tiny():
    out = run_script("bench_information.py", "--lengths", "8", "--batch-size", "4")
    assert re.search(r"^8,[0-9.]+,[0-9.]+,[0-9.]+x,", out, re.M)
    # n = 8, m = 1, 2 tokens, both baselines (their loop on our objective, their code path); asserts equal values
    out = run_script("bench_curvature.py", "--baselines", "authors", "authors_code", "--configs", "8:1:2")
    row = r",[0-9.]+,[0-9.]+,[0-9.]+x,[0-9.]+-[0-9.]+,[0-9.e+-]+,True$"  # seconds, ratio, its range, diff, allclose
    for base in ("authors", "authors_code"):
        assert re.search(rf"^8,1,2,{base}{row}", out, re.M), out[-2000:]
    out = run_script("bench_curvature.py", "--modes", "--configs", "8:2:2")  # our two HVP modes, same values
    assert "baseline_s,forward_over_reverse_s" in out, out[-2000:]
    assert re.search(rf"^8,2,2,reverse_over_reverse{row}", out, re.M), out[-2000:]
    out = run_script("bench_curvature.py", "--floor", "--configs", "8:2")  # the pieces of one HVP and the ceiling
    ceiling = float(re.search(r"ceiling=([0-9.]+)", out).group(1))
    assert re.search(r"full_hvp_s=[0-9.e+-]+, full_batch=\d+", out) and ceiling > 0, out[-2000:]


@pytest.mark.slow
def test_bench_fisher_information_split_and_summarize(tmp_path):
    """Two processes over contexts [0, 1) and [1, 2) (``--first-context``), then ``--summarize`` over both CSVs:
    the merged means count each context once (context 1 ran twice), the exact variant is the reference, and the
    variants with exact I agree with it."""
    reagent = tmp_path / "reagent"
    prompts = [line for line in (ROOT / "tests/fixtures/prompts.txt").read_text().splitlines() if line.strip()]
    for rel in ("derived/longra_gpt2.jsonl", "data/benchmark/tellmewhy2.txt", "data/benchmark/wikitext.txt"):
        path = reagent / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".jsonl"):
            path.write_text("".join(f'{{"prompt": "{p}"}}\n' for p in prompts))
        else:
            path.write_text("\n".join(prompts) + "\n")
    common = ["--lengths", "8", "--contexts", "2", "--exact-lengths", "8", "--fisher-topk", "4",
              "--data-root", str(tmp_path)]
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    run_script("bench_fisher_information.py", *common, "--csv", str(first))
    run_script("bench_fisher_information.py", *common, "--first-context", "1", "--csv", str(second))
    rows = list(csv.DictReader(first.open()))
    assert {r["context"] for r in rows} == {"0", "1"} and {r["context"] for r in csv.DictReader(second.open())} == {"1"}
    assert all(r["ref"] == "exact" for r in rows)
    assert all(float(r["rho_I"]) == pytest.approx(1.0) for r in rows if r["variant"] != "fast")
    out = run_script("bench_fisher_information.py", "--summarize", str(first), str(second))
    assert re.search(r"^8,fast,2,", out, re.M) and re.search(r"^8,exact,2,", out, re.M), out
    assert "ratio,Fisher-S HEAT FE / n at n=8," in out


@pytest.mark.slow
def test_bench_variants_tiny_and_summarize(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    data = str(ROOT / "tests/fixtures/prompts.jsonl")
    common = ["--lengths", "12", "--prompts", "1", "--rank", "4", "--oversample", "2", "--ls-layers", "2",
              "--fisher-topk", "4", "--data", data, "--field", "prompt"]  # fmt: skip
    run_script("bench_variants.py", *common, "--variants", "full", "Fisher", "--csv", str(first))
    run_script("bench_variants.py", *common[:2], "--prompts", "2", "--first-context", "1", *common[4:],
               "--variants", "full", "LS", "--csv", str(second))  # context 1 only
    with second.open() as f:
        assert {(r["context"], r["variant"]) for r in csv.DictReader(f)} == {("1", "full"), ("1", "LS(2)")}
    out = run_script("bench_variants.py", "--summarize", str(first), str(second))
    table = [line for line in out.splitlines() if line.startswith("| ")]
    names = [line.split("|")[1].strip() for line in table[1:]]  # table[0] is the header
    assert names == ["full", "Fisher(4)", "LS(2)"]  # full first, then the order the runs wrote
    assert "n = 12: 2 contexts" in out  # the full rows of both runs
    full = table[1].split("|")
    assert full[2].strip() == "2" and full[4].strip() == "1.00×" and full[10].strip() == "1.000 ± 0.000"


def test_bench_precision_tiny(tmp_path, tiny_tok):
    from heat_module.testing import tiny_model

    tiny_model("llama", seed=0).save_pretrained(tmp_path)
    tiny_tok.save_pretrained(tmp_path)
    out = run_script("bench_precision.py", "--model", str(tmp_path), "--prompts", "2")
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith(("| bf16", "| fp16"))]
    assert len(rows) == 6, out
    assert all(row[5].strip() == "float32" for row in rows), out  # fp32 scores from half-precision models
