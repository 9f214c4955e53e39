"""Configuration of a HEAT run (paper eq. 5, Algorithm 1; docs/design.md).

``HEATConfig()`` is M·I (eq. 5 with β = 0, γ = 1: the gate times the KL information), chosen by the
choice study's pre-fixed rule (``benchmarks/RESULTS-choice.md``); eq. 5 with the Hessian term S is
``HEATConfig.preset("exact")``, ``"paper"`` or ``"fisher"``.

One dataclass, every field documented and validated in ``__post_init__`` with "Expected X, got Y" errors. Every
choice is defined once, as a ``Literal`` type; the tuples of allowed values (``SINKS``, ``CURVATURES``, ...) come
from it (``typing.get_args``), and every other module that lists choices imports them from here.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from heat_module.hashing import stable_hash

Curvature = Literal["exact", "fisher", "lowrank"]
Information = Literal["exact", "fisher"]
MaskKind = Literal["zero", "mean", "token"]
Ablation = Literal["full", "transition", "curvature", "information", "no_gate", "uniform_gate"]
Sink = Literal["keep", "first", "auto", "auto-median"]
Normalize = Literal["none", "sum", "rank"]
Aggregation = Literal["mean", "max", "sum"]
Backend = Literal["auto", "torch", "cpp", "triton", "cuda"]
HVPMode = Literal["auto", "forward_over_reverse", "reverse_over_reverse"]
FirstOrder = Literal["gated", "outside"]
Gate = Literal["full", "attention_only"]

CURVATURES: tuple[str, ...] = get_args(Curvature)
INFORMATIONS: tuple[str, ...] = get_args(Information)
MASKS: tuple[str, ...] = get_args(MaskKind)
ABLATIONS: tuple[str, ...] = get_args(Ablation)
SINKS: tuple[str, ...] = get_args(Sink)
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)
BACKENDS: tuple[str, ...] = get_args(Backend)
HVP_MODES: tuple[str, ...] = get_args(HVPMode)
FIRST_ORDERS: tuple[str, ...] = get_args(FirstOrder)
GATES: tuple[str, ...] = get_args(Gate)
NORMALIZES: tuple[str, ...] = get_args(Normalize)


@dataclass
class HEATConfig:
    """Hyper-parameters of HEAT.

    ``HEATConfig()`` is M·I (eq. 5 with β = 0): Attr_i = M[i]·I_i, the gate times the KL of masking x_i (in nats,
    γ = 1), chosen by the choice study's pre-fixed rule (best mean rank over Soft-NC, Soft-NS and ABPC on LongRA,
    TellMeWhy and WikiBio among the configurations costing ≤ 20× AttnLRP; see ``benchmarks/RESULTS-choice.md``). It
    runs one captured forward and n masked runs on the prefix cache, no HVPs. Eq. 5 with the Hessian term S:
    ``HEATConfig.preset("exact")`` (exact S, β = γ = 0.5), ``"paper"`` or ``"fisher"``.
    At β = 0 the S-only fields (``curvature``, ``probes``, ``hvp_*``, ``fisher_*``, ``rank``, ``oversample``,
    ``layers``) have no effect; setting one warns (:func:`s_only_changes`).

    Attributes:
        beta: weight β of the curvature term S (eq. 5). Must be ≥ 0. Default 0: S is not computed (M·I);
            eq. 5 as the paper writes it has β = 0.5 (``HEATConfig.preset("exact")`` / ``"paper"`` / ``"fisher"``).
        gamma: weight γ of the information term I (eq. 5). Must be ≥ 0. Default 1: Attr = M·I with I the KL in nats
            (every metric reported is scale-invariant, so γ = 1 ranks exactly like the evaluated γ = 0.5); the
            presets with S use γ = 0.5.
        alpha: weight α of the optional first-order term ‖∇_{x_i} g‖₁ (HEAT+FO, appendix eq. 22, Table 19). ≥ 0.
        first_order: where the α term enters (see :func:`heat_module.heat.combine.combine`): ``"gated"`` (default,
            the paper's eq. 22: Attr_i = M[i]·(α‖∇_{x_i} g‖₁ + βS_i + γI_i)) or ``"outside"`` (the gate applied to
            βS + γI only: Attr_i = M[i]·(βS_i + γI_i) + α‖∇_{x_i} g‖₁, this library's form before eq. 22 was
            followed). Both equal eq. 5 when α = 0.
        curvature: how S is estimated: ``"exact"`` block HVPs (eq. 3), ``"fisher"`` Gauss–Newton/Fisher
            surrogate, ``"lowrank"`` randomized eigendecomposition (HEAT-LR, Thm 4).
        information: how I is computed: ``"exact"`` masked forward passes (eq. 4), or ``"fisher"``: the Fisher
            quadratic form I_i ≈ ½ Σ_y P_y (u_{y,i}·(mask − x_i))² over the ``fisher_topk`` most probable tokens
            (:mod:`heat_module.heat.fisher_information`; with ``curvature="fisher"`` S and I share one forward and one
            K-cotangent backward, so the cost does not grow with n).
        probes: m, the number of Rademacher probes per token block (eq. 3). ≥ 1.
        hvp_chunk_size: how many (token, probe) HVPs are vmapped at once when ``hvp_memory_mb`` is ``None``, and
            the chunk of the Fisher / low-rank batched passes (memory/speed trade-off). ≥ 1.
        hvp_mode: how the exact HVPs are formed: ``"forward_over_reverse"`` (``jvp`` of ``grad``, vmapped),
            ``"reverse_over_reverse"`` (one ``create_graph`` gradient per run, batched double backwards) or
            ``"auto"`` (default: reverse-over-reverse on the CPU, where it measured faster; forward-over-reverse on
            other devices — see :func:`heat_module.heat.objective.resolve_hvp_mode`); identical values.
        hvp_memory_mb: activation budget (MB) of one batched exact-HVP call; the (token, probe) tangents per call
            follow from it and the recomputed length (:func:`heat_module.heat.curvature.hvp_chunk`). ``None``: use
            ``hvp_chunk_size`` instead. > 0.
        fisher_topk: K, the number of most probable next tokens summed in the Fisher surrogate. ≥ 1.
        fisher_mass: if set, the Fisher sum stops once the kept tokens cover this probability mass (0, 1].
        rank: k for ``"lowrank"``. ≥ 1.
        oversample: extra random directions for the randomized eigendecomposition. ≥ 0.
        layers: HEAT-LS: if set, differentiate w.r.t. the residual stream entering layer L-k (k = layers).
        rollout_layers: if set, sum M only over these layer indices (ρ still passes through every layer above):
            distinct ints in [-L, L), L the number of attention layers (negative ones count from the top).
        mask: what replaces x_i's embedding for I (eq. 4): ``"zero"``, ``"mean"`` embedding row, or ``"token"``.
        mask_token_id: the token id whose embedding is used when ``mask == "token"``.
        info_batch_size: how many masked variants are run in one forward pass. ≥ 1.
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
            β > 0), ``"sum"`` (S and I each divided by its sum over the context) or ``"rank"`` (each replaced by its
            normalised rank in [1/n, 1], ties averaged); see :func:`heat_module.heat.combine.normalize_component`.
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
        progress: a tqdm progress bar over the HVP and masked-run chunks of :meth:`HEAT.attribute`: ``None`` (auto:
            shown when the estimated work, n·m HVPs and n masked runs on a model of this size, exceeds a few
            seconds; see :func:`heat_module.heat.progress.expected_seconds`), ``True`` (always), ``False`` (never).
    """

    beta: float = 0.0
    gamma: float = 1.0
    alpha: float = 0.0
    first_order: FirstOrder = "gated"
    curvature: Curvature = "exact"
    information: Information = "exact"
    probes: int = 1
    hvp_chunk_size: int = 8
    hvp_mode: HVPMode = "auto"
    hvp_memory_mb: float | None = 2048.0
    fisher_topk: int = 16
    fisher_mass: float | None = None
    rank: int = 16
    oversample: int = 8
    layers: int | None = None
    rollout_layers: list[int] | None = None
    mask: MaskKind = "zero"
    mask_token_id: int | None = None
    info_batch_size: int = 8
    ablation: Ablation = "full"
    sink: Sink = "auto"
    gate: Gate = "full"
    normalize: Normalize = "none"
    window: int | None = None
    stride: int | None = None
    window_leakage: bool = False
    aggregation: Aggregation = "mean"
    backend: Backend = "auto"
    seed: int = 0
    check_finite: bool = True
    progress: bool | None = None
    extra: dict = field(default_factory=dict)

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
        check_choice("curvature", self.curvature, CURVATURES)
        check_choice("information", self.information, INFORMATIONS)
        check_choice("mask", self.mask, MASKS)
        check_choice("sink", self.sink, SINKS)
        check_choice("gate", self.gate, GATES)
        check_choice("normalize", self.normalize, NORMALIZES)
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("hvp_mode", self.hvp_mode, HVP_MODES)
        check_choice("first_order", self.first_order, FIRST_ORDERS)
        for name in ("probes", "hvp_chunk_size", "fisher_topk", "rank", "info_batch_size"):
            positive_int(name, getattr(self, name))
        if not isinstance(self.oversample, int) or self.oversample < 0:
            raise ValueError(f"Expected oversample to be an integer >= 0, got {self.oversample!r}")
        if self.hvp_memory_mb is not None and not (
                isinstance(self.hvp_memory_mb, (int, float)) and not isinstance(self.hvp_memory_mb, bool)
                and 0 < self.hvp_memory_mb < float("inf")):
            raise ValueError(
                f"Expected hvp_memory_mb to be a positive finite number or None, got {self.hvp_memory_mb!r}"
            )
        if self.fisher_mass is not None and not (
                isinstance(self.fisher_mass, (int, float)) and not isinstance(self.fisher_mass, bool)
                and 0.0 < self.fisher_mass <= 1.0):
            raise ValueError(f"Expected fisher_mass in (0, 1] or None, got {self.fisher_mass!r}")
        for name in ("layers", "window"):
            value = getattr(self, name)
            if value is not None:
                positive_int(name, value)
        if self.stride is not None:
            positive_int("stride", self.stride)
            if self.window is None:
                raise ValueError(
                    f"Expected window to be set when stride is given, got window=None, stride={self.stride}"
                )
            if self.stride > self.window:
                raise ValueError(f"Expected stride <= window, got stride={self.stride} > window={self.window}")
        if self.progress is not None and not isinstance(self.progress, bool):
            raise ValueError(f"Expected progress to be True, False or None (auto), got {self.progress!r}")
        if not isinstance(self.window_leakage, bool):
            raise ValueError(f"Expected window_leakage to be a bool, got {self.window_leakage!r}")
        if self.mask == "token" and self.mask_token_id is None:
            raise ValueError("Expected mask_token_id to be set when mask='token', got None")
        if self.rollout_layers is not None:
            if (not isinstance(self.rollout_layers, (list, tuple)) or not self.rollout_layers
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in self.rollout_layers)):
                raise ValueError(f"Expected rollout_layers to be a non-empty list of ints, got {self.rollout_layers!r}")
            if len(set(self.rollout_layers)) != len(self.rollout_layers):
                raise ValueError(f"Expected rollout_layers without repeats, got {self.rollout_layers!r}")
        unused = s_only_changes(self)
        if unused:
            fields = ", ".join(f"{k}={v!r}" for k, v in unused.items())
            warnings.warn(
                f"HEATConfig({fields}) has no effect at beta=0: the curvature S is not computed at beta=0, which is "
                "the default (HEATConfig() is M·I). Set beta > 0 for eq. 5 with S, or use "
                "HEATConfig.preset('exact') / HEATConfig.preset('fisher').",
                UserWarning, stacklevel=3,
            )

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
        return dataclasses.asdict(self)

    def hash(self) -> str:
        """A short stable hash of the fields (written next to each attribution by the writer). Left out, as they
        cannot change the scores: ``progress`` (it only changes what is printed), and ``first_order`` when α = 0,
        where it has no effect (so eq.-5 rows hash alike under both forms, while an α > 0 row of the ``"outside"``
        form is never taken for eq. 22). Fields that change only speed or memory (``hvp_chunk_size``,
        ``hvp_memory_mb``, ``hvp_mode``, ``info_batch_size``, ``backend``) stay in: they may change the last bits.
        """
        fields = self.to_dict()
        fields.pop("progress")
        if self.alpha == 0:
            fields.pop("first_order")
        return stable_hash(fields)

    def replace(self, **changes) -> HEATConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **changes) -> HEATConfig:
        """A named configuration (fields in ``changes`` override it): one of :data:`PRESETS`.

        What each one computes, and its cost in forward-pass equivalents (FE, ``result.cost``,
        :mod:`heat_module.heat.cost`); measured seconds and fidelity are in ``benchmarks/RESULTS-cost.md`` and the
        faithfulness study in ``benchmarks/RESULTS-choice.md``:

        - ``"default"``: ``HEATConfig()`` — M·I (eq. 5 with β = 0, γ = 1): one captured forward and n masked runs
          on the prefix cache, no HVPs: ≈ 1 + (n + 1)/2 + (b − 1)/2 FE with b = ``info_batch_size`` (a batch of b
          consecutive masked positions recomputes the suffix from its first one), quadratic in n in compute.
        - ``"exact"``: eq. 5 with exact S (m = 1, batched reverse-over-reverse HVPs on the prefix cache), exact I,
          β = γ = 0.5: the reference the approximate presets are compared with.
        - ``"paper"``: eq. 5 as the authors run it: exact S with m = 10 Rademacher probes (the default of their
          code, ``HessianSensitivity(num_samples=10)``; the paper's text does not fix m), exact I with the zero mask,
          β = γ = 0.5, no normalisation, and the gate M as written (``sink="keep"``: no attention-sink handling).
          About ten times the S cost of ``"exact"``.
        - ``"fisher"``: eq. 5 (β = γ = 0.5) with Fisher S (K = 16) + exact I, the cheapest variant with S whose I is
          eq. 4 itself: ≈ (n + 1)/2 + 18 FE. With ``normalize="rank"`` it agreed best with human rationales.
        - ``"fast"``: eq. 5 (β = γ = 0.5) with Fisher S + Fisher I (K = 16): one forward plus one 16-cotangent
          backward, a constant 18 FE at any n. Its HEAT scores follow ``"exact"`` closely on SmolLM2 (the gate M
          carries most of the ranking), but its I alone is a poor stand-in for eq. 4's I: use it for the HEAT
          scores, not for I.
        """
        if name not in PRESETS:
            raise ValueError(f"Expected preset to be one of {list(PRESETS)}, got {name!r}")
        return cls(**{**PRESETS[name], **changes})


#: the fields of each named configuration of :meth:`HEATConfig.preset`
PRESETS: dict[str, dict] = {
    "default": {},
    "exact": {"curvature": "exact", "probes": 1, "beta": 0.5, "gamma": 0.5},
    "paper": {"curvature": "exact", "probes": 10, "beta": 0.5, "gamma": 0.5, "alpha": 0.0, "normalize": "none",
              "sink": "keep"},
    "fisher": {"curvature": "fisher", "beta": 0.5, "gamma": 0.5},
    "fast": {"curvature": "fisher", "information": "fisher", "beta": 0.5, "gamma": 0.5},
}

#: the ablations in which S enters only through β (eq. 5's βS inside or outside the gate); ``"curvature"`` uses S
#: whatever β is, ``"transition"`` and ``"information"`` never
S_THROUGH_BETA: tuple[str, ...] = ("full", "no_gate", "uniform_gate")
#: fields that only change how S is computed (``information="fisher"`` also reads the ``fisher_*`` fields and
#: ``hvp_chunk_size``: :func:`s_only_changes` leaves them out then)
S_ONLY_FIELDS: tuple[str, ...] = ("curvature", "probes", "hvp_chunk_size", "hvp_mode", "hvp_memory_mb", "fisher_topk",
                                  "fisher_mass", "rank", "oversample", "layers")
_FISHER_INFORMATION_FIELDS = ("fisher_topk", "fisher_mass", "hvp_chunk_size")
#: a regular expression matching the start of the UserWarning ``HEATConfig`` gives when :func:`s_only_changes` is not
#: empty (for ``warnings.filterwarnings``; pyproject.toml turns that warning into an error in the tests)
S_UNUSED_WARNING = r"HEATConfig\(.*\) has no effect at beta=0"


def s_only_changes(config: HEATConfig) -> dict[str, object]:
    """The S-only fields of ``config`` set away from their defaults although S is not computed (β = 0 in an
    ablation that uses S only through β, :data:`S_THROUGH_BETA`): field -> value; empty when none (or β > 0).

    ``HEATConfig`` warns (UserWarning, :data:`S_UNUSED_WARNING`) when this is not empty: β = 0 is the
    default, so without the warning e.g. ``HEATConfig(curvature="fisher")`` would silently compute M·I with no S.
    Left out: ``seed`` (it seeds the probes of S, but is set as a general seed by callers), and with
    ``information="fisher"`` the fields its Fisher I reads (``fisher_topk``, ``fisher_mass``, ``hvp_chunk_size``).
    """
    if config.beta > 0 or config.ablation not in S_THROUGH_BETA:
        return {}
    defaults = {f.name: f.default for f in dataclasses.fields(HEATConfig)}
    names = [n for n in S_ONLY_FIELDS if not (config.information == "fisher" and n in _FISHER_INFORMATION_FIELDS)]
    return {n: getattr(config, n) for n in names if getattr(config, n) != defaults[n]}


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


def s_estimator(value: SEstimator | str | dict) -> SEstimator:
    """An :class:`SEstimator` from itself, a registered name (its defaults) or ``{"name": ..., <settings>}``."""
    return _build("S estimator", value, S_ESTIMATORS, SEstimator)


def i_estimator(value: IEstimator | str | dict) -> IEstimator:
    """An :class:`IEstimator` from itself, a registered name (its defaults) or ``{"name": ..., <settings>}``."""
    return _build("I estimator", value, I_ESTIMATORS, IEstimator)


def _build(what: str, value: object, table: dict, base: type):
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
