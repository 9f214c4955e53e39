"""Configuration of a HEAT run (paper eq. 5, Algorithm 1; docs/design.md).

``HEATConfig()`` is eq. 5 with the Fisher S, the exact I and ``normalize="sum"`` (β = γ = 0.5), the configuration
the choice study's pre-fixed rule picked (``benchmarks/RESULTS-choice.md``); M·I (β = 0, no S) is
``HEATConfig.preset("mi")``.

One dataclass for what every run shares (the weights β, γ, α, the gate M, normalisation, windowing, ...), holding the
estimator of S (``curvature``) and of I (``information``) as parts with their own settings: an S estimator is
:class:`SEstimator` (``ExactS``, ``FisherS``, ``LowRankS`` in :mod:`heat_module.heat`), an I estimator
:class:`IEstimator` (``ExactI``, ``FisherI``), each registered by name (:func:`register_s_estimator`). Settings are
validated in ``__post_init__`` (the estimators' in their own) with "Expected X, got Y" errors. Every fixed choice is
defined once, as a ``Literal`` type; the tuples of allowed values (``SINKS``, ``MASKS``, ...) come from it
(``typing.get_args``), and every other module that lists choices imports them from here.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from heat_module.hashing import stable_hash
from heat_module.memory_size import parse_memory

MaskKind = Literal["zero", "mean", "token"]
Ablation = Literal["full", "transition", "curvature", "information", "no_gate", "uniform_gate"]
Sink = Literal["keep", "first", "auto", "auto-median"]
Normalize = Literal["none", "sum", "rank"]
Aggregation = Literal["mean", "max", "sum"]
Backend = Literal["auto", "torch", "cpp", "triton", "cuda"]
HVPMode = Literal["auto", "forward_over_reverse", "reverse_over_reverse"]
Gate = Literal["full", "attention_only"]

MASKS: tuple[str, ...] = get_args(MaskKind)
ABLATIONS: tuple[str, ...] = get_args(Ablation)
SINKS: tuple[str, ...] = get_args(Sink)
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
BACKENDS: tuple[str, ...] = get_args(Backend)
HVP_MODES: tuple[str, ...] = get_args(HVPMode)
GATES: tuple[str, ...] = get_args(Gate)
NORMALIZES: tuple[str, ...] = get_args(Normalize)

#: the package whose modules named ``s_<name>`` (estimators of S) and ``i_<name>`` (of I) are imported, so
#: registered, on the first look-up of an estimator: a new estimator is one such file, found without a list
ESTIMATOR_PACKAGE = "heat_module.heat"
_LOADED = False


@dataclass
class HEATConfig:
    """Hyper-parameters of HEAT.

    ``HEATConfig()`` is eq. 5 with β = γ = 0.5, the Fisher S (``FisherS()``, K = 16), the exact I (``ExactI()``)
    and ``normalize="sum"`` (= ``HEATConfig.preset("fisher", normalize="sum")``): the HEAT configuration the choice
    study's rule, fixed before the run, picked (``benchmarks/RESULTS-choice.md``). Its cost: the exact I's n masked
    runs on the prefix cache plus the Fisher S's one forward and one K = 16-cotangent backward. M·I (β = 0, no S, no
    gradient) is ``HEATConfig.preset("mi")``; eq. 5 with the exact S is ``HEATConfig.preset("exact")``.

    S's settings live with its estimator: ``HEATConfig(curvature=FisherS(topk=8))``. Where S is computed and no
    estimator is given, S is the default's, ``FisherS()`` (also for ``HEATConfig(beta=0.3)``: changing a weight does
    not change the estimator; the exact S is named: ``curvature="exact"``). Where S is not computed (β = 0) the
    estimator is ``None``; giving one there is an error, so no setting is silently without effect.

    Example:
        >>> from heat_module import HEATConfig
        >>> from heat_module.heat.s_fisher import FisherS
        >>> HEATConfig().curvature == FisherS() and HEATConfig().normalize == "sum"
        True
        >>> HEATConfig(beta=0).curvature is None  # M·I: S is not computed
        True
        >>> cfg = HEATConfig(curvature=FisherS(topk=8))
        >>> cfg.curvature.to_dict()
        {'name': 'fisher', 'probes': 1, 'topk': 8, 'mass': None, 'chunk': 8, 'layers': None}
        >>> HEATConfig(curvature="lowrank").curvature.name  # by name: that estimator's defaults
        'lowrank'
        >>> HEATConfig.preset("fast").information.name
        'fisher'
        >>> HEATConfig(beta=0, curvature="fisher")  # β = 0: S is not computed  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected curvature=None where S is not computed (beta=0 with ablation='full'; ...

    Attributes:
        beta: weight β of the curvature term S (eq. 5). Must be ≥ 0. Default 0.5 (eq. 5 as the paper writes it);
            0: S is not computed (M·I, ``HEATConfig.preset("mi")``).
        gamma: weight γ of the information term I (eq. 5). Must be ≥ 0. Default 0.5; ``preset("mi")`` uses γ = 1
            (Attr = M·I with I the KL in nats; every metric reported is scale-invariant, so γ = 1 ranks exactly like
            γ = 0.5).
        alpha: weight α of the optional first-order term ‖∇_{x_i} g‖₁ (HEAT+FO, appendix eq. 22, Table 19):
            Attr_i = M[i]·(α‖∇_{x_i} g‖₁ + βS_i + γI_i). ≥ 0.
        curvature: the estimator of S (:class:`SEstimator`), given where S is computed (β > 0, or
            ``ablation="curvature"``) and ``None`` elsewhere: ``FisherS`` (default where S is computed and none is
            given: the Gauss–Newton/Fisher surrogate), ``ExactS`` (block HVPs, eq. 3) or ``LowRankS`` (randomized
            eigendecomposition, HEAT-LR, Thm 4); also a registered name (``"fisher"``: its defaults) or
            ``{"name": ..., <settings>}``. Each holds its settings (probes, chunk sizes, HEAT-LS ``layers``, ...).
        information: the estimator of I (:class:`IEstimator`), given where I is computed (γ > 0, or
            ``ablation="information"``) and ``None`` elsewhere: ``ExactI`` (default where I is computed and none is
            given: masked forward passes, eq. 4) or ``FisherI`` (the Fisher quadratic form over the K most probable
            tokens; with a ``FisherS`` of the same K, mass and chunk on X, S and I share one forward and one
            K-cotangent backward, so the cost does not grow with n); a name or a dict as for ``curvature``. Each
            holds the mask and its own settings.
        rollout_layers: if set, sum M only over these layer indices (ρ still passes through every layer above):
            distinct ints in [-L, L), L the number of attention layers (negative ones count from the top).
        ablation: Table 5 ablations: ``"full"`` (eq. 5), ``"transition"`` (M only), ``"curvature"`` (S only),
            ``"information"`` (I only), ``"no_gate"`` (βS+γI), ``"uniform_gate"`` (M = 1/n).
        sink: attention-sink handling of the gate M: ``"keep"`` (docs/design.md's M), ``"first"`` (position 0 left
            out and M renormalised), ``"auto"`` (default: positions that take ≥ 20 % of the rollout's attention
            mass while moving less than half the average value norm are left out; see
            :func:`heat_module.heat.transition.sink_positions`). Why ``"auto"``: on SmolLM2 the first token takes
            ~76 % of the paper's M and Attr collapses onto it; leaving the sink out raised Soft-NC on every
            benchmark of ``benchmarks/RESULTS-eval.md`` (``"first"`` and ``"auto"`` tie there), and ``"auto"``
            keeps position 0 on models or prompts where it is not a sink. ``"auto-median"``: the positions ``"auto"``
            flags get the median M of the other positions instead of 0
            (:func:`heat_module.heat.transition.median_fill`), so a sink that carries content stays attributable.
        normalize: how S and I (and the α term ‖∇_{x_i} g‖₁ of HEAT+FO) are put on one scale before β and γ (α)
            weigh them (eq. 5 is ``"none"``):
            ``"none"`` (the paper's eq. 5 as written: on SmolLM2 S is ~10³× I, so βS + γI ranks as S for any
            β > 0), ``"sum"`` (default: S and I each divided by its sum over the context) or ``"rank"`` (each
            replaced by its normalised rank in [1/n, 1], ties averaged); see
            :func:`heat_module.heat.combine.normalize_component`.
        gate: the gate M on hybrid decoders (convolution, state-space or linear-attention layers beside attention:
            LFM2, Jamba, Qwen3-Next, ...): ``"full"`` (default) refuses them with an error naming the layer types,
            since the rollout over attention ignores the other layers' token mixing; ``"attention_only"`` is the
            attention-only gate: the rollout runs over the attention layers only (ρ passes the others unchanged), an
            approximation the user opts in to. On attention-only decoders both are the same.
        window: HEAT-WIN window size W in context tokens (Algorithm 1); ``None`` disables windowing.
        stride: HEAT-WIN stride s; ``None`` means W // 2 (50 % overlap).
        window_leakage: HEAT-WIN: also report the window-leakage proxy ε̂_M(W) (Thm 4 eq. 12, Table 12) in
            ``result.extra`` (one extra forward pass over the full context; see :mod:`heat_module.heat.windowing`).
        aggregation: sentence-level aggregation over target positions (eq. 23–24).
        backend: kernel backend for the rollout / block-norm ops (``"auto"`` picks per device).
        seed: seed of the probe generator; results are deterministic for a fixed seed.
        check_finite: raise (naming the component) when a component is NaN/inf instead of returning it.
        max_memory: the memory one attribution may add on top of the loaded model: bytes, or a string such as
            ``"6GB"`` / ``"512MiB"``; ``None`` (default): what the device has free (available RAM on the CPU, free CUDA
            memory). HEAT's memory planner (:mod:`heat_module.heat.memory_plan`) lowers the estimators' chunk sizes
            (``ExactI.batch_size``, ``ExactS.hvp_chunk_size``, ``FisherS.chunk`` / ``FisherI.chunk``) so the
            predicted peak stays under it, and raises ``MemoryPlanError`` when nothing fits; the plan is logged,
            shown on the progress bar and recorded in ``result.cost.details["memory_plan"]``. Left out of
            :meth:`hash` when ``None``.
        progress: a tqdm progress bar over the HVP and masked-run chunks of :meth:`HEAT.attribute`: ``None`` (auto:
            shown when the estimated work, n·m HVPs and n masked runs on a model of this size, exceeds a few
            seconds; see :func:`heat_module.heat.progress.expected_seconds`), ``True`` (always), ``False`` (never).
    """

    beta: float = 0.5
    gamma: float = 0.5
    alpha: float = 0.0
    curvature: SEstimator | None = None
    information: IEstimator | None = None
    rollout_layers: list[int] | None = None
    ablation: Ablation = "full"
    sink: Sink = "auto"
    gate: Gate = "full"
    normalize: Normalize = "sum"
    window: int | None = None
    stride: int | None = None
    window_leakage: bool = False
    aggregation: Aggregation = "mean"
    backend: Backend = "auto"
    seed: int = 0
    check_finite: bool = True
    progress: bool | None = None
    max_memory: int | str | None = None

    def __post_init__(self) -> None:
        for name in ("beta", "gamma", "alpha"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"Expected {name} to be a non-negative number, got {value!r}")
        check_choice("ablation", self.ablation, ABLATIONS)
        if self.ablation in S_THROUGH_BETA and self.beta == 0 and self.gamma == 0 and self.alpha == 0:
            raise ValueError(
                "Expected at least one of beta, gamma, alpha to be non-zero, got beta=0, gamma=0, alpha=0 with "
                f"ablation={self.ablation!r}: every score would be 0 (the ablations 'transition', 'curvature' and "
                "'information' need no weights)"
            )
        if self.curvature is not None:
            self.curvature = s_estimator(self.curvature)
        if self.computes_s and self.curvature is None:
            self.curvature = s_estimator(DEFAULT_CURVATURE)  # the default's S (see the class docstring)
        if not self.computes_s and self.curvature is not None:
            raise ValueError(
                f"Expected curvature=None where S is not computed (beta=0 with ablation={self.ablation!r}; the "
                f"ablations 'transition' and 'information' never compute S), got {self.curvature!r}: set beta > 0 "
                "for eq. 5 with S (or use HEATConfig.preset('exact') / 'fisher'), or leave curvature out for M·I"
            )
        if self.information is not None:
            self.information = i_estimator(self.information)
        if self.computes_i and self.information is None:
            self.information = i_estimator(DEFAULT_INFORMATION)  # the exact I (eq. 4)
        if not self.computes_i and self.information is not None:
            raise ValueError(
                f"Expected information=None where I is not computed (gamma=0 with ablation={self.ablation!r}; the "
                f"ablations 'transition' and 'curvature' never compute I), got {self.information!r}: set gamma > 0 "
                "for eq. 5 with I, or leave information out"
            )
        check_choice("sink", self.sink, SINKS)
        check_choice("gate", self.gate, GATES)
        check_choice("normalize", self.normalize, NORMALIZES)
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        check_choice("backend", self.backend, BACKENDS)
        if self.window is not None:
            positive_int("window", self.window)
        if self.stride is not None:
            positive_int("stride", self.stride)
            if self.window is None:
                raise ValueError(
                    f"Expected window to be set when stride is given, got window=None, stride={self.stride}"
                )
            if self.stride > self.window:
                raise ValueError(f"Expected stride <= window, got stride={self.stride} > window={self.window}")
        if self.max_memory is not None:
            parse_memory(self.max_memory)
        if self.progress is not None and not isinstance(self.progress, bool):
            raise ValueError(f"Expected progress to be True, False or None (auto), got {self.progress!r}")
        if not isinstance(self.window_leakage, bool):
            raise ValueError(f"Expected window_leakage to be a bool, got {self.window_leakage!r}")
        if self.rollout_layers is not None:
            if (not isinstance(self.rollout_layers, (list, tuple)) or not self.rollout_layers
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in self.rollout_layers)):
                raise ValueError(f"Expected rollout_layers to be a non-empty list of ints, got {self.rollout_layers!r}")
            if len(set(self.rollout_layers)) != len(self.rollout_layers):
                raise ValueError(f"Expected rollout_layers without repeats, got {self.rollout_layers!r}")

    @property
    def computes_s(self) -> bool:
        """Whether an attribution under this config computes S: β > 0 in an ablation that uses S through β
        (:data:`S_THROUGH_BETA`), or the S-only ablation ``"curvature"`` (whatever β is)."""
        return (self.ablation in S_THROUGH_BETA and self.beta > 0) or self.ablation == "curvature"

    @property
    def computes_i(self) -> bool:
        """Whether an attribution under this config computes I: γ > 0 in an ablation that uses I through γ (the
        same ones as S), or the I-only ablation ``"information"``."""
        return (self.ablation in S_THROUGH_BETA and self.gamma > 0) or self.ablation == "information"

    @property
    def effective_stride(self) -> int | None:
        """The HEAT-WIN stride: ``stride`` or W // 2 (at least 1)."""
        if self.window is None:
            return None
        return self.stride if self.stride is not None else max(1, self.window // 2)

    def to_dict(self) -> dict:
        """Every field; the estimators as ``{"name": ..., <settings>}`` (what :meth:`from_dict` reads)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["curvature"] = None if self.curvature is None else self.curvature.to_dict()
        out["information"] = None if self.information is None else self.information.to_dict()
        if out["rollout_layers"] is not None:
            out["rollout_layers"] = list(out["rollout_layers"])
        return out

    @classmethod
    def from_dict(cls, data: dict) -> HEATConfig:
        """The config of :meth:`to_dict`'s dict (as stored in a result). A dict in the flat layout, where S's and
        I's settings (``probes``, ``fisher_topk``, ``mask``, ...) were fields of the config itself, is refused
        with the fields to move, since its values cannot be read as this config. An ``information`` holding the exact
        I's defaults where I is not computed (it never applied) is read as ``None``."""
        if not isinstance(data, dict):
            raise TypeError(f"Expected a dict of HEATConfig fields, got {type(data).__name__}")
        flat = sorted(k for k in data if k in FLAT_FIELDS) + (
            ["curvature"] if isinstance(data.get("curvature"), str) and "probes" in data else [])
        if flat:
            raise ValueError(
                f"Expected a HEATConfig dict with S's and I's settings inside 'curvature' and 'information' "
                f"({{'name': ..., <settings>}}), got the flat fields {flat}: a config in that layout cannot be read "
                "as this one (write it again with HEATConfig(...).to_dict())"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"Expected HEATConfig fields ({sorted(names)}), got unknown {unknown}")
        if (data.get("information") == i_estimator(DEFAULT_INFORMATION).to_dict()
                and not cls(**{**data, "information": None}).computes_i):
            # a dict written where I was not computed may still hold the exact I's defaults, which never applied
            data = {**data, "information": None}
        return cls(**data)

    def hash(self) -> str:
        """A short stable hash of the fields (written next to each attribution by the writer). Left out, as they
        cannot change the scores: ``progress`` (it only changes what is printed), and ``max_memory`` when it is
        ``None`` (so configs that set no budget hash as before the field existed). Settings that change only speed
        or memory (chunk sizes, ``hvp_mode``, ``backend``) stay in: they may change the last bits.
        """
        fields = self.to_dict()
        fields.pop("progress")
        if self.max_memory is None:
            fields.pop("max_memory")
        return stable_hash(fields)

    def replace(self, **changes) -> HEATConfig:
        """A copy with ``changes``. Changes that turn S off (``beta=0``) without naming ``curvature`` drop the S
        estimator (``HEATConfig().replace(beta=0)`` is M·I); ones that turn it on get the default S."""
        return _without_unused(lambda fields: dataclasses.replace(self, **fields),
                               {"curvature": self.curvature, "information": self.information}, changes)

    @classmethod
    def preset(cls, name: str, **changes) -> HEATConfig:
        """A named configuration (fields in ``changes`` override it): one of :data:`PRESETS`. Changes that turn S
        off (``beta=0``) drop the preset's S estimator.

        What each one computes, and its cost in forward-pass equivalents (FE, ``result.cost``,
        :mod:`heat_module.heat.cost`); measured seconds and fidelity are in ``benchmarks/RESULTS-cost.md`` and the
        faithfulness study in ``benchmarks/RESULTS-choice.md``:

        - ``"default"``: ``HEATConfig()`` — eq. 5 (β = γ = 0.5) with Fisher S (``FisherS()``, K = 16), exact I and
          ``normalize="sum"`` (the choice study's pick, ``benchmarks/RESULTS-choice.md``): the cost of ``"fisher"``.
        - ``"mi"``: M·I (eq. 5 with β = 0, γ = 1, no normalisation): one captured forward and n masked runs
          on the prefix cache, no HVPs: ≈ 1 + (n + 1)/2 + (b − 1)/2 FE with b = ``ExactI.batch_size`` (a batch of b
          consecutive masked positions recomputes the suffix from its first one), quadratic in n in compute.
        - ``"exact"``: eq. 5 with exact S (``ExactS()``: m = 1, batched reverse-over-reverse HVPs on the prefix
          cache), exact I, β = γ = 0.5, no normalisation: the reference the approximate presets are compared with.
        - ``"paper"``: eq. 5 as the authors run it: exact S with m = 10 Rademacher probes (the default of their
          code, ``HessianSensitivity(num_samples=10)``; the paper's text does not fix m), exact I with the zero mask,
          β = γ = 0.5, no normalisation, and the gate M as written (``sink="keep"``: no attention-sink handling).
          About ten times the S cost of ``"exact"``.
        - ``"fisher"``: eq. 5 (β = γ = 0.5, no normalisation) with Fisher S (``FisherS()``, K = 16) + exact I, the
          cheapest variant with S whose I is eq. 4 itself: ≈ (n + 1)/2 + 18 FE. With ``normalize="rank"`` it agreed
          best with human rationales.
        - ``"fast"``: eq. 5 (β = γ = 0.5, no normalisation) with Fisher S + Fisher I on the same factors, within a
          budget of :data:`FAST_FISHER_FE` FE (``max_forward_equivalents``): one forward plus one K-cotangent backward
          with K the largest K ≤ 16 the cost model prices within it at n, so with the captured forward the
          attribution costs ≤ 25 FE at every length (K = 16 up to n ≈ 1024 on SmolLM2; 13, 11, 10 at 2048, 4096,
          8192, where attention makes each cotangent dearer; ``benchmarks/RESULTS-long-context.md``). Its HEAT
          scores follow ``"exact"`` closely on SmolLM2 (the gate M carries most of the ranking), but its I alone is
          a poor stand-in for eq. 4's I: use it for the HEAT scores, not for I.

        Example:
            >>> from heat_module import HEATConfig
            >>> from heat_module.heat.s_exact import ExactS
            >>> HEATConfig.preset("paper").curvature == ExactS(probes=10)
            True
            >>> HEATConfig.preset("fisher", normalize="sum") == HEATConfig()
            True
            >>> HEATConfig.preset("mi").curvature is None
            True
            >>> HEATConfig.preset("exact", curvature=ExactS(probes=4)).curvature.probes
            4
        """
        if name not in PRESETS:
            raise ValueError(f"Expected preset to be one of {list(PRESETS)}, got {name!r}")
        preset = PRESETS[name]
        return _without_unused(lambda fields: cls(**fields), {k: preset.get(k) for k in ("curvature", "information")},
                               {**{k: v for k, v in preset.items() if k not in ("curvature", "information")},
                                **changes})


def _without_unused(build: Callable[[dict], HEATConfig], estimators: dict[str, object], changes: dict) -> HEATConfig:
    """``build(fields)`` with ``changes`` and the given ``estimators`` (``curvature`` / ``information``) that
    ``changes`` does not name — each dropped where the changed config does not compute its component (β = 0 drops
    S, γ = 0 drops I), so turning a term off never leaves its estimator behind as an error."""
    kept = {k: v for k, v in estimators.items() if k not in changes and v is not None}
    if kept:
        probe = build({**changes, **{k: None for k in kept}})
        computes = {"curvature": probe.computes_s, "information": probe.computes_i}
        kept = {k: v for k, v in kept.items() if computes[k]}
        return build({**changes, **kept, **{k: None for k in estimators if k not in changes and k not in kept}})
    return build(dict(changes))


#: the Fisher factors' budget of ``preset("fast")`` in FE: with the captured forward (1 FE) the attribution is priced
#: at ≤ 25 FE at every length (the K it keeps agreed with K = 16 at median Spearman ρ ≥ 0.9 on real text)
FAST_FISHER_FE = 24.0

#: the fields of each named configuration of :meth:`HEATConfig.preset` (estimators by name or as dicts)
PRESETS: dict[str, dict] = {
    "default": {},
    "mi": {"beta": 0.0, "gamma": 1.0, "normalize": "none"},
    "exact": {"curvature": "exact", "beta": 0.5, "gamma": 0.5, "normalize": "none"},
    "paper": {"curvature": {"name": "exact", "probes": 10}, "beta": 0.5, "gamma": 0.5, "alpha": 0.0,
              "normalize": "none", "sink": "keep"},
    "fisher": {"curvature": "fisher", "beta": 0.5, "gamma": 0.5, "normalize": "none"},
    "fast": {"curvature": {"name": "fisher", "max_forward_equivalents": FAST_FISHER_FE},
             "information": {"name": "fisher", "max_forward_equivalents": FAST_FISHER_FE},
             "beta": 0.5, "gamma": 0.5, "normalize": "none"},
}

#: the S estimator of a config that computes S and names none: the default's (``HEATConfig()``, the choice study's
#: pick), so changing β alone does not change the estimator
DEFAULT_CURVATURE = "fisher"
#: the I estimator where I is computed and none is given: the exact I (masked forward passes, eq. 4)
DEFAULT_INFORMATION = "exact"
#: the ablations in which S enters only through β (eq. 5's βS inside or outside the gate); ``"curvature"`` uses S
#: whatever β is, ``"transition"`` and ``"information"`` never
S_THROUGH_BETA: tuple[str, ...] = ("full", "no_gate", "uniform_gate")
#: fields of the flat layout, where S's and I's settings were fields of the config (:meth:`HEATConfig.from_dict`
#: refuses a dict holding them)
FLAT_FIELDS: tuple[str, ...] = ("probes", "hvp_chunk_size", "hvp_mode", "hvp_memory_mb", "fisher_topk", "fisher_mass",
                                "rank", "oversample", "layers", "mask", "mask_token_id", "info_batch_size",
                                "first_order", "extra")


class SEstimator:
    """What an estimator of S (eq. 2–3 or a surrogate) is: a frozen dataclass of its own settings, registered by name
    with :func:`register_s_estimator`, whose :meth:`estimate` returns S of one example and what it cost.

    Every S estimator has ``probes`` (m, the Rademacher probes of eq. 3 its block norms use) and ``layers`` (HEAT-LS:
    differentiate w.r.t. the residual stream entering layer L-k, k = ``layers``; ``None``: w.r.t. X). Implementations
    live in :mod:`heat_module.heat` (``s_exact``, ``s_fisher``, ``s_lowrank``).

    Attributes:
        name: the registered name (``"exact"``, ``"fisher"``, ``"lowrank"``).
        grows_with_n: whether its work grows with the context length (n·m HVPs); the surrogates run a fixed number of
            passes. Read by the progress bar's auto mode.
        contrastive: whether it can estimate S of a contrast log P(target) − log P(foil).
    """

    name: ClassVar[str] = ""
    grows_with_n: ClassVar[bool] = False
    contrastive: ClassVar[bool] = False

    def estimate(self, example: Any) -> Any:
        """(n,) S of one example and its cost: a :class:`heat_module.heat.part.Example` in, a
        :class:`heat_module.heat.part.PartOutput` out (typed there: this module is imported by them)."""
        raise NotImplementedError(f"Expected {type(self).__name__} to implement estimate(example)")

    def to_dict(self) -> dict:
        """``{"name": ..., <settings>}``, the form :func:`s_estimator` reads back."""
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    def replace(self, **changes: Any) -> SEstimator:
        """A copy with ``changes`` to its settings."""
        return dataclasses.replace(self, **changes)


class IEstimator:
    """What an estimator of I (eq. 4) is: a frozen dataclass of its own settings, registered by name with
    :func:`register_i_estimator`, whose :meth:`estimate` returns I of one example and what it cost.

    Every I estimator has ``mask`` and ``mask_token_id`` (what replaces x_i's embedding). Implementations live in
    :mod:`heat_module.heat` (``i_exact``, ``i_fisher``).

    Attributes:
        name: the registered name (``"exact"``, ``"fisher"``).
        grows_with_n: whether its work grows with the context length (n masked runs).
        contrastive: whether it can compute I of a contrast log P(target) − log P(foil).
    """

    name: ClassVar[str] = ""
    grows_with_n: ClassVar[bool] = False
    contrastive: ClassVar[bool] = False

    def estimate(self, example: Any) -> Any:
        """(n,) I of one example and its cost: a :class:`heat_module.heat.part.Example` in, a
        :class:`heat_module.heat.part.PartOutput` out."""
        raise NotImplementedError(f"Expected {type(self).__name__} to implement estimate(example)")

    def to_dict(self) -> dict:
        """``{"name": ..., <settings>}``, the form :func:`i_estimator` reads back."""
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    def replace(self, **changes: Any) -> IEstimator:
        """A copy with ``changes`` to its settings."""
        return dataclasses.replace(self, **changes)


#: the registered S estimators, name -> class (filled by :func:`register_s_estimator` when :mod:`heat_module` is
#: imported)
S_ESTIMATORS: dict[str, type[SEstimator]] = {}
#: the registered I estimators, name -> class
I_ESTIMATORS: dict[str, type[IEstimator]] = {}


def register_s_estimator(name: str):
    """Class decorator: register an :class:`SEstimator` subclass under ``name``."""
    return _register(name, S_ESTIMATORS, SEstimator)


def register_i_estimator(name: str):
    """Class decorator: register an :class:`IEstimator` subclass under ``name``."""
    return _register(name, I_ESTIMATORS, IEstimator)


def _register(name: str, table: dict, base: type):
    def decorate(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise TypeError(f"Expected a subclass of {base.__name__}, got {cls!r}")
        if name in table and table[name] is not cls:
            raise ValueError(f"Expected a new {base.__name__} name, got {name!r} (already {table[name].__name__})")
        cls.name = name
        table[name] = cls
        return cls

    return decorate


def load_estimators() -> None:
    """Import the ``s_*`` and ``i_*`` modules of :data:`ESTIMATOR_PACKAGE` once: their estimators register
    themselves."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    try:  # set first: a module that reads the registry while it is imported sees what is registered so far
        package = importlib.import_module(ESTIMATOR_PACKAGE)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith(("s_", "i_")):
                importlib.import_module(f"{ESTIMATOR_PACKAGE}.{info.name}")
    except BaseException:
        _LOADED = False  # a failed import is retried (and raises again) on the next look-up
        raise


def s_estimator_names() -> list[str]:
    """The registered S estimators' names (the built-in ones loaded)."""
    load_estimators()
    return sorted(S_ESTIMATORS)


def i_estimator_names() -> list[str]:
    """The registered I estimators' names (the built-in ones loaded)."""
    load_estimators()
    return sorted(I_ESTIMATORS)


def s_estimator(value: SEstimator | str | dict) -> SEstimator:
    """An :class:`SEstimator` from itself, a registered name (its defaults) or ``{"name": ..., <settings>}``."""
    return _build("S estimator", value, S_ESTIMATORS, SEstimator)


def i_estimator(value: IEstimator | str | dict) -> IEstimator:
    """An :class:`IEstimator` from itself, a registered name (its defaults) or ``{"name": ..., <settings>}``."""
    return _build("I estimator", value, I_ESTIMATORS, IEstimator)


def _build(what: str, value: object, table: dict, base: type):
    load_estimators()
    if isinstance(value, base):
        return value
    if isinstance(value, str):
        settings, name = {}, value
    elif isinstance(value, dict) and isinstance(value.get("name"), str):
        settings = {k: v for k, v in value.items() if k != "name"}
        name = value["name"]
    else:
        raise ValueError(f"Expected an {what} (one of {sorted(table)}, by name, as {{'name': ...}} or an instance), "
                         f"got {value!r}")
    if name not in table:
        raise ValueError(f"Expected an {what} name in {sorted(table)}, got {name!r}")
    return table[name](**settings)


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Raise "Expected {name} to be one of [...], got ..." unless ``value`` is in ``allowed``."""
    if value not in allowed:
        raise ValueError(f"Expected {name} to be one of {list(allowed)}, got {value!r}")


def positive_int(name: str, value: object) -> None:
    """Raise "Expected {name} to be an integer >= 1, got ..." unless ``value`` is one."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Expected {name} to be an integer >= 1, got {value!r}")



def check_mask(mask: object, mask_token_id: object) -> None:
    """Validate what replaces a masked token's embedding (the I estimators' ``mask`` and ``mask_token_id``)."""
    check_choice("mask", mask, MASKS)
    if mask == "token" and mask_token_id is None:
        raise ValueError("Expected mask_token_id to be set when mask='token', got None")
