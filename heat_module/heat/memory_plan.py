"""The memory planner: predicted peak memory of each stage of one HEAT attribution, and the chunk sizes that keep it
under a budget (``HEATConfig.max_memory``).

Budget. ``max_memory`` is the memory one attribution may add on top of the loaded model (bytes, or a string such
as ``"6GB"`` / ``"512MiB"``: KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024, as in accelerate);
``None`` means what the device has now: the available RAM on the CPU (``MemAvailable``), the free memory of the CUDA
device. The plan only ever lowers the configured sizes (the exact I's ``batch_size``, the exact S's HVP chunk, the
Fisher estimators' ``chunk``, HEAT-LR's ``chunk``) and picks the gate's torch-path block: with enough memory it
changes nothing; chunk and block sizes change memory, not the work, and the scores only in the last bits.

Stages and their predicted peaks (bytes above the loaded model; it = the model dtype's item size, f = 4, L layers,
H query heads, H_kv key/value heads, d_h head size, d hidden size, F MLP size, b a batch of sequences):

Every stage also counts :data:`FIRST_USE` (64 MiB: what the first attribution loads, allocator slack).

- ``captures`` (the captured forward, kept until the end): C(n) = s·L·n·(H + 2·H_kv)·d_h·it + n²·(masks·it + q)
  (every layer's q, k, v with allocator slack s; the model's additive masks, one per mask kind: causal, sliding, and
  q bytes per entry of their construction), plus one forward's transient T(n, 1);
- the transient of a no-grad forward of b sequences of n tokens (SDPA attention over n keys, no n × n scores):
  T(n, b) = b·(A·n·(d + F)·it + masks·n²·it), + b·3·H·n²·it for a model that runs the eager attention (learned
  sinks, soft-capping: one layer's scores, probabilities and softmax scratch at a time; no layer's are kept);
- ``rollout`` (the gate M): the C++/CUDA/Triton kernels stream tiles of 64 query rows (never n × n):
  ≈ 4·n·(d + 64)·f; the torch path (the torch backend, learned sinks, masks the kernels do not cover) recomputes
  blocks of r query rows: ≈ r·n·(3·H·f + 1) + 2·H·n·(d_h + 1)·f. The plan picks the largest r that fits, at most
  ``ROLLOUT_BLOCK`` = 256 (larger blocks were no faster: 0.20 s for 256 rows against 0.44 s for one block of all
  2048 on one SmolLM2-sized layer, one thread) and at most n (``MemoryPlan.rollout_block``; HEAT-WIN's batched
  windows split the block between them), and refuses when r = 1 does not fit;
- ``information`` (exact I, eq. 4): C(n) + T(n, b): the first chunk of b masked variants recomputes all n positions
  (later chunks recompute shorter suffixes on the prefix cache);
- ``curvature`` (exact S, eq. 3): C(n) + G(n) + c·P(n) for c tangents per batched HVP call, with the
  ``create_graph`` gradient G(n) = 8·n·L·(d + F)·it + 3·L·H·n²·f and per tangent
  P(n) = 16·n·L·(d + F)·it (:func:`heat_module.heat.curvature.hvp_chunk`'s measured 16 activation tensors) +
  4·L·H·n²·f (eager attention under double differentiation) — the attention terms are estimates, not yet measured
  past short contexts;
- ``fisher`` (Fisher S / Fisher I, one forward kept for K backwards): C(n) + R·n·L·(d + F)·it + c·n·(d + F)·it/4
  for c cotangents per batched backward; from the length the Fisher code checkpoints its decoder layers
  (:func:`heat_module.heat.fisher.checkpoints_layers`) C(n) + s_c·(L·n·d·it + R·n·(d + F)·it + c·n·(d + F)·it +
  K·n·d·it): every layer's input, one recomputed layer's activations, the cotangents through it and the K gradients;
- ``lowrank`` (HEAT-LR, ``LowRankS``): C(n) + G'(n) + c·P'(n) for c HVPs per batched call over all n positions
  (no prefix cache; G' = 12·act + 4·att, P' = 8·act + 5·att with act = n·L·(d + F)·it and att = L·H·n²·f, measured)
  + λ·ℓ·n·d·f for its sketch of ℓ = rank + oversample columns;
- ``windows`` (HEAT-WIN): the full context's captured forward plus every window's (each W + 1 tokens, batched):
  C(n) + nw·C(W + 1) + T(W + 1, nw); each window is then planned as an attribution of W + 1 tokens.

:func:`plan_memory` picks, per stage, the largest size not above the configured one whose predicted peak fits,
and raises :class:`MemoryPlanError` ("needs at least X at n = ..., got max_memory = Y; try ...") when even size 1
does not fit. s, q, A, R, s_c and λ (:data:`CAPTURE_SLACK`, :data:`CAPTURE_QUADRATIC`, :data:`FORWARD_LINEAR`,
:data:`FISHER_GRAPH`, :data:`FISHER_CHECKPOINTED`, :data:`LOWRANK_FACTORS`) are measured on SmolLM2 and rounded up;
``benchmarks/bench_memory_plan.py`` prints predicted against measured peak RSS.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from heat_module.heat.curvature import hvp_chunk
from heat_module.heat.fisher import checkpoints_layers
from heat_module.heat.i_exact import ExactI
from heat_module.heat.i_fisher import FisherI
from heat_module.heat.s_exact import ExactS
from heat_module.heat.s_fisher import FisherS
from heat_module.heat.s_lowrank import LowRankS
from heat_module.heat.transition import ROLLOUT_BLOCK
from heat_module.lm.offload import input_device
from heat_module.memory_size import parse_memory

logger = logging.getLogger("heat_module")

# Measured on SmolLM2 (fp32, CPU, one thread, n = 256..8192; benchmarks/bench_memory_plan.py, RESULTS-long-context.md),
# rounded up so the prediction bounds the measured peak RSS:
#: held captures per the q, k, v bytes they store (allocator slack included)
CAPTURE_SLACK = 1.8
#: bytes per n² entry held with the captures besides the model's masks (the masks' construction)
CAPTURE_QUADRATIC = 11.0
#: transient of a no-grad forward per sequence: bytes per token per (d + F)·it (plus one n² mask per sequence)
FORWARD_LINEAR = 4.0
#: the Fisher forward kept for its K backwards: activations per token per L·(d + F)·it (SDPA attention)
FISHER_GRAPH = 6.5
#: slack on what the checkpointed Fisher backward keeps (layer inputs, one layer's activations, cotangents, u):
#: measured 1.72 at n = 2048, 1.86 at 4096 and, for a whole "fast" attribution at 8192, 2.17; rounded up
FISHER_CHECKPOINTED = 2.2
#: HEAT-LR's gradient graph (kept for all its HVPs) and each HVP of a chunk: (per act, per att) of :func:`lowrank_bytes`
#: (measured with LowRankS chunks 1, 2, 4 at n = 64..256, each in a fresh process)
LOWRANK_GRAPH = (12.0, 4.0)
LOWRANK_TANGENT = (8.0, 5.0)
#: HEAT-LR's sketch: bytes per entry of its ℓ columns of n·d (Ω, Y, Q, H·Q at ≥ fp32, the QR's fp64 copies; read
#: from the code, not fitted: the measured runs had ℓ = 4)
LOWRANK_FACTORS = 32.0
#: added to every stage: what an attribution's first use loads (the kernel library, lazily imported modules) and
#: allocator slack (a whole default attribution at n = 512 peaked 48 MB above its largest stage measured alone)
FIRST_USE = 64 * 2**20
ROLLOUT_TILE = 64
#: n² tensors per query head that the eager attention holds at once in one layer (scores, probabilities, softmax)
EAGER_SCRATCH = 3
#: the torch path of the gate: (B, H, rows, n) tensors alive at once per block (scores, probabilities, the product)
ROLLOUT_SCORES = 3


class MemoryPlanError(MemoryError):
    """No choice of chunk sizes keeps the predicted peak under the budget."""


def format_bytes(size: float) -> str:
    """``1.23 GB`` / ``456 MB`` (powers of 1000)."""
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def available_memory(device: torch.device | str = "cpu") -> int:
    """Bytes the device has free now: the free memory of a CUDA device, else the available RAM (``MemAvailable``
    of /proc/meminfo, or psutil's where there is no /proc)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.virtual_memory().available)


@dataclass(frozen=True)
class ModelDims:
    """The sizes the planner needs: layers, hidden d, MLP F, query / key-value heads, head size, item size, the
    number of distinct attention mask kinds (2 for models with sliding and full layers), and whether the forward runs
    the eager attention (learned sinks or soft-capping: :mod:`heat_module.lm.capture`), whose (b, H, n, n) scores
    and probabilities exist one layer at a time (the capture keeps none)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    itemsize: int = 4
    masks: int = 1
    eager_attention: bool = False

    @classmethod
    def from_model(cls, model: nn.Module) -> ModelDims:
        cfg = getattr(model, "config", None)
        cfg = getattr(cfg, "text_config", None) or cfg
        if cfg is None:
            raise TypeError(f"Expected a transformers model with a config, got {type(model).__name__}")

        def get(*names, default=None):
            for name in names:
                value = getattr(cfg, name, None)
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    return value
            return default

        hidden = get("hidden_size", "n_embd", "d_model")
        layers = get("num_hidden_layers", "n_layer", "num_layers")
        heads = get("num_attention_heads", "n_head")
        if hidden is None or layers is None or heads is None:
            raise TypeError(f"Expected hidden_size, num_hidden_layers and num_attention_heads in the config of "
                            f"{type(model).__name__}, got {hidden}, {layers}, {heads}")
        param = next(model.parameters(), None)
        itemsize = param.element_size() if param is not None and param.is_floating_point() else 4
        kinds = set(getattr(cfg, "layer_types", None) or [])
        return cls(layers=layers, hidden=hidden, intermediate=get("intermediate_size", "n_inner", default=4 * hidden),
                   heads=heads, kv_heads=get("num_key_value_heads", default=heads),
                   head_dim=get("head_dim", default=hidden // heads), itemsize=itemsize, masks=max(1, len(kinds)),
                   eager_attention=learned_sinks(model) or bool(getattr(cfg, "attn_logit_softcapping", None)))


def captures_bytes(dims: ModelDims, n: int) -> float:
    """C(n) without the forward's transient: every layer's q, k, v and the model's masks."""
    qkv = dims.layers * n * (dims.heads + 2 * dims.kv_heads) * dims.head_dim * dims.itemsize
    return CAPTURE_SLACK * qkv + n * n * (dims.masks * dims.itemsize + CAPTURE_QUADRATIC)


def forward_bytes(dims: ModelDims, n: int, batch: int = 1) -> float:
    """T(n, b): the transient of one no-grad forward of ``batch`` sequences of n tokens (with the eager attention,
    one layer's scores, probabilities and softmax scratch: 3·H·n² per sequence)."""
    width = (dims.hidden + dims.intermediate) * dims.itemsize
    eager = EAGER_SCRATCH * dims.heads * n * n * dims.itemsize if dims.eager_attention else 0
    return batch * (FORWARD_LINEAR * n * width + dims.masks * n * n * dims.itemsize + eager)


def rollout_bytes(dims: ModelDims, n: int, block: int | None = None, sequences: int = 1) -> float:
    """The gate M's scratch: the kernels' streamed 64-row tiles (``block=None``), or the torch path's blocks of
    ``block`` query rows (:func:`heat_module.heat.transition.blocked_phi`: scores, probabilities and the ρ-weighted
    product of the block, its mask rows, the keys repeated per query head and Φ), in the compute dtype (≥ fp32).
    ``sequences`` run batched (HEAT-WIN's windows) share the block's rows but each keeps its keys and Φ."""
    if block is None:
        return 4.0 * n * (dims.hidden + ROLLOUT_TILE) * 4
    f = max(4, dims.itemsize)
    rows = min(int(block), n)
    return rows * n * (ROLLOUT_SCORES * dims.heads * f + 1) + sequences * 2 * dims.heads * n * (dims.head_dim + 1) * f


def hvp_bytes(dims: ModelDims, n: int, chunk: int) -> float:
    """The exact S's gradient graph plus ``chunk`` tangents (see the module docstring)."""
    act = n * dims.layers * (dims.hidden + dims.intermediate) * dims.itemsize
    att = dims.layers * dims.heads * n * n * 4
    return 8 * act + 3 * att + chunk * (16 * act + 4 * att)


def fisher_bytes(dims: ModelDims, n: int, chunk: int, topk: int = 16) -> float:
    """The Fisher forward kept for its backwards plus ``chunk`` cotangents per batched backward, in the regime
    :func:`heat_module.heat.fisher.fisher_factors` runs at n tokens.

    Not checkpointed (n < ``CHECKPOINT_FROM``): every layer's activations, R·n·L·(d + F)·it, plus c·n·(d + F)·it/4.
    Checkpointed (:func:`heat_module.heat.fisher.checkpoints_layers`): s_c times the sum of what is alive while
    one layer is recomputed — every decoder layer's input (L·n·d·it), that layer's activations (R·n·(d + F)·it),
    the c cotangents through it (c·n·(d + F)·it) and the K gradients u collected so far (K·n·d·it)."""
    width = (dims.hidden + dims.intermediate) * dims.itemsize
    if not checkpoints_layers(n):
        return FISHER_GRAPH * n * dims.layers * width + chunk * n * width / 4
    token = n * dims.hidden * dims.itemsize
    return FISHER_CHECKPOINTED * (dims.layers * token + FISHER_GRAPH * n * width + chunk * n * width
                                  + max(topk, chunk) * token)


def lowrank_bytes(dims: ModelDims, n: int, chunk: int, directions: int) -> float:
    """HEAT-LR (:func:`heat_module.heat.lowrank.curvature_lowrank`): the gradient graph its HVPs go through, over all
    n positions (no prefix cache), G = g_a·act + g_s·att, plus ``chunk`` HVPs at a time, c·(p_a·act + p_s·att)
    (act = n·L·(d + F)·it, att = L·H·n²·4; :data:`LOWRANK_GRAPH`, :data:`LOWRANK_TANGENT`), plus the sketch's
    ℓ = ``directions`` columns of n·d (Ω, Y, Q, H·Q and the QR's fp64 copies, ≥ fp32; :data:`LOWRANK_FACTORS`)."""
    act = n * dims.layers * (dims.hidden + dims.intermediate) * dims.itemsize
    att = dims.layers * dims.heads * n * n * 4
    graph = LOWRANK_GRAPH[0] * act + LOWRANK_GRAPH[1] * att
    tangent = LOWRANK_TANGENT[0] * act + LOWRANK_TANGENT[1] * att
    return graph + chunk * tangent + LOWRANK_FACTORS * directions * n * dims.hidden * max(4, dims.itemsize)


@dataclass(frozen=True)
class MemoryPlan:
    """What :func:`plan_memory` chose for one attribution of n tokens.

    Attributes:
        n: the context length planned for.
        budget: bytes allowed above the loaded model.
        info_batch: masked variants per forward (exact I), ``None`` when I is not exact.
        hvp_chunk: (token, probe) tangents per batched HVP call (exact S), ``None`` when S is not exact.
        fisher_chunk: cotangents per batched Fisher backward, ``None`` when nothing is Fisher.
        lowrank_chunk: HVPs per batched call of HEAT-LR (``LowRankS.chunk``), ``None`` when S is not low-rank.
        rollout: ``"tiled"`` (the kernels, 64 query rows per tile), ``"blocked"`` (the torch path, ``rollout_block``
            query rows per block) or ``"unplanned"`` (a model whose sizes are unknown: no stages, the configured
            sizes).
        rollout_block: query rows per block of the gate's torch path (learned sinks, masks the kernels do not
            cover, the torch backend): the largest that fits, at most the configured ``ROLLOUT_BLOCK`` and n;
            ``None`` when unplanned.
        stages: predicted peak bytes of each stage with the chosen sizes.
        hvp_lowered, fisher_lowered, lowrank_lowered: whether that chunk is below the configured one.
    """

    n: int
    budget: int
    info_batch: int | None = None
    hvp_chunk: int | None = None
    fisher_chunk: int | None = None
    lowrank_chunk: int | None = None
    rollout: str = "tiled"
    rollout_block: int | None = None
    stages: dict[str, float] = field(default_factory=dict)
    hvp_lowered: bool = False
    fisher_lowered: bool = False
    lowrank_lowered: bool = False

    @property
    def peak(self) -> float:
        """The largest predicted stage peak."""
        return max(self.stages.values(), default=0.0)

    def summary(self) -> str:
        """The sizes chosen and the predicted peak, without the budget (which varies from call to call when it is
        the device's free memory): what ``result.cost.details["memory_plan"]`` records."""
        if not self.stages:
            return "unplanned (the model's config does not give its sizes); the configured chunk sizes"
        sizes = [f"{name} {value}" for name, value in (("masked-run batch", self.info_batch),
                                                      ("HVP chunk", self.hvp_chunk),
                                                      ("Fisher chunk", self.fisher_chunk),
                                                      ("low-rank HVP chunk", self.lowrank_chunk)) if value is not None]
        rollout = (f"rollout in blocks of {self.rollout_block} query rows" if self.rollout == "blocked"
                   else f"{self.rollout} rollout")
        return f"{', '.join(sizes + [rollout])}; predicted peak {format_bytes(self.peak)}"

    def describe(self) -> str:
        """One line for the log: the sizes chosen and the predicted peak against the budget."""
        return f"memory plan at n = {self.n}: {self.summary()} of {format_bytes(self.budget)}"

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "peak": self.peak}

    def applied(self, config):
        """``config`` (a :class:`~heat_module.config.HEATConfig`) with its estimators' sizes lowered to this plan's:
        the exact I's ``batch_size``, the exact S's ``hvp_chunk_size`` (with ``hvp_memory_mb=None``, so the chunk is
        used as given), every Fisher estimator's ``chunk`` above the planned one (a Fisher S and I sharing their
        factors keep equal chunks) and HEAT-LR's ``chunk``; ``config`` itself when nothing is lowered. (The gate's
        ``rollout_block`` is not a config setting: HEAT passes it to the gate.)"""
        changes: dict = {}
        s, i = config.curvature, config.information
        if isinstance(s, ExactS) and self.hvp_lowered and self.hvp_chunk is not None:
            changes["curvature"] = dataclasses.replace(s, hvp_chunk_size=self.hvp_chunk, hvp_memory_mb=None)
        if isinstance(s, FisherS) and self.fisher_chunk is not None and self.fisher_chunk < s.chunk:
            changes["curvature"] = dataclasses.replace(s, chunk=self.fisher_chunk)
        if isinstance(s, LowRankS) and self.lowrank_chunk is not None and self.lowrank_chunk < s.chunk:
            changes["curvature"] = dataclasses.replace(s, chunk=self.lowrank_chunk)
        if isinstance(i, ExactI) and self.info_batch is not None and self.info_batch < i.batch_size:
            changes["information"] = dataclasses.replace(i, batch_size=self.info_batch)
        if isinstance(i, FisherI) and self.fisher_chunk is not None and self.fisher_chunk < i.chunk:
            changes["information"] = dataclasses.replace(i, chunk=self.fisher_chunk)
        return config.replace(**changes) if changes else config


