"""Configuration of a HEAT run (paper eq. 5, Algorithm 1; docs/design.md).

One dataclass, every field documented and validated in ``__post_init__`` with "Expected X, got Y" errors. Every
choice is defined once, as a ``Literal`` type; the tuples of allowed values (``SINKS``, ``CURVATURES``, ...) come
from it (``typing.get_args``), and every other module that lists choices imports them from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, get_args

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

    Attributes:
        beta: weight β of the curvature term S (eq. 5). Must be ≥ 0.
        gamma: weight γ of the information term I (eq. 5). Must be ≥ 0.
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
        rollout_layers: if set, sum M only over these layer indices (ρ still passes through every layer above).
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

    beta: float = 0.5
    gamma: float = 0.5
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
        check_choice("curvature", self.curvature, CURVATURES)
        check_choice("information", self.information, INFORMATIONS)
        check_choice("mask", self.mask, MASKS)
        check_choice("ablation", self.ablation, ABLATIONS)
        check_choice("sink", self.sink, SINKS)
        check_choice("gate", self.gate, GATES)
        check_choice("normalize", self.normalize, NORMALIZES)
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("hvp_mode", self.hvp_mode, HVP_MODES)
        check_choice("first_order", self.first_order, FIRST_ORDERS)
        for name in ("probes", "hvp_chunk_size", "fisher_topk", "rank", "info_batch_size"):
            _positive_int(name, getattr(self, name))
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
                _positive_int(name, value)
        if self.stride is not None:
            _positive_int("stride", self.stride)
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
            if not all(isinstance(x, int) for x in self.rollout_layers) or not self.rollout_layers:
                raise ValueError(f"Expected rollout_layers to be a non-empty list of ints, got {self.rollout_layers!r}")

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

        Measured on SmolLM2-135M, one torch thread of a shared 2-core Intel Xeon, ReAGent contexts
        (``benchmarks/RESULTS.md``, issue 13; seconds ±30 % from the other work on the machine; FE = forward-pass
        equivalents of ``result.cost``):

        - ``"default"``: ``HEATConfig()`` — exact S (m = 1, batched reverse-over-reverse HVPs on the prefix cache)
          and exact I: 61 s and 194 FE per example at n = 64 (701 FE at n = 256). The reference of the figures below.
        - ``"paper"``: eq. 5 as the authors run it: exact S with m = 10 Rademacher probes (the default of their
          code, ``HessianSensitivity(num_samples=10)``; the paper's text does not fix m), exact I with the zero mask,
          β = γ = 0.5, no normalisation, and the gate M as written (``sink="keep"``: no attention-sink
          handling). 1404 FE at n = 64;
          its S alone took 225 s at n = 48 (2.0× faster than the authors' own algorithm, same values).
        - ``"fisher"``: Fisher S (K = 16) + exact I, the cheapest variant whose I is eq. 4 itself: 20 s, 54 FE at
          n = 64 (≈ (n + 1)/2 + 18 FE: 150 at n = 256); scores vs ``"default"``: Spearman ρ 0.946, top-5 0.86.
        - ``"fast"``: Fisher S + Fisher I (K = 16): one forward plus one 16-cotangent backward, 18 FE at any n
          (7.5 s at n = 64). Scores vs ``"default"``: ρ 0.945, top-5 0.92 at n = 64 (as close as ``"fisher"``:
          the gate M carries most of the ranking on SmolLM2; ρ 0.973 vs ``"fisher"`` at n = 256, 21.5 s); but its I
          alone ranks tokens like the exact I only at ρ ≈ 0.56 (n = 64) and 0.34 (n = 256): use it for the HEAT
          scores, not as a stand-in for eq. 4's I.
        """
        if name not in PRESETS:
            raise ValueError(f"Expected preset to be one of {list(PRESETS)}, got {name!r}")
        return cls(**{**PRESETS[name], **changes})


#: the fields of each named configuration of :meth:`HEATConfig.preset`
PRESETS: dict[str, dict] = {
    "default": {},
    "paper": {"curvature": "exact", "probes": 10, "beta": 0.5, "gamma": 0.5, "alpha": 0.0, "normalize": "none",
              "sink": "keep"},
    "fisher": {"curvature": "fisher"},
    "fast": {"curvature": "fisher", "information": "fisher"},
}


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Raise "Expected {name} to be one of [...], got ..." unless ``value`` is in ``allowed``."""
    if value not in allowed:
        raise ValueError(f"Expected {name} to be one of {list(allowed)}, got {value!r}")


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Expected {name} to be an integer >= 1, got {value!r}")
