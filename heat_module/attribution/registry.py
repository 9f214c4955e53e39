"""The one registry of attribution methods by name: HEAT, every baseline, and methods users register.

Each method declares its entry ONCE, beside its class, with the :func:`register_method` decorator::

    @register_method("integrated_gradients", aliases=("ig",), title="Integrated gradients",
                     evaluation={"integrated_gradients": ("Integrated gradients (zero baseline)", {"steps": 16})})
    class IntegratedGradients(Attributor): ...

The decorator sets the class's ``name`` (written to ``AttributionResult.method``) and records a
:class:`MethodEntry`: its name, aliases, title, the optional packages it needs, whether it reads the model, and the
rows the evaluation runs by default. Everything that lists methods reads these entries: ``heat attribute --method``,
``heat eval --methods``, ``HEATModule(method=...)``, the evaluation's default rows and titles, and the tests.

Why the entries are read lazily: a declaration runs when its module is imported, and listing methods must not need
an optional dependency. So the registry imports, on first read, the modules of :data:`METHOD_MODULES` (HEAT's
module and every module of the ``heat_module.baselines`` package, found with ``pkgutil``), and every method imports
its optional dependency (captum) only when it is built. Adding a baseline is therefore one file in
``heat_module/baselines/`` (the class with its decorator) plus its test, and no list to edit.

:func:`build` is what ``HEATModule(method=...)`` and the evaluation call: it builds the method with
:meth:`heat_module.attribution.base.Attributor.from_options`, so HEAT takes the ``config`` and a baseline its
``options``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from heat_module.registry import Registry

#: modules whose import declares methods: a module name, or a package whose every module is imported
METHOD_MODULES = ("heat_module.heat.estimator", "heat_module.baselines")

_REGISTRY = Registry("method", METHOD_MODULES)


@dataclass(frozen=True)
class MethodEntry:
    """One registered method.

    Attributes:
        name: the registry name (also ``cls.name`` and ``AttributionResult.method``).
        cls: the class, called as ``cls.from_options(model, tokenizer, config, **options)`` when it has that
            classmethod (every :class:`~heat_module.attribution.base.Attributor`), else ``cls(model, tokenizer,
            **options)``.
        aliases: other names it is found by (``ig``, ``rollout``, ...).
        title: a human name for reports (default: the name).
        needs: optional packages it imports when built (``("captum",)``); listing never imports them.
        uses_model: whether its scores depend on the model (``False`` for priors such as ``last_token``).
        evaluation: the rows ``heat eval`` runs by default: row label -> (title, options). Empty: run only when
            asked (``heat eval --methods <name>``).
        example_options: options that build a working instance on any model (the contract test builds every method
            with them); ``None`` for a method that needs a data file (``inseq``: scores saved by inseq).
    """

    name: str
    cls: Any
    aliases: tuple[str, ...] = ()
    title: str = ""
    needs: tuple[str, ...] = ()
    uses_model: bool = True
    evaluation: Mapping[str, tuple[str, dict]] = field(default_factory=dict)
    example_options: Mapping[str, Any] | None = field(default_factory=dict)


def canonical(name: str) -> str:
    """The lookup form of a name: stripped, lower case, ``-`` as ``_``."""
    return _REGISTRY.canonical(name)


def register_method(name: str, *, aliases: tuple[str, ...] = (), title: str = "", needs: tuple[str, ...] = (),
                    uses_model: bool = True, evaluation: Mapping[str, tuple[str, dict]] | None = None,
                    example_options: Mapping[str, Any] | None = MappingProxyType({})) -> Callable[[type], type]:
    """Class decorator: declare the method ``name`` (fields as :class:`MethodEntry`); sets ``cls.name = name``.

    Registering a name again replaces its entry (a user may override a built-in method); an alias that names
    another registered method is refused.

    Example: see :class:`heat_module.attribution.base.Attributor` for a whole method.

        >>> from heat_module.attribution.base import Attributor
        >>> from heat_module.attribution.registry import unregister_method
        >>> from heat_module.baselines import method_entries, register_method
        >>> @register_method("mine", aliases=("my_method",), title="My method")
        ... class Mine(Attributor): ...
        >>> Mine.name, method_entries()["mine"].title
        ('mine', 'My method')
        >>> unregister_method("mine")
    """
    key = canonical(name)

    def declare(cls: type) -> type:
        _REGISTRY.check_aliases(key, aliases)
        try:
            cls.name = key
        except (AttributeError, TypeError):  # a callable that is not a class: its name stays its own
            pass
        _REGISTRY.declare(key, MethodEntry(key, cls, tuple(canonical(a) for a in aliases), title or key, tuple(needs),
                                           uses_model, dict(evaluation or {}),
                                           None if example_options is None else dict(example_options)), aliases)
        return cls

    return declare


def register(name: str, target: type | str, **fields: Any) -> None:
    """Register ``target`` (a class, or a ``"module:Class"`` path imported now) under ``name`` from outside its
    file, e.g. a user's method; ``fields`` as :func:`register_method`.

    Example:
        >>> from heat_module.attribution.registry import unregister_method
        >>> from heat_module.baselines import get_method, register
        >>> register("occlusion_again", "heat_module.baselines.occlusion:Occlusion")
        >>> get_method("occlusion_again").__name__
        'Occlusion'
        >>> unregister_method("occlusion_again")
    """
    if isinstance(target, str):
        if ":" not in target:
            raise ValueError(f"Expected a class or a 'module:Class' path, got {target!r}")
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    register_method(name, **fields)(target)


def unregister_method(name: str) -> None:
    """Remove the method ``name`` and its aliases (a user's method, or one a test registered)."""
    _REGISTRY.remove(name)


def load_declarations() -> None:
    """Import the modules of :data:`METHOD_MODULES` once, so every built-in method has declared its entry."""
    _REGISTRY.load()


def method_entries() -> dict[str, MethodEntry]:
    """name -> :class:`MethodEntry` of every registered method, sorted by name.

    Example:
        >>> from heat_module.baselines import method_entries
        >>> method_entries()["integrated_gradients"].aliases
        ('ig',)
    """
    return _REGISTRY.entries()


def available_methods() -> list[str]:
    """The registered method names (aliases excluded), sorted.

    Example:
        >>> from heat_module.baselines import available_methods
        >>> {"heat", "attnlrp", "occlusion"} <= set(available_methods())
        True
    """
    return list(method_entries())


def method_aliases() -> dict[str, str]:
    """alias -> registered name."""
    return _REGISTRY.aliases()


def method_entry(name: str) -> MethodEntry:
    """The entry registered under ``name`` or an alias (case-insensitive; ``-`` and ``_`` are equivalent).

    Raises:
        KeyError: naming the known methods when ``name`` is unknown.
    """
    return _REGISTRY.entry(name)


def get_method(name: str) -> type:
    """The method class registered under ``name`` (see :func:`method_entry`).

    Example:
        >>> from heat_module.baselines import get_method
        >>> get_method("ig").__name__  # by name or alias
        'IntegratedGradients'
    """
    return method_entry(name).cls


def build(name: str, model: nn.Module, tokenizer: Any = None, config: Any = None, **options: Any) -> Any:
    """The method registered under ``name``, built for ``model``: ``Class.from_options(model, tokenizer, config,
    **options)`` for an :class:`~heat_module.attribution.base.Attributor`, else ``target(model, tokenizer,
    **options)``. ``"gated:<name>"`` builds the ``gated`` method (M · scores) around the method ``<name>``.

    Raises:
        ValueError: when ``name`` is unknown (the message lists the known methods).
        ImportError: when the method's optional dependency (captum) is missing.

    Example:
        >>> from heat_module.attribution.registry import build
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> occlusion = build("occlusion", tiny_model("llama"), tiny_tokenizer())
        >>> occlusion.attribute("the cat sat on the").method
        'occlusion'
    """
    if isinstance(name, str) and name.strip().lower().startswith("gated:"):  # "gated:attnlrp" = M · AttnLRP
        options = {**options, "method": name.strip().split(":", 1)[1]}
        name = "gated"
    try:
        target = get_method(name)
    except KeyError as e:
        raise ValueError(e.args[0] if e.args else str(e)) from None
    from_options = getattr(target, "from_options", None)
    if from_options is not None:
        return from_options(model, tokenizer, config, **options)
    return target(model, tokenizer, **options)