def _largest(limit: int, fits) -> int | None:
    """The largest size in [1, limit] with ``fits(size)`` (fits is monotone: true up to some size), else None."""
    if not fits(1):
        return None
    lo, hi = 1, max(1, limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo


def plan_memory(dims: ModelDims, n: int, budget: int, *, exact_s: bool = False, exact_i: bool = False,
                fisher: bool = False, probes: int = 1, hvp_chunk: int = 8, info_batch: int = 8,
                fisher_chunk: int = 8, fisher_topk: int = 16, lowrank: bool = False, lowrank_chunk: int = 8,
                lowrank_directions: int = 24, lowrank_layers: int | None = None, window: int | None = None,
                stride: int | None = None, rollout_torch: bool = False, rollout_block: int = ROLLOUT_BLOCK
                ) -> MemoryPlan:
    """The chunk sizes that keep every stage's predicted peak under ``budget`` (bytes), never above the
    configured ones (see the module docstring for the stages).

    Args:
        dims: the model's sizes (:meth:`ModelDims.from_model`).
        n: context length.
        exact_s, exact_i, fisher, lowrank: which stages run (exact S's HVPs, exact I's masked runs, a Fisher
            forward, HEAT-LR's sketch).
        probes: m, Rademacher probes per token (a run's tangents are at most its tokens × m).
        hvp_chunk, info_batch, fisher_chunk, lowrank_chunk, rollout_block: the configured sizes (upper bounds;
            the gate's block defaults to :data:`heat_module.heat.transition.ROLLOUT_BLOCK` query rows: larger
            blocks were no faster, see the module docstring).
        fisher_topk: K, the Fisher gradients kept.
        lowrank_directions: HEAT-LR's ℓ = rank + oversample (at most n·d).
        lowrank_layers: HEAT-LS's k with HEAT-LR (the HVPs run through the top k layers only), ``None``: all.
        window, stride: HEAT-WIN; with n − 1 > window the context runs as windows of window + 1 tokens.
        rollout_torch: whether the gate runs its torch path on every layer (the torch backend, learned sinks); the
            block size is chosen either way, for layers whose mask only the torch path covers.
    Raises:
        MemoryPlanError: when a stage does not fit even at size 1.
    """
    if n < 1 or budget < 1:
        raise ValueError(f"Expected n >= 1 and budget >= 1, got n={n}, budget={budget}")
    stages: dict[str, float] = {}
    span, count, held = n, 1, FIRST_USE + captures_bytes(dims, n)
    if window is not None and n - 1 > window:  # the full context's captures, then every window's (batched)
        span = window + 1
        count = 1 + math.ceil((n - 1 - window) / (stride or max(1, window // 2)))
        held += count * captures_bytes(dims, span)
        stages["windows"] = held + max(forward_bytes(dims, n), forward_bytes(dims, span, count))
    else:
        stages["captures"] = held + forward_bytes(dims, n)
    base = held
    # the windows' gate runs batched; its block is split over the windows, so its scratch stays one window's
    block = _largest(min(span, rollout_block), lambda r: base + rollout_bytes(dims, span, r, count) <= budget)
    blocked = base + rollout_bytes(dims, span, block or 1, count)
    tiled = held + count * rollout_bytes(dims, span)
    stages["rollout"] = blocked if rollout_torch else tiled
    chosen: dict[str, int | None] = {"info_batch": None, "hvp_chunk": None, "fisher_chunk": None,
                                     "lowrank_chunk": None}
    lr_dims = dims if lowrank_layers is None else dataclasses.replace(dims, layers=min(lowrank_layers, dims.layers))
    ell = max(1, min(lowrank_directions, span * dims.hidden))
    wants = [("info_batch", exact_i, info_batch, "information",
              lambda b: base + forward_bytes(dims, span, b)),
             ("hvp_chunk", exact_s, hvp_chunk, "curvature", lambda c: base + hvp_bytes(dims, span, c)),
             ("fisher_chunk", fisher, fisher_chunk, "fisher",
              lambda c: base + fisher_bytes(dims, span, c, fisher_topk)),
             ("lowrank_chunk", lowrank, lowrank_chunk, "lowrank",
              lambda c: base + lowrank_bytes(lr_dims, span, c, ell))]
    for key, wanted, limit, stage, predict in wants:
        if not wanted:
            continue
        size = _largest(limit, lambda s, predict=predict: predict(s) <= budget)
        if size is None:
            raise MemoryPlanError(_refusal(n, budget, stage, predict(1), window))
        chosen[key] = size
        stages[stage] = predict(size)
    for stage in ("windows", "captures", "rollout"):
        if stage in stages and stages[stage] > budget:
            raise MemoryPlanError(_refusal(n, budget, stage, stages[stage], window))
    return MemoryPlan(n=n, budget=int(budget), rollout="blocked" if rollout_torch else "tiled",
                      rollout_block=block or 1, stages=stages,
                      hvp_lowered=chosen["hvp_chunk"] is not None and chosen["hvp_chunk"] < hvp_chunk,
                      fisher_lowered=chosen["fisher_chunk"] is not None and chosen["fisher_chunk"] < fisher_chunk,
                      lowrank_lowered=chosen["lowrank_chunk"] is not None and chosen["lowrank_chunk"] < lowrank_chunk,
                      **chosen)


def _refusal(n: int, budget: int, stage: str, needed: float, window: int | None) -> str:
    hint = "try preset('fast')" + ("" if window is not None else f" or window={max(64, min(1024, n // 8))}")
    return (f"HEAT's {stage} stage needs at least {format_bytes(needed)} at n = {n}, got max_memory = "
            f"{format_bytes(budget)}; {hint}, or a larger max_memory")


def learned_sinks(model: nn.Module) -> bool:
    """Whether an attention module of ``model`` has learned sink logits (GPT-OSS's ``sinks``): the gate then runs
    its torch path on those layers."""
    return any(isinstance(getattr(module, "sinks", None), torch.Tensor) for module in model.modules())


def plan_for(model: nn.Module, n: int, config, dtype: torch.dtype | None = None) -> MemoryPlan:
    """:func:`plan_memory` for a :class:`~heat_module.config.HEATConfig` on ``model`` (``config.max_memory``, or
    what the model's device has free when it is ``None``), logged at INFO level. The configured sizes are the
    estimators' (``ExactS.hvp_chunk_size`` / ``hvp_memory_mb``, ``ExactI.batch_size``, ``FisherS.chunk`` /
    ``FisherI.chunk``, ``LowRankS.chunk``) and, for the gate's torch path, at most ``ROLLOUT_BLOCK`` query rows per
    block. A model
    whose config lacks the sizes (hidden size, layers, heads) gets the configured sizes unplanned when
    ``max_memory`` is ``None`` and a ``TypeError`` when it is set."""
    s = config.curvature if config.computes_s else None
    i = config.information if config.computes_i else None
    exact_i = isinstance(i, ExactI)
    try:
        dims = ModelDims.from_model(model)
    except TypeError:
        if config.max_memory is not None:
            raise
        # a model without the usual config sizes: nothing to plan with, so the configured sizes stay
        return MemoryPlan(n=n, budget=0, info_batch=i.batch_size if exact_i else None, rollout="unplanned")
    if dtype is not None:
        dims = dataclasses.replace(dims, itemsize=torch.empty((), dtype=dtype).element_size())
    device = input_device(model)
    budget = parse_memory(config.max_memory)
    if budget is None:
        budget = available_memory(device)
    exact_s = isinstance(s, ExactS)
    hvp_limit = hvp_chunk(model, n, s.hvp_memory_mb, None if s.hvp_memory_mb is not None else s.hvp_chunk_size,
                          dims.itemsize) if exact_s else 1
    fisher_parts = [part for part in (s, i) if isinstance(part, (FisherS, FisherI))]
    lowrank = isinstance(s, LowRankS)
    from heat_kernels import extension

    try:
        torch_path = extension.resolve_backend("rollout_phi", config.backend, device.type) == "torch"
    except (RuntimeError, ValueError, ImportError):  # the rollout itself reports an unusable backend
        torch_path = False
    plan = plan_memory(
        dims, n, budget, exact_s=exact_s, exact_i=exact_i, fisher=bool(fisher_parts),
        probes=s.probes if s is not None else 1, hvp_chunk=hvp_limit, info_batch=i.batch_size if exact_i else 1,
        fisher_chunk=max((part.chunk for part in fisher_parts), default=1),
        fisher_topk=max((part.topk for part in fisher_parts), default=1), lowrank=lowrank,
        lowrank_chunk=s.chunk if lowrank else 1, lowrank_directions=s.rank + s.oversample if lowrank else 1,
        lowrank_layers=s.layers if lowrank else None, window=config.window, stride=config.effective_stride,
        rollout_torch=torch_path or learned_sinks(model),
    )
    logger.info(plan.describe())
    return plan
