"""heat_module.registry.Registry: the bookkeeping the method and metric registries share."""

from __future__ import annotations

import sys

import pytest

from heat_module.registry import Registry


def test_names_and_aliases_are_found_case_insensitively_with_dashes_as_underscores():
    reg = Registry("thing", modules=())
    reg.declare("Soft-NC", "entry", aliases=("nc", "Soft Necessity"))
    assert reg.entry("soft_nc") == reg.entry("NC") == "entry"
    assert reg.names() == ["soft_nc"] and reg.aliases() == {"nc": "soft_nc", "soft necessity": "soft_nc"}
    with pytest.raises(KeyError, match=r"Expected a thing name in \['soft_nc'\]"):
        reg.entry("soft_ns")
    with pytest.raises(TypeError, match="Expected a thing name string, got int"):
        reg.entry(3)


def test_an_alias_naming_another_entry_is_refused_and_remove_drops_the_aliases():
    reg = Registry("thing", modules=())
    reg.declare("a", 1, aliases=("x",))
    reg.declare("b", 2)
    with pytest.raises(ValueError, match="Expected alias 'b' of 'c' to name no other thing"):
        reg.check_aliases("c", ("b",))
    with pytest.raises(ValueError, match="got it taken by 'a'"):
        reg.check_aliases("c", ("x",))
    reg.check_aliases("a", ("x",))  # its own alias again: fine
    reg.remove("x")  # by alias
    assert reg.names() == ["b"] and reg.aliases() == {}


def test_declarations_load_once_and_a_failed_import_is_retried(tmp_path, monkeypatch):
    (tmp_path / "declares_one.py").write_text("from registry_under_test import REG\nREG.declare('one', 1)\n")
    (tmp_path / "registry_under_test.py").write_text(
        "from heat_module.registry import Registry\nREG = Registry('thing', ('declares_one', 'missing_module'))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import registry_under_test

    reg = registry_under_test.REG
    with pytest.raises(ModuleNotFoundError):
        reg.names()
    with pytest.raises(ModuleNotFoundError):  # not marked loaded: the next read imports again and fails again
        reg.names()
    reg.modules = ("declares_one",)
    assert reg.names() == ["one"]
    for name in ("declares_one", "registry_under_test"):
        sys.modules.pop(name, None)
