"""The package layout: imports run one way, no private names cross modules, the public names resolve, and
the README's layout table names only paths that exist.

The import graph is built from the source with ``ast`` (imports inside functions and ``TYPE_CHECKING`` blocks
count). Package ``__init__.py`` files are re-export files and are not nodes: an import of a name from a package
(``from heat_module.heat import HEAT``) is an edge to the module the ``__init__`` takes that name from.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "heat_module"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


SOURCES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
PACKAGES = {name for name, p in SOURCES.items() if p.name == "__init__.py"}
MODULES = {name for name in SOURCES if name not in PACKAGES}


def _trees() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in SOURCES.items()}


TREES = _trees()


def _absolute(node: ast.ImportFrom, importer: str) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if importer not in PACKAGES:
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _reexport_source(package: str, name: str) -> str | None:
    """The module a package ``__init__`` imports ``name`` from (``None``: defined there or not found)."""
    for node in ast.walk(TREES[package]):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    target = f"{_absolute(node, package)}.{alias.name}"
                    return target if target in SOURCES else _absolute(node, package)
    return None


def _resolve(target: str) -> str | None:
    """A heat_module module for an imported dotted name (following package re-exports), or ``None``."""
    seen = set()
    while target not in MODULES and target not in seen:
        seen.add(target)
        if target in PACKAGES:
            return None  # the package itself (lazy attributes, __version__): no module edge
        head, _, name = target.rpartition(".")
        if head in MODULES:  # a name defined in a module
            return head
        if head in PACKAGES:
            source = _reexport_source(head, name)
            if source is None:
                return None
            target = source
        else:
            return None
    return target if target in MODULES else None


def import_graph() -> dict[str, set[str]]:
    """module -> heat_module modules it imports (anywhere in the file)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for node in ast.walk(TREES[name]):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, name)
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                if not target.startswith("heat_module"):
                    continue
                resolved = _resolve(target)
                if resolved is not None and resolved != name:
                    graph[name].add(resolved)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_find_cycle_detects_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_sees_imports_inside_functions_and_through_reexports():
    graph = import_graph()
    assert "heat_module.heat.windowing" in graph["heat_module.heat.estimator"]
    assert "heat_module.heat.estimator" in graph["heat_module.heat.fit"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "Expected no import cycle among heat_module's modules, got " + " -> ".join(cycle)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_module_imports_a_private_name_of_another():
    bad = []
    for name in MODULES:
        module_aliases: set[str] = set()
        for node in ast.walk(TREES[name]):
            if isinstance(node, ast.ImportFrom):
                base = _absolute(node, name)
                if not base.startswith("heat_module"):
                    continue
                for alias in node.names:
                    if _private(alias.name):
                        bad.append(f"{name}: from {base} import {alias.name}")
                    elif f"{base}.{alias.name}" in SOURCES:
                        module_aliases.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("heat_module") and alias.asname:
                        module_aliases.add(alias.asname)
        for node in ast.walk(TREES[name]):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in module_aliases and _private(node.attr)):
                bad.append(f"{name}: {node.value.id}.{node.attr}")
    assert not bad, f"Expected no private names imported across modules, got {sorted(bad)}"


PUBLIC = [
    ("heat_module", "HEAT"), ("heat_module", "HEATConfig"), ("heat_module", "HEATModule"),
    ("heat_module", "HEATPredictMixin"), ("heat_module", "AttributionWriter"), ("heat_module", "load_model"),
    ("heat_module", "attribute_batch"), ("heat_module", "fit_weights"), ("heat_module", "AttributionResult"),
    ("heat_module", "Cost"),
    ("heat_module.heat", "HEAT"), ("heat_module.heat", "attribute_batch"), ("heat_module.heat", "combine"),
    ("heat_module.heat", "Components"),
    ("heat_module.metrics", "SoftNC"),
    ("heat_module.baselines", "get_method"), ("heat_module.baselines", "register"),
    ("heat_module.baselines", "available_methods"), ("heat_module.baselines", "register_method"),
    ("heat_module.metrics", "available_metrics"), ("heat_module.metrics", "metric_entry"),
    ("heat_module.data", "CuratedDataModule"), ("heat_module.data", "TextPromptsDataModule"),
    ("heat_module.data", "LongRADataModule"), ("heat_module.data", "Example"),
    ("heat_module.attribution.base", "Attributor"), ("heat_module.attribution.registry", "get_method"),
    ("heat_module.lm.loading", "load_model"), ("heat_module.lm.capture", "capture"),
    ("heat_module.lm.forward", "make_forward_fn"), ("heat_module.lightning.module", "HEATModule"),
    ("heat_module.lightning.writer", "AttributionWriter"), ("heat_module.lightning.progress", "HEATProgressBar"),
    ("heat_module.lightning.cli", "HEATCLI"), ("heat_module.cli.main", "main"),
]


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_public_name_resolves(module, name):
    assert getattr(importlib.import_module(module), name) is not None


