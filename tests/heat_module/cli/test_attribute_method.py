"""``heat attribute --method``: any method of the registry (by name or alias), its options, and the refusal of HEAT's
flags with another method."""

from __future__ import annotations

import json

import pytest

from heat_module.attribution.registry import available_methods
from heat_module.cli.attribute import build_parser
from heat_module.cli.attribute import main as attribute_command
from tests.heat_module.cli.test_attribute import tiny_folder  # noqa: F401  (the fixture)


def test_method_choices_are_the_registry():
    action = next(a for a in build_parser()._actions if a.dest == "method")
    assert list(action.choices) == available_methods()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--text", "x", "--method", "no_such_method"])


@pytest.mark.usefixtures("one_thread")
def test_a_baseline_by_alias_with_options(capsys, tiny_folder):  # noqa: F811
    base = ["--model", tiny_folder, "--text", "the cat sat on the old", "--json"]
    assert attribute_command(base + ["--method", "ig", "--option", "steps=4", "--option", "baseline=mean"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["method"] == "integrated_gradients" and data["config"]["steps"] == 4
    assert data["config"]["baseline"] == "mean" and len(data["scores"]) == 6
    assert attribute_command(base + ["--method", "random", "--beta", "0.5"]) == 2
    assert "Expected no HEAT options with --method random, got ['--beta']" in capsys.readouterr().err
    assert attribute_command(base + ["--option", "steps=4"]) == 2
    assert "Expected no --option with --method heat" in capsys.readouterr().err
