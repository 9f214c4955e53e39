"""What the registry of methods (:mod:`heat_module.attribution.registry`) and the registry of metrics
(:mod:`heat_module.metrics.registry`) share: entries by name and alias, names compared case-insensitively with ``-``
as ``_``, and the declarations read lazily, by importing the modules that declare them on the first read.

Each registry keeps its own entry type and decorator; this class holds only the bookkeeping.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any


def canonical(name: str, kind: str = "name") -> str:
    """The lookup form of a name: stripped, lower case, ``-`` as ``_``.

    >>> canonical(" Integrated-Gradients ")
    'integrated_gradients'
    """
    if not isinstance(name, str):
        raise TypeError(f"Expected a {kind} string, got {type(name).__name__}")
    return name.strip().lower().replace("-", "_")


class Registry:
    """Entries by name and alias, declared by importing ``modules`` on the first read.

    Args:
        kind: what an entry is, for messages (``"method"``, ``"metric"``).
        modules: module names whose import declares entries; a package's every module is imported too.

    >>> registry = Registry("colour", modules=())
    >>> registry.declare("dark-red", {"hex": "#8b0000"}, aliases=("maroon",))
    >>> registry.entry("Maroon"), registry.names()
    ({'hex': '#8b0000'}, ['dark_red'])
    """

    def __init__(self, kind: str, modules: tuple[str, ...]) -> None:
        self.kind = kind
        self.modules = modules
        self._entries: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}  # alias -> name
        self._loaded = False

    def canonical(self, name: str) -> str:
        return canonical(name, f"{self.kind} name")

    def check_aliases(self, key: str, aliases: tuple[str, ...]) -> None:
        """Refuse an alias of ``key`` that names another entry."""
        key = self.canonical(key)
        for alias in aliases:
            owner = self._aliases.get(self.canonical(alias))
            if self.canonical(alias) in self._entries or (owner is not None and owner != key):
                raise ValueError(f"Expected alias {alias!r} of {key!r} to name no other {self.kind}, got it taken by "
                                 f"{owner or self.canonical(alias)!r}")

    def declare(self, key: str, entry: Any, aliases: tuple[str, ...] = ()) -> None:
        """Store ``entry`` under the canonical ``key`` (replacing an entry of that name) and its ``aliases``."""
        key = self.canonical(key)
        self._entries[key] = entry
        for alias in aliases:
            self._aliases[self.canonical(alias)] = key

    def remove(self, name: str) -> None:
        """Remove the entry ``name`` (or the one an alias names) and its aliases."""
        key = self.key(name)
        del self._entries[key]
        for alias in [a for a, owner in self._aliases.items() if owner == key]:
            del self._aliases[alias]

    def load(self) -> None:
        """Import every module of ``modules`` once, so every built-in entry is declared."""
        if self._loaded:
            return
        self._loaded = True
        try:  # set first: a module that reads the registry while it is imported sees what is declared so far
            for name in self.modules:
                module = importlib.import_module(name)
                for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
                    importlib.import_module(f"{name}.{info.name}")
        except BaseException:
            self._loaded = False  # a failed import is retried (and raises again) on the next read
            raise

    def entries(self) -> dict[str, Any]:
        """name -> entry, sorted by name."""
        self.load()
        return dict(sorted(self._entries.items()))

    def names(self) -> list[str]:
        """The registered names (aliases excluded), sorted."""
        return list(self.entries())

    def aliases(self) -> dict[str, str]:
        """alias -> registered name, sorted by alias."""
        self.load()
        return dict(sorted(self._aliases.items()))

    def key(self, name: str) -> str:
        """The registered name of ``name`` or an alias; ``KeyError`` naming the known ones."""
        self.load()
        key = self.canonical(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            raise KeyError(f"Expected a {self.kind} name in {self.names()} (or an alias in {sorted(self._aliases)}), "
                           f"got {name!r}")
        return key

    def entry(self, name: str) -> Any:
        """The entry of ``name`` or an alias (see :meth:`key`)."""
        return self._entries[self.key(name)]
