"""The transition gate M of HEAT applied to any method's scores: score_i = M[i] · inner_i.

M (:mod:`heat_module.heat.transition`, the gate of eq. 5) comes from ONE captured no-grad forward of the context;
the inner method (any registry name: ``attnlrp``, ``occlusion``, ...) runs as usual. The product shows what the gate
itself adds to a method: ``M·AttnLRP`` (``"gated:attnlrp"``), ``M·occlusion`` (``"gated:occlusion"``); with
``occlusion`` at ``measure="kl"`` and the zero mask, ``M·occlusion`` is HEAT with β = 0 (M·I).

Scores stay raw (M sums to one over the real tokens, so a uniform inner score s gives M·s). HEAT's attention is
installed for the captured forward only and removed after it, so the model is left as it was; hybrid decoders are
refused (M is the rollout over attention).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import build, register_method
from heat_module.config import SINKS, check_choice
from heat_module.heat.transition import transition_from_captures
from heat_module.lm.anatomy import check_attention_only
from heat_module.lm.capture import capture, check_supported, install, uninstall
from heat_module.lm.forward import next_token_logits


@register_method("gated", title="M · scores (gated)")
class Gated(Attributor):
    """M · (an inner method's scores).

    Options:
        method: the registry name of the inner method (default ``"attnlrp"``).
        sink: the sink rule of M (``HEATConfig.sink`` choices; default ``"auto"``).
        method_options: the inner method's options (dict).

    Extras per example: the inner method's extras, and ``gate_seconds`` / ``inner_seconds``.
    """

    def __init__(self, model: nn.Module, tokenizer: object | None = None, method: str = "attnlrp",
                 sink: str = "auto", method_options: dict | None = None, **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        check_choice("sink", sink, SINKS)
        if not isinstance(method, str) or method.lower().startswith("gated"):
            raise ValueError(f"Expected the inner method to be a registry name other than 'gated', got {method!r}")
        self.method, self.sink, self.method_options = method, sink, dict(method_options or {})
        check_supported(model)
        check_attention_only(model, "the gate M")
        self.inner = build(method, model, tokenizer, **self.method_options)

    def options(self) -> dict:
        return {"method": self.method, "sink": self.sink, "method_options": self.method_options}

    def gate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, n) M of a left-padded batch (inputs_embeds (B, n, d), attention_mask (B, n)) from one forward."""
        install(self.model)
        try:
            with torch.no_grad(), capture() as captures:
                next_token_logits(self.model, inputs_embeds, attention_mask)
        finally:
            uninstall(self.model)
        padded = bool((attention_mask == 0).any())
        return transition_from_captures(captures, attention_mask if padded else None, sink=self.sink)

    def _scores(self, input_ids, attention_mask, inputs_embeds, targets):
        t0 = time.perf_counter()
        inner = self.inner.attribute_batch(input_ids, attention_mask, [int(t) for t in targets])
        t1 = time.perf_counter()
        m = self.gate(inputs_embeds, attention_mask)
        t2 = time.perf_counter()
        scores = torch.zeros(input_ids.shape, dtype=torch.float32, device=inputs_embeds.device)
        extras = []
        for b, res in enumerate(inner):
            start = int((attention_mask[b] == 0).sum())
            scores[b, start:] = res.scores.to(scores.device).float() * m[b, start:].float()
            extras.append({**{k: v for k, v in res.extra.items() if isinstance(v, (int, float))},
                           "inner_seconds": (t1 - t0) / len(inner), "gate_seconds": (t2 - t1) / len(inner)})
        return scores, extras
