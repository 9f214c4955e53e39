"""Each entry of the method and metric registries reaches the CLI, ``HEATModule`` and the evaluation with no second
list: the choices, defaults and columns there are read from the registries, and the modules that list what to run
hold no literal of a registered name.

Exempt from the literal check: ``"heat"`` (HEAT's own name, which the code that runs HEAT's components names on
purpose), the paper-shaped report tables and the decision rule of the choice study (fixed column sets, named where
they are defined), and the choice study's own rows (its fixed comparison, named where its rule is written; its other
rows come from the registry).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from heat_module.attribution.registry import available_methods, method_aliases, method_entries
from heat_module.metrics.registry import available_metrics, metric_entries

ROOT = Path(__file__).resolve().parents[1]
#: the modules that say which methods / metrics run or are offered
LISTING_MODULES = sorted([*(ROOT / "heat_module" / "cli").glob("*.py"), *(ROOT / "heat_module" / "lightning").glob(
    "*.py"), *(ROOT / "heat_module" / "evaluation" / name
               for name in ("config.py", "pipeline.py", "runner.py", "variants.py")),
    ROOT / "heat_module" / "baselines" / "__init__.py", ROOT / "heat_module" / "metrics" / "__init__.py"])


def string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("path", LISTING_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_second_list_of_registered_names(path):
    names = (set(available_methods()) | set(method_aliases()) | set(available_metrics())) - {"heat"}
    found = [f"{path.relative_to(ROOT)}:{line}: {value!r}" for line, value in string_constants(path) if value in names]
    assert not found, f"Expected names of the registries to be read from them, got literals {found}"


def test_every_method_reaches_the_cli_the_module_and_the_evaluation(tmp_path):
    from heat_module.cli.attribute import build_parser as attribute_parser
    from heat_module.cli.eval import build_parser as eval_parser
    from heat_module.evaluation.config import EvalConfig, default_baselines, parse_methods
    from heat_module.lightning.module import get_attributor
    from heat_module.testing import tiny_model, tiny_tokenizer

    names = available_methods()
    choices = next(a for a in attribute_parser()._actions if a.dest == "method").choices
    assert list(choices) == names
    help_text = eval_parser().format_help().replace("\n", " ").replace(" ", "")
    assert all(name in help_text for name in names)
    assert {label: spec[0] for label, spec in parse_methods(names).items()} == {n: n for n in names}
    rows = {label for entry in method_entries().values() for label in entry.evaluation}
    assert set(default_baselines()) == rows == set(EvalConfig().baselines)
    model, tok = tiny_model("llama", seed=0), tiny_tokenizer()
    for name, entry in method_entries().items():  # HEATModule builds its method through the same registry
        if entry.example_options is None or entry.needs:
            continue  # a data file / an optional package: covered by tests/heat_module/attribution/test_registry.py
        assert get_attributor(name, model, tok, None, **entry.example_options).name == name


def test_every_metric_reaches_the_module_and_the_evaluation():
    from heat_module.cli.eval import build_parser as eval_parser
    from heat_module.evaluation.config import EvalConfig
    from heat_module.lightning.module import BATCH_INPUTS, build_test_metrics
    from heat_module.testing import grad_x_input_fn, tiny_model

    model = tiny_model("llama", seed=0)
    carried = [n for n, e in metric_entries().items() if e.inputs in BATCH_INPUTS]
    built = build_test_metrics(carried, model, {"sensitivity": {"attribute_fn": grad_x_input_fn(model)}})
    assert list(built) == carried
    model_based = [n for n, e in metric_entries().items() if e.inputs == "model"]
    assert list(next(a for a in eval_parser()._actions if a.dest == "metrics").choices) == model_based
    assert EvalConfig(metrics=model_based).metrics == model_based
    refused = [n for n in available_metrics() if n not in carried]
    for name in refused:  # what a batch cannot feed is refused by name, with the reason
        with pytest.raises(ValueError, match=name):
            build_test_metrics([name], model)
