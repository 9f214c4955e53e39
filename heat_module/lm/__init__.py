"""Model access: loading (:mod:`~heat_module.lm.loading`), the capturing attention function and the prefix cache
(:mod:`~heat_module.lm.capture`), and the forward helpers every method and metric uses (:mod:`~heat_module.lm.forward`).

Nothing here knows about HEAT's equations; everything above imports from here, never the other way round.
"""
