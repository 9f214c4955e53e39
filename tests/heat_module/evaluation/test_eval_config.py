"""EvalConfig: validation, data paths from arguments or $HEAT_DATA_DIR (never a built-in path), method specs."""

from __future__ import annotations

import pytest

from heat_module.evaluation.config import EvalConfig, parse_methods
from heat_module.evaluation.datasets import DATA_DIR_ENV


def test_parse_methods_and_errors():
    specs = parse_methods(["occlusion", "ig8=integrated_gradients:steps=8,baseline=mean"])
    assert specs["ig8"] == ("integrated_gradients", {"steps": 8, "baseline": "mean"})
    assert specs["occlusion"][0] == "occlusion"
    with pytest.raises(ValueError, match="limit"):
        EvalConfig(limit=0)


def test_data_paths_come_from_arguments_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    with pytest.raises(ValueError, match=f"Expected the path of dataset 'wikibio'.*--wikibio.*{DATA_DIR_ENV}"):
        EvalConfig().data_path("wikibio")
    assert EvalConfig(paths={"wikibio": "w.txt"}).data_path("wikibio") == "w.txt"
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert EvalConfig().data_path("longra") == str(tmp_path / "reagent/derived/longra_*.jsonl")
    assert EvalConfig(paths={"curated": "c.json"}).data_path("curated") == "c.json"
