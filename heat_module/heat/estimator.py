"""HEAT — Hessian-enhanced attribution (paper eq. 5, Algorithm 1): the estimator class.

Attr_i = M[i]·(β·S_i + γ·I_i) (+ α·‖∇_{x_i} g‖₁ for HEAT+FO), with M the target-conditioned transition gate
(:mod:`heat_module.heat.transition`), S the Hessian sensitivity (:mod:`heat_module.heat.curvature`) and I the KL
information (:mod:`heat_module.heat.information`), combined by :mod:`heat_module.heat.combine`. Scores stay raw;
normalising is the caller's or the metric's choice. HEAT-WIN (:mod:`heat_module.heat.windowing`) and the
sentence-level extension (:mod:`heat_module.heat.sentence`) receive the estimator and call its public methods
(:meth:`HEAT.forward_with_captures`, :meth:`HEAT.components`, :meth:`HEAT.result_from`).

Pramanik et al., "Can Linear Attributions Explain Nonlinear LLMs?" (docs/paper.md).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from heat_module.attribution.base import Attributor, TargetIds, is_list_input, target_at
from heat_module.attribution.registry import register_method
from heat_module.config import HEATConfig
from heat_module.heat.combine import Components, combine
from heat_module.heat.cost import FE_GRADIENT
from heat_module.heat.m_gate import GateM
from heat_module.heat.memory_plan import plan_for
from heat_module.heat.objective import gradient_norms
from heat_module.heat.part import Example
from heat_module.heat.progress import AUTO_SECONDS, Meter, expected_seconds
from heat_module.heat.s_fisher import budget_summary, shared_fisher, shares_factors
from heat_module.heat.sentence import attribute_sentence
from heat_module.heat.windowing import attribute_windowed
from heat_module.lm.capture import LayerCapture, capture, install, slice_captures, uninstall
from heat_module.lm.forward import embed, next_token_logits, score_dtype
from heat_module.lm.quantization import check_not_bitsandbytes
from heat_module.result import AttributionResult, Cost, ResultList


@register_method("heat", title="HEAT")
class HEAT(Attributor):
    """Hessian-enhanced attribution of a decoder-only LM's next-token prediction.

    Example (a tiny random model; ``heat_module.load_model("smollm2")`` gives the real one):
        >>> from heat_module import HEAT, HEATConfig
        >>> from heat_module.heat.s_fisher import FisherS
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> model, tok = tiny_model("llama"), tiny_tokenizer()
        >>> res = HEAT(model, tok, HEATConfig.preset("mi")).attribute("the cat sat on the hat")  # M·I
        >>> len(res.tokens), res.curvature is None
        (6, True)
        >>> config = HEATConfig(curvature=FisherS(topk=4))  # the default (Fisher S, exact I), with K = 4
        >>> with HEAT(model, tok, config) as heat:
        ...     res = heat.attribute("the cat sat on the hat")
        >>> res.cost["fisher_k"], res.curvature.shape
        (4, torch.Size([6]))

    ``HEATConfig()`` (also ``config=None``) is eq. 5 with the Fisher S, the exact I and ``normalize="sum"`` (the
    choice study's pick); ``HEATConfig.preset("mi")`` is M·I (β = 0: no S, no gradient);
    ``HEATConfig.preset("exact")`` is eq. 5 with the exact S (β = γ = 0.5).

    The model is switched to the ``"heat"`` attention implementation (:func:`heat_module.lm.capture.install`:
    outside HEAT's own computations it calls the model's original attention with every argument, so the model's
    outputs are unchanged); :meth:`close` (or leaving a ``with HEAT(...) as heat:`` block) restores the original
    implementation once no other HEAT object uses the model. Its parameters are never differentiated.

    Attributes:
        show_progress: ``config.progress`` in auto mode (``None``) is overridden by this when it is not ``None``
            (the Lightning integration sets it to ``False``: Lightning's own bar is there).
    """

    show_progress: bool | None = None

    def __init__(self, model: nn.Module, tokenizer: object | None = None, config: HEATConfig | None = None) -> None:
        config = config if config is not None else HEATConfig()
        if not isinstance(config, HEATConfig):
            raise TypeError(f"Expected config to be a HEATConfig, got {type(config).__name__}")
        check_not_bitsandbytes(model, "HEAT")
        self.model = install(model)
        self._installed = True
        self.tokenizer = tokenizer
        self.config = config

    def close(self) -> None:
        """Undo this object's install: the last HEAT on the model restores its attention implementation
        (idempotent; other HEAT objects on the same model keep working)."""
        if getattr(self, "_installed", False):
            self._installed = False
            uninstall(self.model)

    def __enter__(self) -> HEAT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_options(cls, model: nn.Module, tokenizer: Any = None, config: HEATConfig | None = None,
                     **options: Any) -> HEAT:
        """HEAT for the registry: its options are the ``config``."""
        if options:
            raise ValueError(
                f"Expected no method_options for method='heat' (use config=HEATConfig(...)), got {options}"
            )
        return cls(model, tokenizer, config)

    def options(self) -> dict:
        return self.config.to_dict()

    # ------------------------------------------------------------------ core
    def components(
        self,
        ids: torch.Tensor,
        target: int,
        captures: Sequence[LayerCapture],
        logits: torch.Tensor,
        transition: torch.Tensor | None = None,
        foil: int | None = None,
    ) -> Components:
        """All components of one unpadded example: the parts M, S, I (and the α term) composed, their costs and
        progress summed in one :class:`~heat_module.heat.progress.Meter`. First the memory plan
        (:func:`~heat_module.heat.memory_plan.plan_for`) lowers the estimators' chunk sizes to fit
        ``config.max_memory``; the parts run with the planned estimators, and the plan's summary goes on the progress
        bar and into ``cost.details["memory_plan"]``.

        Args:
            ids: (n,) token ids.
            target: the target id.
            captures: the example's captures (batch of one, no padding).
            logits: (V,) next-token logits of the unperturbed run.
            transition: (n,) M if already computed (batched); else computed from ``captures``.
            foil: a foil id: S and I of the contrast log P(target) − log P(foil) (see :meth:`attribute`).
        """
        n = ids.numel()
        x = embed(self.model, ids[None]).detach()
        plan = plan_for(self.model, n, self.config, x.dtype)  # chunk sizes under max_memory, or MemoryPlanError
        cfg = plan.applied(self.config)  # the parts below read their settings from cfg, not self.config
        s_part = cfg.curvature if cfg.computes_s else None
        i_part = cfg.information if cfg.computes_i else None
        for kind, part in (("curvature", s_part), ("information", i_part)):
            if foil is not None and part is not None and not part.contrastive:
                raise ValueError(f"Expected {kind}='exact' for a contrastive (foil) attribution, got {part.name!r}")
        s_units = n * s_part.probes if s_part is not None else 0
        meter = Meter(s_units + (n if i_part is not None else 0), self.progress_enabled(n),
                      Cost(forward_passes=1, forward_equivalents=1.0))  # the captured forward
        meter.cost.details["memory_plan"] = plan.summary()
        budget = budget_summary(s_part, i_part, self.model, n)  # the Fisher K a budget chose, if any
        meter.bar.set_postfix_str("; ".join(filter(None, (plan.summary(), budget))), refresh=False)
        ex = Example(self.model, x, target, captures, logits, foil, cfg.backend, cfg.seed)
        with meter.part("transition"):
            if transition is None:
                transition = GateM.from_config(cfg, plan.rollout_block).estimate(ex).values
        curv = info = fo = None
        if shares_factors(s_part, i_part):  # one forward and one K-cotangent backward give both
            with meter.part("information", n + s_units):
                s_out, i_out = shared_fisher(s_part, i_part, ex)
            meter.cost.seconds["curvature"] = 0.0  # counted in "information"
            curv, info = s_out.values, i_out.values
            meter.add(i_out.cost)
            s_part = i_part = None
        if i_part is not None and not i_part.grows_with_n:  # the surrogate first, as one pass
            with meter.part("information", n):
                out = i_part.estimate(ex)
            info = out.values
            meter.add(out.cost)
            i_part = None
        if s_part is not None:
            with meter.part("curvature", s_units, "HEAT S (HVPs)") as progress:
                out = s_part.estimate(dataclasses.replace(ex, progress=progress))
            curv = out.values
            meter.add(out.cost)
        if i_part is not None:
            with meter.part("information", n, "HEAT I (masked runs)") as progress:
                out = i_part.estimate(dataclasses.replace(ex, progress=progress))
            info = out.values
            meter.add(out.cost)
        meter.close()
        if cfg.alpha > 0 and cfg.ablation not in ("transition", "curvature", "information"):  # else combine drops it
            with meter.part("first_order"):
                fo = gradient_norms(self.model, ex.x, target, foil=foil)
            meter.add(Cost(gradients=1, forward_equivalents=FE_GRADIENT))
        # every component in the score dtype: fp64 for fp64 models, else fp32 (Components)
        dt = score_dtype(ex.x.dtype)
        parts = Components(*(None if v is None else v.to(dt) for v in (transition, curv, info, fo)), meter.cost)
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

    def curvature(self, x: torch.Tensor, target: int, captures: Sequence[LayerCapture], cost: Cost,
                  foil: int | None = None, progress: Any = None) -> torch.Tensor:
        """(n,) S for one unpadded example (x: (1, n, d)) with the configured estimator, its chunk sizes lowered by
        the memory plan as in :meth:`components`; its cost added to ``cost`` (``foil``: S of the contrast;
        ``progress``: called with HVP counts)."""
        part = plan_for(self.model, x.shape[1], self.config, x.dtype).applied(self.config).curvature
        if part is None:
            raise ValueError("Expected a config that computes S (beta > 0 or ablation='curvature'), got "
                             f"beta={self.config.beta}, ablation={self.config.ablation!r}")
        if foil is not None and not part.contrastive:
            raise ValueError(f"Expected curvature='exact' for a contrastive (foil) attribution, got {part.name!r}")
        out = part.estimate(Example(self.model, x, target, captures, None, foil, self.config.backend,
                                    self.config.seed, progress))
        cost.add(out.cost)
        return out.values

    def progress_enabled(self, n: int) -> bool:
        """Whether an attribution of n tokens shows a progress bar: ``config.progress`` if set, else ``show_progress``
        if set, else auto (expected work above :data:`heat_module.heat.progress.AUTO_SECONDS` for the parts the config
        computes; only those whose work grows with n count — the exact S and the exact I; the Fisher and low-rank
        surrogates cost a fixed number of passes)."""
        if self.config.progress is not None:
            return self.config.progress
        if self.show_progress is not None:
            return self.show_progress
        s_part = self.config.curvature if self.config.computes_s else None
        i_part = self.config.information if self.config.computes_i else None
        hvps = s_part is not None and s_part.grows_with_n
        masked_runs = i_part is not None and i_part.grows_with_n
        return expected_seconds(self.model, n, s_part.probes if s_part is not None else 1, hvps,
                                masked_runs) > AUTO_SECONDS

    def forward_with_captures(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[LayerCapture]]:
        """One no-grad forward of a (B, n) left-padded batch: next-token logits (B, V) and every layer's capture."""
        if not getattr(self, "_installed", False):
            raise RuntimeError(
                "Expected an open HEAT object, got one that was closed (heat.close() or the end of its with block); "
                "create a new HEAT(model, ...) to attribute again"
            )
        with torch.no_grad(), capture() as captures:
            logits = next_token_logits(self.model, embed(self.model, input_ids), attention_mask)
        return logits, captures

    def _attribute_batch(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_ids: TargetIds
    ) -> list[AttributionResult]:
        cfg = self.config
        if cfg.window is not None:
            return [self.attribute(ids, target) for ids, target in self.unpadded(input_ids, attention_mask, target_ids)]
        t0 = time.perf_counter()
        logits, captures = self.forward_with_captures(input_ids, attention_mask)
        block = plan_for(self.model, input_ids.shape[1], cfg).rollout_block  # per sequence; the gate splits it
        m_all = GateM.from_config(cfg, block).batch(captures, attention_mask)
        t_batch = time.perf_counter() - t0
        results = []
        for b in range(input_ids.shape[0]):
            start = int((attention_mask[b] == 0).sum())
            ids = input_ids[b, start:]
            target = self.target_id(target_at(target_ids, b), logits[b])
            parts = self.components(ids, target, slice_captures(captures, b, start), logits[b], m_all[b, start:])
            parts.cost.seconds["batched_forward"] = t_batch / input_ids.shape[0]
            results.append(self.result_from(ids, target, parts))
        return results

    def attribute(
        self,
        text_or_ids: str | Sequence[int] | torch.Tensor | Sequence[str | Sequence[int] | torch.Tensor],
        target: int | str | None = None,
        foil: int | str | None = None,
        *,
        targets: Sequence[int | str | None] | None = None,
        batch_size: int = 1,
    ) -> AttributionResult | ResultList:
        """Attribute the next-token prediction after ``text_or_ids`` to its context tokens.

        Args:
            text_or_ids: a text (tokenised with the tokenizer's defaults) or (n,) token ids; or a list of these with
                ``targets=[...]`` (one per item, multi-token text targets allowed) and ``batch_size``: a
                :class:`~heat_module.result.ResultList` equal to one-by-one calls (:meth:`Attributor.attribute_list`).
            target: the target token (id or string); ``None`` = the model's greedy next token. A text target of
                several tokens (``" New York"``) is attributed at the sentence level (:meth:`attribute_sentence`,
                eq. 23, aggregation ``config.aggregation``, named in ``result.extra["aggregation"]``).
            foil: a contrast token (id or single-token string): explain g = log P(target) − log P(foil), "why
                the target rather than the foil". S is the Hessian-block sensitivity (eq. 3) of that difference,
                I_i = |Δ_i| with Δ_i the change of the same difference when x_i is masked (the KL of eq. 4 compares
                whole distributions and has no contrastive form), M is unchanged. With foil = target every score
                is 0. Needs ``curvature="exact"`` and no ``window``; ``result.extra`` records ``foil``,
                ``foil_id`` and ``objective``.
        Returns:
            An :class:`AttributionResult` with (n,) scores and components.
        """
        if is_list_input(text_or_ids) or targets is not None:
            if foil is not None:
                raise ValueError(f"Expected no foil with a list of texts, got foil={foil!r}")
            return ResultList(super().attribute(text_or_ids, target, targets=targets, batch_size=batch_size))
        if isinstance(target, str) and self.tokenizer is not None:
            pieces = self.tokenizer(target, add_special_tokens=False)["input_ids"]
            if len(pieces) > 1:
                if foil is not None:
                    raise ValueError(f"Expected a single-token target with a foil, got {len(pieces)} tokens "
                                     f"for {target!r}")
                result = self.attribute_sentence(text_or_ids, pieces)
                result.extra["multi_token_target"] = target
                return result
        ids = self.encode(text_or_ids)
        if foil is not None and self.config.window is not None:
            raise ValueError(f"Expected window=None for a contrastive (foil) attribution, got {self.config.window}")
        if self.config.window is not None and self.config.window < ids.numel():
            plan = plan_for(self.model, ids.numel(), self.config)  # the windows' captures fit, or MemoryPlanError
            return attribute_windowed(self, ids, target, plan.rollout_block)
        logits, captures = self.forward_with_captures(ids[None], torch.ones_like(ids)[None])
        target_id = self.target_id(target, logits[0])
        foil_id = None if foil is None else self.target_id(foil, None)
        parts = self.components(ids, target_id, captures, logits[0], foil=foil_id)
        result = self.result_from(ids, target_id, parts)
        if foil_id is not None:
            result.extra.update(foil=self.token_strings(torch.tensor([foil_id]))[0], foil_id=foil_id,
                                objective="log P(target) - log P(foil)")
        return result

    def attribute_batch(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                        target_ids: TargetIds = None) -> ResultList:
        """:meth:`Attributor.attribute_batch`, returned as a :class:`~heat_module.result.ResultList` (a list that
        renders as one table in Jupyter)."""
        return ResultList(super().attribute_batch(input_ids, attention_mask, target_ids))

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

        See :func:`heat_module.heat.sentence.attribute_sentence` (targets greedy or given; ``aggregation``
        ``"mean"`` (eq. 23), ``"max"`` or ``"sum"``, default ``config.aggregation``; ``spans`` / ``target_spans`` for
        eq. 24).
        """
        return attribute_sentence(self, text_or_ids, targets, max_new_tokens, aggregation, spans, target_spans)

    def result_from(self, ids: torch.Tensor, target: int, parts: Components) -> AttributionResult:
        """The :class:`AttributionResult` of (n,) ``ids`` and ``target``, with the scores :func:`combine` gives."""
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
) -> ResultList:
    """Functional entry point: HEAT on a left-padded batch with any model (see :meth:`HEAT.attribute_batch`).

    This is what a user's own LightningModule calls in its ``predict_step`` to add HEAT without subclassing.

    Example (two left-padded prompts of a tiny random model; ``target_ids=None``: the greedy next tokens):
        >>> import torch
        >>> from heat_module import attribute_batch
        >>> from heat_module.testing import tiny_model
        >>> ids = torch.tensor([[0, 5, 9, 14], [7, 8, 9, 10]])
        >>> mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
        >>> [len(r.scores) for r in attribute_batch(tiny_model("llama"), ids, mask)]
        [3, 4]
    """
    return HEAT(model, tokenizer, config).attribute_batch(input_ids, attention_mask, target_ids)