def test_configs_class_paths_resolve():
    for config in sorted((ROOT / "configs").glob("*.yaml")):
        for path in re.findall(r"class_path:\s*([\w.]+)", config.read_text(encoding="utf-8")):
            module, _, name = path.rpartition(".")
            assert getattr(importlib.import_module(module), name, None) is not None, f"{config.name}: {path}"


def test_readme_layout_table_names_existing_paths():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "Expected a layout table in the README"
    paths = [p for row in rows for p in re.findall(r"`([\w./-]+/?)`", row.split("|")[1])]
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"Expected every path of the README layout table to exist, got missing {missing}"


# ---------------------------------------------------------------------- results stay out of the source tree
def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return out.splitlines()


#: what benchmarks/ may track: scripts, curated summaries and the figures they cite
BENCHMARK_FILE = re.compile(r"benchmarks/([\w-]+\.(py|sh)|RESULTS-[\w-]+\.md|figures/[\w-]+\.png)")


def test_benchmarks_track_only_scripts_summaries_and_cited_figures():
    files = [f for f in tracked_files() if f.startswith("benchmarks/")]
    assert files, "git ls-files listed nothing under benchmarks/"
    assert [f for f in files if not BENCHMARK_FILE.fullmatch(f)] == []
    summaries = "".join((ROOT / f).read_text(encoding="utf-8") for f in files if f.endswith(".md"))
    figures = [f for f in files if f.startswith("benchmarks/figures/")]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert [f for f in figures if f.removeprefix("benchmarks/") not in summaries and f not in readme] == []


def test_no_tracked_file_holds_an_absolute_machine_path():
    pattern = re.compile(r"(?<![\w.])/(work|home|root|Users)/\w")
    offenders = []
    for f in tracked_files():
        path = ROOT / f
        if f == "tests/test_layout.py" or path.suffix in {".png", ".so"} or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        offenders += [f"{f}: {m.group(0)}" for m in pattern.finditer(text)]
    assert offenders == []


def test_no_tracker_numbers_in_code_docs_or_help_texts():
    """Code, docs, help texts and warnings explain themselves in words: no "issue 15" or "issue-13 run"."""
    pattern = re.compile(r"\bissues? #?\d+|\bissue-\d+", re.IGNORECASE)
    roots = ("heat_module/", "heat_kernels/", "csrc/", "docs/", "configs/", "examples/", "benchmarks/", "tests/")
    files = [f for f in tracked_files() if f.startswith(roots) or f in ("README.md", "Makefile", "setup.py")]
    offenders = []
    for f in files:
        path = ROOT / f
        if f == "tests/test_layout.py" or path.suffix in {".png", ".so"} or not path.is_file():
            continue
        for k, line in enumerate(path.read_text(encoding="utf-8", errors="ignore").splitlines(), 1):
            offenders += [f"{f}:{k}: {m.group(0)}" for m in pattern.finditer(line)]
    assert offenders == []


# ---------------------------------------------------------------------- one table of datasets, one cache
EVALUATION = PACKAGE / "evaluation"
DATASET_TABLE = EVALUATION / "datasets.py"


def dataset_name_collections(tree: ast.Module, names: set[str]) -> list[int]:
    """Lines of the tuples, lists, sets and dict displays that hold two or more dataset names (a list of datasets of
    its own)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [k for k in node.keys if k is not None]
        else:
            continue
        found = {e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)} & names
        if len(found) >= 2:
            lines.append(node.lineno)
    return lines


def test_dataset_names_are_declared_in_the_dataset_table_only():
    from heat_module.evaluation.datasets import DATASETS

    names = set(DATASETS)
    assert dataset_name_collections(ast.parse("x = ('wikibio', 'curated')"), names) == [1]  # the check can fail
    files = [p for p in sorted(PACKAGE.rglob("*.py")) if p != DATASET_TABLE]
    files += sorted((ROOT / "benchmarks").glob("eval_*.py"))
    offenders = [f"{p.relative_to(ROOT)}:{line}" for p in files
                 for line in dataset_name_collections(ast.parse(p.read_text(encoding="utf-8")), names)]
    assert offenders == [], f"Expected dataset names to be read from {DATASET_TABLE.relative_to(ROOT)}, got lists"


def test_the_evaluation_has_one_cache():
    """One cache class (``evaluation/cache.py``); no other evaluation module reads or appends JSON lines itself."""
    caches, own_io = [], []
    for path in sorted(EVALUATION.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        caches += [f"{path.name}:{node.name}" for node in ast.walk(tree)
                   if isinstance(node, ast.ClassDef) and node.name.endswith("Cache")]
        if path.name == "cache.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == "json_lines":
                own_io.append(f"{path.name}:{node.lineno} json_lines")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "open"
                    and any(isinstance(a, ast.Constant) and a.value == "a" for a in node.args)):
                own_io.append(f"{path.name}:{node.lineno} open(..., 'a')")
    assert caches == ["cache.py:Cache"]
    assert own_io == []
