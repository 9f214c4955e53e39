"""Every public entry point has a short example that runs: a ``>>>`` example in its docstring (the doctests
themselves run in ``make test`` as ``pytest --doctest-modules heat_module heat_kernels``).

The public entry points are the names the packages export (``__all__`` of ``heat_module``, ``heat_kernels`` and
the subpackage ``__init__`` files) and the few public names that live in a module rather than a package
(:data:`MODULE_NAMES`)."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

#: the packages whose ``__all__`` is public API
PACKAGES = ("heat_module", "heat_kernels", "heat_module.baselines", "heat_module.data", "heat_module.evaluation",
            "heat_module.heat", "heat_module.interop", "heat_module.metrics", "heat_module.metrics.functional")
#: public names outside a package ``__all__`` (README "Public API")
MODULE_NAMES = (
    ("heat_module.attribution.base", "Attributor"),
    ("heat_module.attribution.registry", "build"),
    ("heat_module.result", "ResultList"),
    ("heat_module.viz", "results_table"),
    ("heat_module.words", "word_groups"),  # the rule of AttributionResult.aggregate
)


ROOT = Path(__file__).resolve().parents[1]


def public_names() -> list[tuple[str, str]]:
    names = [(package, name) for package in PACKAGES for name in importlib.import_module(package).__all__]
    return sorted(set(names) | set(MODULE_NAMES))


def has_example(obj: object) -> bool:
    return ">>>" in (inspect.getdoc(obj) or "")


def test_has_example_tells_a_documented_name_from_a_bare_one():
    def bare():
        """No example."""

    def shown():
        """>>> 1 + 1
        2
        """

    assert not has_example(bare) and has_example(shown)


def cases() -> list:
    return [pytest.param(m, n, id=f"{m}.{n}") for m, n in public_names()]


@pytest.mark.parametrize(("module", "name"), cases())
def test_public_name_has_an_example(module, name):
    obj = getattr(importlib.import_module(module), name)
    if inspect.ismodule(obj) or not callable(obj):  # a subpackage (its names are listed) or a constant (DATASETS)
        return
    assert has_example(obj), f"Expected a '>>>' example in the docstring of {module}.{name}, got none"


def test_make_test_runs_the_doctests():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe and "--doctest-modules heat_module heat_kernels" in recipe.group(1)
