"""The ``heat`` command line: dispatch, ``heat predict|test --config ...`` (LightningCLI) end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from heat_module.cli.main import main
from heat_module.lightning.cli import run_lightning

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A tiny Llama and its tokenizer saved as an HF folder, so configs can name it by path."""
    from heat_module.testing import tiny_model, tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny_llama")
    tiny_model("llama", seed=0).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def lines(folder: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(folder.glob("predictions-rank*.jsonl")) for line in
            p.read_text().splitlines()]


def test_usage_and_unknown_subcommand(capsys):
    assert main([]) == 0 and "heat predict --config" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
    assert ("Expected a subcommand in ['predict', 'test', 'attribute', 'fit-weights', 'eval'], got 'frobnicate'"
            in capsys.readouterr().err)


@pytest.mark.parametrize("name", ["smollm2_curated", "smollm2_longra", "smollm2_prompts", "gpu_template"])
def test_every_config_parses(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--config", str(ROOT / "configs" / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "inference_mode: false" in out and "heat_module.AttributionWriter" in out


def test_predict_with_a_config_and_output_dir_override(tiny_dir, tmp_path):
    out = tmp_path / "out"
    code = main(["predict", "--config", str(ROOT / "configs" / "smollm2_prompts.yaml"), "--model.model", str(tiny_dir),
                 "--model.config.beta", "0.0", "--model.config.curvature", "null",  # M·I: no S (estimator)
                 "--data.init_args.tokenizer", str(tiny_dir),
                 "--data.init_args.prompts", str(FIXTURES / "prompts.txt"), "--output_dir", str(out)])
    assert code == 0
    assert [row["id"] for row in lines(out)] == ["0", "1", "2", "3"]


def test_test_logs_metrics_on_the_curated_fixture(tiny_dir):
    cli = run_lightning(["test", "--config", str(ROOT / "configs" / "smollm2_curated.yaml"), "--model.model",
                         str(tiny_dir), "--data.init_args.tokenizer", str(tiny_dir), "--data.init_args.path",
                         str(FIXTURES / "curated.json"), "--data.init_args.limit", "2",
                         "--model.metrics", "[dsa, f1]", "--trainer.enable_progress_bar", "false",
                         "--trainer.callbacks", "[]"])
    logged = cli.trainer.callback_metrics
    assert float(logged["test/num_examples"]) == 2 and {"test/dsa", "test/f1"} <= set(logged)


@pytest.mark.slow
def test_heat_predict_smollm2_curated_config_end_to_end(tmp_path):
    """``heat predict --config configs/smollm2_curated.yaml`` as a subprocess on 2 examples of the shared file."""
    from heat_module.data.readers import resolve_path

    try:
        resolve_path("../shared/data/heta/heta_qa_dataset_100_unique.json")
    except FileNotFoundError:
        pytest.skip("shared curated file not available")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "heat_module.cli", "predict", "--config", "configs/smollm2_curated.yaml",
           "--output_dir", str(tmp_path), "--data.init_args.limit", "2"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = lines(tmp_path)
    assert [row["id"] for row in rows] == ["heta_qa_00000", "heta_qa_00001"]
    assert all(len(row["scores"]) == len(row["tokens"]) > 40 for row in rows)
    assert rows[0]["target"] == " leaves"


@pytest.mark.parametrize("command", ["attribute", "fit-weights", "eval"])
def test_plain_subcommands_are_wired(command, capsys):
    from heat_module.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"heat {command}" in capsys.readouterr().out
