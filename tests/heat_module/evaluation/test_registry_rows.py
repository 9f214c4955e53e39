"""The evaluation reads the registries: its default baselines and their titles are the method entries' evaluation
rows, its method names are checked against the method registry, its model-based metrics come from the metric
registry, and a metric added after a run is computed from the cached scores."""

from __future__ import annotations

import json

import pytest

import heat_module.evaluation.pipeline as pipeline
from heat_module.attribution.registry import method_entries
from heat_module.evaluation.config import EvalConfig, baseline_title, default_baselines, parse_methods
from heat_module.evaluation.runner import run
from heat_module.testing import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_default_rows_and_titles_are_the_registry_entries():
    rows = {label: (name, options, title) for name, entry in method_entries().items()
            for label, (title, options) in entry.evaluation.items()}
    assert rows and default_baselines() == {label: (n, o) for label, (n, o, _) in rows.items()}
    assert {"last_token", "recency"} <= set(default_baselines())  # the priors every table shows
    for label, (_, _, title) in rows.items():
        assert baseline_title(label) == title
    assert EvalConfig().baselines == default_baselines()
    assert baseline_title("ig8", ("integrated_gradients", {"steps": 8})) == "Integrated gradients (steps=8)"


def test_method_names_are_checked_against_the_registry():
    assert parse_methods(["ig"]) == {"ig": ("integrated_gradients", {})}
    assert parse_methods(["x=rollout:residual=0.2"]) == {"x": ("attention_rollout", {"residual": 0.2})}
    with pytest.raises(ValueError, match="Expected a method name"):
        parse_methods(["no_such_method"])
    with pytest.raises(ValueError, match="Expected a method name"):
        EvalConfig(baselines={"x": ("no_such_method", {})})
    with pytest.raises(ValueError, match="kind 'model'"):
        EvalConfig(metrics=["dsa"])
    with pytest.raises(ValueError, match="Expected a metric name"):
        EvalConfig(metrics=["no_such_metric"])


def test_a_metric_added_later_comes_from_the_cached_scores(files, tmp_path, monkeypatch, config_factory):
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    kw = dict(datasets=["wikibio"], limit=1, heat=False, figures=False, baselines=parse_methods(["random"]))
    run(config_factory(files, tmp_path / "out", metrics=["soft_nc", "soft_ns", "aopc"], **kw), model, tok)

    def boom(*a, **k):
        raise AssertionError("the method ran again")

    monkeypatch.setattr(pipeline.Methods, "get", boom)
    cfg = config_factory(files, tmp_path / "out", metrics=["soft_nc", "soft_ns", "aopc", "abpc"], **kw)
    report = run(cfg, model, tok)
    rows = {}
    for line in cfg.cache_path.read_text().splitlines():
        rec = json.loads(line)
        rows[rec["key"]] = rec
    row = next(r for r in rows.values() if r.get("method") == "random")
    assert {"soft_nc", "aopc", "abpc"} <= set(row["metrics"])
    assert "ABPC (higher is better):" in report.read_text()
