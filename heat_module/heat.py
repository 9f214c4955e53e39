"""HEAT — Hessian-enhanced attribution (paper eq. 5, Algorithm 1).

Attr_i = M[i]·(β·S_i + γ·I_i) (+ α·‖∇_{x_i} g‖₁ for HEAT+FO), with M the target-conditioned transition gate
(:mod:`heat_module.transition`), S the Hessian sensitivity (:mod:`heat_module.curvature`) and I the KL information
(:mod:`heat_module.information`). Scores stay raw; normalising is the caller's or the metric's choice.

Pramanik et al., "Can Linear Attributions Explain Nonlinear LLMs?" (shared/paper/heat-paper.txt).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from heat_module import scalable
from heat_module.capture import LayerCapture, capture, install
from heat_module.config import HEATConfig
from heat_module.curvature import curvature_exact, rademacher
from heat_module.forward import embed, next_token_logits
from heat_module.information import can_share_prefix, information, mask_vector
from heat_module.inputs import AttributorInputs, TargetIds, target_at
from heat_module.objective import gradient_norms
from heat_module.result import AttributionResult
from heat_module.transition import transition_from_captures


@dataclass
class Components:
    """The per-token components of one example (all (n,) fp32, n = real tokens only)."""

    transition: torch.Tensor
    curvature: torch.Tensor | None
    information: torch.Tensor | None
    first_order: torch.Tensor | None
    cost: dict = field(default_factory=dict)


def combine(parts: Components, config: HEATConfig) -> torch.Tensor:
    """Eq. 5 and the Table 5 ablations: (n,) Attr from the components."""
    n = parts.transition.shape[0]
    zero = torch.zeros(n, dtype=torch.float32, device=parts.transition.device)
    s = parts.curvature if parts.curvature is not None else zero
    info = parts.information if parts.information is not None else zero
    fo = parts.first_order if parts.first_order is not None else zero
    inner = config.beta * s + config.gamma * info
    ablation = config.ablation
    if ablation == "transition":
        return parts.transition.clone()
    if ablation == "curvature":
        return s.clone()
    if ablation == "information":
        return info.clone()
    if ablation == "no_gate":
        return inner + config.alpha * fo
    gate = torch.full_like(parts.transition, 1.0 / n) if ablation == "uniform_gate" else parts.transition
    return gate * inner + config.alpha * fo


def slice_captures(captures: Sequence[LayerCapture], b: int, start: int) -> list[LayerCapture]:
    """The captures of batch element ``b`` without its ``start`` left-padding positions."""
    out = []
    for c in captures:
        out.append(
            LayerCapture(
                name=c.name, layer=c.layer, query=c.query[b:b + 1, :, start:], key=c.key[b:b + 1, :, start:],
                value=c.value[b:b + 1, :, start:],
                mask=None if c.mask is None else c.mask[b:b + 1, :, start:, start:],
                scaling=c.scaling, softcap=c.softcap, sliding_window=c.sliding_window, module=c.module,
                weights=None if c.weights is None else c.weights[b:b + 1, :, start:, start:],
            )
        )
    return out


class HEAT(AttributorInputs):
    """Hessian-enhanced attribution of a decoder-only LM's next-token prediction.

    Example:
        >>> model, tok = load_model("smollm2")
        >>> res = HEAT(model, tok, HEATConfig()).attribute("The capital of France is")
        >>> res.topk(3)

    The model is switched to the ``"heat"`` attention implementation (SDPA outside captures, so its outputs are
    unchanged); its parameters are never differentiated.
    """

    def __init__(self, model: nn.Module, tokenizer: object | None = None, config: HEATConfig | None = None) -> None:
        self.model = install(model)
        self.tokenizer = tokenizer
        self.config = config if config is not None else HEATConfig()
        if not isinstance(self.config, HEATConfig):
            raise TypeError(f"Expected config to be a HEATConfig, got {type(self.config).__name__}")

    # ------------------------------------------------------------------ core
    def components(
        self,
        ids: torch.Tensor,
        target: int,
        captures: Sequence[LayerCapture],
        logits: torch.Tensor,
        transition: torch.Tensor | None = None,
    ) -> Components:
        """All components of one unpadded example.

        Args:
            ids: (n,) token ids.
            target: the target id.
            captures: the example's captures (batch of one, no padding).
            logits: (V,) next-token logits of the unperturbed run.
            transition: (n,) M if already computed (batched); else computed from ``captures``.
        """
        cfg = self.config
        cost: dict = {"forward_passes": 1, "forward_equivalents": 1.0, "hvps": 0, "gradients": 0, "seconds": {}}
        x = embed(self.model, ids[None]).detach()
        n = ids.numel()
        t0 = time.perf_counter()
        if transition is None:
            transition = transition_from_captures(
                captures, layers=cfg.rollout_layers, sink=cfg.sink, backend=cfg.backend
            )[0]
        cost["seconds"]["transition"] = time.perf_counter() - t0
        need_s = cfg.ablation in ("full", "curvature", "no_gate", "uniform_gate") and cfg.beta > 0 or (
            cfg.ablation == "curvature")
        need_i = cfg.ablation in ("full", "information", "no_gate", "uniform_gate") and cfg.gamma > 0 or (
            cfg.ablation == "information")
        curv = info = fo = None
        if need_s:
            t0 = time.perf_counter()
            curv = self.curvature(x, target, captures, logits, cost)
            cost["seconds"]["curvature"] = time.perf_counter() - t0
        if need_i:
            t0 = time.perf_counter()
            logp = torch.log_softmax(logits.float(), -1)
            info = information(
                self.model, x, captures, logp, None,
                mask_vector(self.model, cfg.mask, cfg.mask_token_id), cfg.info_batch_size,
            )
            cost["forward_passes"] += n
            cost["forward_equivalents"] += scalable.information_fe(n, cfg.info_batch_size, can_share_prefix(captures))
            cost["seconds"]["information"] = time.perf_counter() - t0
        if cfg.alpha > 0:
            t0 = time.perf_counter()
            fo = gradient_norms(self.model, x, target)
            cost["gradients"] += 1
            cost["forward_equivalents"] += scalable.FE_GRADIENT
            cost["seconds"]["first_order"] = time.perf_counter() - t0
        parts = Components(transition.float(), curv, info, fo, cost)
        if cfg.check_finite:
            for name in ("transition", "curvature", "information", "first_order"):
                value = getattr(parts, name)
                if value is not None and not torch.isfinite(value).all():
                    bad = (~torch.isfinite(value)).nonzero().flatten().tolist()
                    raise FloatingPointError(
                        f"Expected finite values from the {name} component, got NaN/inf at token positions {bad[:10]} "
                        "(try fp32 weights, or HEATConfig(check_finite=False) to inspect them)"
                    )
        return parts

    def curvature(self, x: torch.Tensor, target: int, captures: Sequence[LayerCapture], logits: torch.Tensor,
                  cost: dict) -> torch.Tensor:
        """(n,) S for one unpadded example (x: (1, n, d)) with the configured estimator."""
        cfg = self.config
        n, d = x.shape[1], x.shape[2]
        probes = rademacher(cfg.probes, n, d, seed=cfg.seed, device=x.device, dtype=x.dtype)
        if cfg.layers is not None or cfg.curvature != "exact":
            return scalable.curvature(self, x, target, captures, logits, probes, cost)
        cost["hvps"] += n * cfg.probes
        cost["forward_passes"] += n * cfg.probes
        share = bool(captures) and can_share_prefix(captures)
        cost["forward_equivalents"] = cost.get("forward_equivalents", 0.0) + scalable.exact_fe(
            n, cfg.probes, cfg.hvp_chunk_size, share)
        return curvature_exact(self.model, x, target, probes, None, captures, cfg.hvp_chunk_size,
                               mode=cfg.hvp_mode)

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, list]:
        with torch.no_grad(), capture() as captures:
            logits = next_token_logits(self.model, embed(self.model, input_ids), attention_mask)
        return logits, captures

    def _attribute_batch(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_ids: TargetIds
    ) -> list[AttributionResult]:
        cfg = self.config
        if cfg.window is not None or cfg.extra.get("targets") is not None:
            return [self.attribute(ids, target) for ids, target in self.unpadded(input_ids, attention_mask, target_ids)]
        t0 = time.perf_counter()
        logits, captures = self._forward(input_ids, attention_mask)
        m_all = transition_from_captures(captures, attention_mask, cfg.rollout_layers, cfg.sink, cfg.backend)
        t_batch = time.perf_counter() - t0
        results = []
        for b in range(input_ids.shape[0]):
            start = int((attention_mask[b] == 0).sum())
            ids = input_ids[b, start:]
            target = self.target_id(target_at(target_ids, b), logits[b])
            parts = self.components(ids, target, slice_captures(captures, b, start), logits[b], m_all[b, start:])
            parts.cost["seconds"]["batched_forward"] = t_batch / input_ids.shape[0]
            results.append(self._result(ids, target, parts))
        return results

    def attribute(
        self,
        text_or_ids: str | Sequence[int] | torch.Tensor,
        target: int | str | None = None,
    ) -> AttributionResult:
        """Attribute the next-token prediction after ``text_or_ids`` to its context tokens.

        Args:
            text_or_ids: a text (tokenised with the tokenizer's defaults) or (n,) token ids.
            target: the target token (id or single-token string); ``None`` = the model's greedy next token.
        Returns:
            An :class:`AttributionResult` with (n,) scores and components.
        """
        ids = self.encode(text_or_ids)
        if self.config.window is not None and self.config.window < ids.numel():
            return scalable.attribute_windowed(self, ids, target)
        logits, captures = self._forward(ids[None], torch.ones_like(ids)[None])
        target_id = self.target_id(target, logits[0])
        parts = self.components(ids, target_id, captures, logits[0])
        return self._result(ids, target_id, parts)

    def attribute_sentence(
        self,
        text_or_ids: str | Sequence[int] | torch.Tensor,
        targets: str | Sequence[int] | torch.Tensor | None = None,
        max_new_tokens: int = 8,
        aggregation: str | None = None,
        spans: Sequence[tuple[int, int]] | None = None,
        target_spans: Sequence[tuple[int, int]] | None = None,
    ) -> AttributionResult:
        """Sentence-level HEAT (eq. 23–24): attribute targets y_1..y_m to the prompt tokens.

        See :func:`heat_module.sentence.attribute_sentence` (targets greedy or given; ``aggregation`` ``"mean"``
        (eq. 23), ``"max"`` or ``"sum"``, default ``config.aggregation``; ``spans`` / ``target_spans`` for eq. 24).
        """
        from heat_module.sentence import attribute_sentence

        return attribute_sentence(self, text_or_ids, targets, max_new_tokens, aggregation, spans, target_spans)

    def _result(self, ids: torch.Tensor, target: int, parts: Components) -> AttributionResult:
        scores = combine(parts, self.config)
        return AttributionResult(
            tokens=self.token_strings(ids),
            token_ids=ids.detach().cpu(),
            target=self.token_strings(torch.tensor([target]))[0],
            target_id=target,
            scores=scores.detach().cpu(),
            transition=parts.transition.detach().cpu(),
            curvature=None if parts.curvature is None else parts.curvature.detach().cpu(),
            information=None if parts.information is None else parts.information.detach().cpu(),
            first_order=None if parts.first_order is None else parts.first_order.detach().cpu(),
            method="heat",
            config=self.config.to_dict(),
            cost=parts.cost,
        )


def attribute_batch(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    target_ids: torch.Tensor | None = None,
    config: HEATConfig | None = None,
    tokenizer: object | None = None,
) -> list[AttributionResult]:
    """Functional entry point: HEAT on a left-padded batch with any model (see :meth:`HEAT.attribute_batch`).

    This is what a user's own LightningModule calls in its ``predict_step`` to add HEAT without subclassing.
    """
    return HEAT(model, tokenizer, config).attribute_batch(input_ids, attention_mask, target_ids)
