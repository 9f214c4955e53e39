"""The one contract every attribution method implements (:class:`~heat_module.attribution.base.Attributor`) and the
one registry of methods by name (:mod:`~heat_module.attribution.registry`)."""
