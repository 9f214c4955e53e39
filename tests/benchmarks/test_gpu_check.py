"""The GPU check driver: its FLOP count against a brute-force count, and a dry run at the tiniest size.

The dry run goes through ``benchmarks/gpu_check.sh --device cpu --tiny`` with a subset of its steps
(``GPU_CHECK_ONLY``); the full dry run (every step, ~4 minutes here) is ``make gpu-check-dry``.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_driver():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks/gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def brute_force_pass_flops(s: dict, n: int, start: int) -> float:
    """Matmul FLOPs of a causal pass over positions start..n-1 on a cached prefix, position by position."""
    total = 0.0
    for t in range(start, n):
        for _ in range(s["L"]):
            total += 2 * s["d"] * s["H"] * s["dh"]  # q
            total += 2 * 2 * s["d"] * s["Hkv"] * s["dh"]  # k, v
            total += 2 * (t + 1) * s["dh"] * s["H"] * 2  # QKᵀ and AV over t + 1 keys
            total += 2 * s["H"] * s["dh"] * s["d"]  # o
            total += 2 * s["c"] * s["d"] * s["ff"]  # MLP
    return total + 2 * s["d"] * s["V"]  # the LM head at the last position


def test_flop_counts_match_a_position_by_position_count():
    g = load_driver()
    for name in ("tiny-gptj", "tiny-llama"):
        s = g.SHAPES[name]
        n = 9
        assert g.full_pass_flops(s, n) == pytest.approx(brute_force_pass_flops(s, n, 0), rel=1e-12)
        floor = sum(brute_force_pass_flops(s, n, i) for i in range(n))
        assert g.exact_information_floor(s, n) == pytest.approx(floor, rel=1e-12)
    # the figure: exact I alone at the GPT-J-6B shape, n = 512, is about 1.5-1.6 PFLOP
    assert 1.4e15 < g.exact_information_floor(g.SHAPES["gptj-6b"], 512) < 1.7e15


@pytest.mark.slow
def test_dry_run_of_the_driver(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), GPU_CHECK_WORKDIR=str(tmp_path / "work"), PYTHON=sys.executable,
               OMP_NUM_THREADS="1", GPU_CHECK_ONLY="ceilings prepare equality throughput_gptj")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--device", "cpu", "--tiny"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "==== GPU check summary" in proc.stdout
    assert (tmp_path / "out/gpu_check.log").read_text().strip()
    with (tmp_path / "out/gpu_check.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    rc = {r["case"]: r["value"] for r in rows if r["step"] == "step" and r["metric"] == "rc"}
    assert rc == {"ceilings": "0", "prepare": "0", "equality": "0", "throughput_gptj": "0"}
    assert not [r for r in rows if r["verdict"].startswith("FAIL")]
    assert sum(r["verdict"].startswith("PASS") for r in rows) >= 10
    variants = {r["case"].rsplit("_", 1)[1] for r in rows if r["step"] == "throughput" and r["metric"] == "seconds"}
    assert variants == {"M*I", "Fisher", "full", "LR(8)+WIN(8)"}
    assert (tmp_path / "work/model/config.json").exists() and (tmp_path / "work/predict.yaml").exists()


def test_out_of_memory_retry_halves_what_the_config_batches(tmp_path, monkeypatch):
    """M·I (no S) retries with smaller batches of masked runs; eq. 5 with S halves the HVP chunks; a run that never
    fits is a recorded FAIL."""
    import torch

    import heat_module as hm
    from heat_module.heat.i_exact import ExactI
    from heat_module.heat.s_exact import ExactS
    from heat_module.testing import tiny_model

    driver = load_driver()
    model = tiny_model("llama")
    ids = torch.arange(3, 9)
    original = hm.HEAT.attribute

    def fits_at_two(self, *args, **kwargs):  # out of memory unless the chunk that matters is at most 2
        size = self.config.curvature.hvp_chunk_size if self.config.computes_s else self.config.information.batch_size
        if size > 2:
            raise torch.OutOfMemoryError("fake")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(hm.HEAT, "attribute", fits_at_two)
    rec = driver.Recorder(tmp_path, "throughput")
    mi = hm.HEATConfig.preset("mi", information=ExactI(batch_size=8))
    res, seconds, knob, chunk = driver.timed_attribution(model, mi, ids[:4], ids, "cpu", rec, "mi")
    assert (knob, chunk) == ("batch_size", 2) and seconds > 0 and res.curvature is None
    full = hm.HEATConfig.preset("exact", curvature=ExactS(hvp_chunk_size=4))
    _, _, knob, chunk = driver.timed_attribution(model, full, ids[:4], ids, "cpu", rec, "full")
    assert (knob, chunk) == ("hvp_chunk_size", 2)
    monkeypatch.setattr(hm.HEAT, "attribute", lambda self, *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError()))
    assert driver.timed_attribution(model, hm.HEATConfig(), ids[:4], ids, "cpu", rec, "never") is None
    rows = [(r["case"], r["metric"], r["value"]) for r in csv.DictReader((tmp_path / driver.CSV_NAME).open())]
    assert rows[:3] == [("mi", "oom_retry_batch_size", "4"), ("mi", "oom_retry_batch_size", "2"),
                        ("full", "oom_retry_hvp_chunk_size", "2")]
    assert ("never", "error", "OutOfMemoryError") in rows
