"""Baseline attribution methods behind HEAT's contract, one file per method, each registered beside its class.

Every method is a class ``Method(model, tokenizer=None, **options)`` with ``attribute(text_or_ids, target=None)``
and ``attribute_batch(input_ids, attention_mask, target_ids)`` returning :class:`heat_module.AttributionResult`
(``method=`` set). Scores are for the next-token target y with g = log P(y | X) and stay raw. Every method
subclasses :class:`heat_module.attribution.base.Attributor` and declares its registry entry with
:func:`~heat_module.attribution.registry.register_method`; ``available_methods()`` lists them (with HEAT),
``method_entries()`` gives their titles, aliases and default evaluation rows. Adding a baseline is one file here
plus its test.
"""

from heat_module.attribution.registry import (
    available_methods,
    get_method,
    method_entries,
    register,
    register_method,
)

__all__ = ["available_methods", "get_method", "method_entries", "register", "register_method"]
