"""The memory planner as plain functions (budget parsing, the sizes it picks, its refusal) and end to end: a tight
``max_memory`` lowers HEAT's chunk sizes and gives the same scores."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from heat_module.config import FAST_FISHER_FE, HEATConfig
from heat_module.heat import estimator, fisher, i_exact, i_fisher, progress, s_exact, s_lowrank, transition
from heat_module.heat.estimator import HEAT
from heat_module.heat.i_exact import ExactI
from heat_module.heat.i_fisher import FisherI
from heat_module.heat.memory_plan import (
    FIRST_USE,
    MemoryPlanError,
    ModelDims,
    available_memory,
    captures_bytes,
    fisher_bytes,
    forward_bytes,
    plan_for,
    plan_memory,
    rollout_bytes,
)
from heat_module.heat.s_exact import ExactS
from heat_module.heat.s_fisher import FisherS
from heat_module.heat.s_lowrank import LowRankS
from heat_module.lm.capture import capture, install
from heat_module.testing import TINY_VOCAB, tiny_model
from tests.heat_module.heat.recording_bar import Bar

SMOLLM2 = ModelDims(layers=30, hidden=576, intermediate=1536, heads=9, kv_heads=3, head_dim=64)
HUGE = 10**15


def test_config_validates_max_memory():
    assert HEATConfig(max_memory="6GB").max_memory == "6GB"
    with pytest.raises(ValueError, match="max_memory"):
        HEATConfig(max_memory="six gigabytes")


def test_available_memory_is_positive():
    assert available_memory("cpu") > 0


def test_model_dims_from_a_tiny_gqa_model():
    dims = ModelDims.from_model(tiny_model("llama").double())
    assert (dims.layers, dims.hidden, dims.heads, dims.kv_heads, dims.head_dim, dims.itemsize) == (2, 32, 4, 2, 8, 8)
    assert ModelDims.from_model(tiny_model("gemma3_sliding")).masks == 2
    assert not dims.eager_attention


@pytest.mark.parametrize("arch", ["gpt_oss", "gemma2"])
def test_forward_counts_the_eager_attention_that_sinks_and_softcapping_run(arch):
    """Learned sinks (GPT-OSS) and soft-capping (Gemma 2) run the eager attention: the forward's transient counts
    one layer's n² scratch per sequence, and the captures keep no attention probabilities (unless asked for)."""
    model = tiny_model(arch).double()
    dims = ModelDims.from_model(model)
    assert dims.eager_attention
    plain = dataclasses.replace(dims, eager_attention=False)
    assert captures_bytes(dims, 100) == captures_bytes(plain, 100)
    extra = forward_bytes(dims, 100, 2) - forward_bytes(plain, 100, 2)
    assert extra == 2 * 3 * dims.heads * 100 * 100 * dims.itemsize
    install(model)
    ids = torch.randint(4, TINY_VOCAB, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), capture() as caps:
        model(ids)
    assert caps and all(c.weights is None for c in caps)
    with torch.no_grad(), capture(weights=True) as caps:
        model(ids)
    assert all(c.weights is not None and c.weights.shape[-2:] == (12, 12) for c in caps)


def test_ample_budget_keeps_the_configured_sizes():
    plan = plan_memory(SMOLLM2, 1024, HUGE, exact_i=True, exact_s=True, fisher=True, info_batch=8, hvp_chunk=5,
                       fisher_chunk=16)
    assert (plan.info_batch, plan.hvp_chunk, plan.fisher_chunk) == (8, 5, 16)
    assert not plan.hvp_lowered and not plan.fisher_lowered
    config = HEATConfig()
    assert plan.applied(config) is config
    assert set(plan.stages) == {"captures", "rollout", "information", "curvature", "fisher"}


def test_tight_budget_picks_the_largest_batch_that_fits():
    n = 2048
    need = [plan_memory(SMOLLM2, n, HUGE, exact_i=True, info_batch=b).stages["information"] for b in range(1, 9)]
    assert all(a < b for a, b in zip(need, need[1:]))  # one more masked variant always costs more
    for b in range(1, 8):
        plan = plan_memory(SMOLLM2, n, int(need[b - 1]) + 1, exact_i=True, info_batch=8)
        assert plan.info_batch == b and plan.peak <= plan.budget
        assert "masked-run batch" in plan.describe() and f"n = {n}" in plan.describe()
    config = plan_memory(SMOLLM2, n, int(need[2]) + 1, exact_i=True).applied(HEATConfig())
    assert config.information == ExactI(batch_size=3)


def test_tight_budget_lowers_the_hvp_and_fisher_chunks():
    n = 512
    need = plan_memory(SMOLLM2, n, HUGE, exact_s=True, hvp_chunk=2).stages["curvature"]
    plan = plan_memory(SMOLLM2, n, int(need) + 1, exact_s=True, hvp_chunk=8)
    assert plan.hvp_chunk == 2 and plan.hvp_lowered
    config = plan.applied(HEATConfig.preset("exact"))
    assert config.curvature == ExactS(hvp_chunk_size=2, hvp_memory_mb=None)
    assert config.information == ExactI()  # I's batch was not planned lower
    need = plan_memory(SMOLLM2, n, HUGE, fisher=True, fisher_chunk=3).stages["fisher"]
    plan = plan_memory(SMOLLM2, n, int(need) + 1, fisher=True, fisher_chunk=16)
    assert plan.fisher_chunk == 3 and plan.fisher_lowered
    fast = plan.applied(HEATConfig.preset("fast"))  # S and I on shared factors keep equal chunks
    budget = {"max_forward_equivalents": FAST_FISHER_FE}  # the preset's budget is kept
    assert (fast.curvature, fast.information) == (FisherS(chunk=3, **budget), FisherI(chunk=3, **budget))
    mixed = HEATConfig(beta=0.5, curvature=FisherS(chunk=2), information=FisherI(chunk=16))
    assert plan.applied(mixed).curvature == FisherS(chunk=2)  # never raised above the configured chunk
    assert plan.applied(mixed).information == FisherI(chunk=3)


def test_fisher_stage_follows_the_fisher_codes_checkpointing(monkeypatch):
    """From the length the Fisher code checkpoints its decoder layers on (its own threshold, moved here), the Fisher
    stage keeps layer inputs and one layer's activations: less than every layer's activations, and linear in n."""
    def fisher_stage(n: int) -> float:
        return fisher_bytes(SMOLLM2, n, 8)

    start = fisher.CHECKPOINT_FROM
    assert fisher_stage(start) < fisher_stage(start - 1) / 2  # checkpointed at 2048: about a third as much
    assert 1.9 < fisher_stage(2 * start) / fisher_stage(start) < 2.1
    assert 1.9 < fisher_stage(start // 2) / fisher_stage(start // 4) < 2.1
    monkeypatch.setattr(fisher, "CHECKPOINT_FROM", start // 2)
    assert fisher_stage(start // 2) < fisher_stage(start // 2 - 1) / 2  # the planner reads the Fisher code's threshold


def test_refuses_when_nothing_fits_and_says_what_to_try():
    n = 8192
    need = plan_memory(SMOLLM2, n, HUGE, exact_i=True, info_batch=1).stages["information"]
    with pytest.raises(MemoryPlanError, match=r"needs at least .* at n = 8192, got max_memory = 1\.00 GB; "
                                              r"try preset\('fast'\) or window="):
        plan_memory(SMOLLM2, n, 10**9, exact_i=True)
    assert need > 10**9
    with pytest.raises(MemoryPlanError, match="captures"):  # even the captured forward does not fit
        plan_memory(SMOLLM2, n, int(captures_bytes(SMOLLM2, n)), fisher=False)


def test_the_default_grows_quadratically_and_windows_linearly():
    """The default's first masked chunk holds b masks of n × n; windows of W + 1 tokens hold captures ∝ n (only the
    full context's own captured forward, for the greedy target, holds one n × n mask)."""
    default = [plan_memory(SMOLLM2, n, HUGE, exact_i=True).peak for n in (2048, 4096, 8192)]
    windowed = [plan_memory(SMOLLM2, n, HUGE, exact_i=True, window=256).peak for n in (2048, 4096, 8192)]
    assert default[2] / default[1] > 2.5
    assert 1.8 < windowed[2] / windowed[1] < 2.3
    assert windowed[2] < default[2]
    assert forward_bytes(SMOLLM2, 100, 3) == pytest.approx(3 * forward_bytes(SMOLLM2, 100))


def test_windowed_plan_has_a_windows_stage():
    plan = plan_memory(SMOLLM2, 4096, HUGE, exact_i=True, window=256, stride=128)
    assert "windows" in plan.stages and "captures" not in plan.stages
    assert plan.stages["windows"] > captures_bytes(SMOLLM2, 4096) * 2  # the full context's and 32 windows' captures


def test_rollout_block_is_the_largest_that_fits():
    n = 8192
    base = FIRST_USE + captures_bytes(SMOLLM2, n)
    ample = plan_memory(SMOLLM2, n, HUGE, rollout_torch=True)
    assert ample.rollout == "blocked" and ample.rollout_block == transition.ROLLOUT_BLOCK  # the configured size
    assert "rollout in blocks of 256 query rows" in ample.summary()
    whole = plan_memory(SMOLLM2, n, HUGE, rollout_torch=True, rollout_block=10**6)
    assert whole.rollout_block == n  # never more rows than there are: one block is a layer's whole attention
    assert whole.stages["rollout"] == pytest.approx(base + 3 * SMOLLM2.heads * n * n * 4, rel=0.02)
    sizes = [rollout_bytes(SMOLLM2, n, r) for r in (1, 2, 1000, 1001)]
    assert all(a < b for a, b in zip(sizes, sizes[1:]))  # one more row always costs more
    budget = int(base + rollout_bytes(SMOLLM2, n, 1000)) + 1
    plan = plan_memory(SMOLLM2, n, budget, rollout_torch=True, rollout_block=4096)
    assert plan.rollout_block == 1000 and plan.peak <= plan.budget
    assert "rollout in blocks of 1000 query rows" in plan.describe()
    tiled = plan_memory(SMOLLM2, n, budget, rollout_block=4096)  # the kernels' tiles
    assert tiled.rollout == "tiled" and tiled.rollout_block == 1000  # chosen too, for masks only torch covers
    assert tiled.stages["rollout"] == base + rollout_bytes(SMOLLM2, n)


def test_tight_budget_lowers_the_lowrank_chunk_and_refuses_naming_its_stage():
    n = 1024
    need = [plan_memory(SMOLLM2, n, HUGE, lowrank=True, lowrank_chunk=c).stages["lowrank"] for c in (1, 2, 3)]
    assert need[0] < need[1] < need[2]
    plan = plan_memory(SMOLLM2, n, int(need[1]) + 1, lowrank=True, lowrank_chunk=8)
    assert plan.lowrank_chunk == 2 and plan.lowrank_lowered and "low-rank HVP chunk 2" in plan.summary()
    config = HEATConfig(curvature=LowRankS(rank=4, chunk=8))
    assert plan.applied(config).curvature == LowRankS(rank=4, chunk=2)
    assert plan.applied(HEATConfig(curvature=LowRankS(chunk=1))).curvature == LowRankS(chunk=1)  # never raised
    # the sketch's ℓ columns of n·d count too, and HEAT-LS's HVPs through fewer layers cost less
    default = plan_memory(SMOLLM2, n, HUGE, lowrank=True).stages["lowrank"]  # ℓ = 24, all 30 layers
    assert plan_memory(SMOLLM2, n, HUGE, lowrank=True, lowrank_directions=200).stages["lowrank"] > default
    assert plan_memory(SMOLLM2, n, HUGE, lowrank=True, lowrank_layers=4).stages["lowrank"] < default
    captures = plan_memory(SMOLLM2, n, HUGE).stages["captures"]
    with pytest.raises(MemoryPlanError, match=r"HEAT's lowrank stage needs at least .* at n = 1024"):
        plan_memory(SMOLLM2, n, int(captures) + 1, lowrank=True)


def test_refuses_when_one_query_row_per_block_does_not_fit():
    wide = ModelDims(layers=1, hidden=64, intermediate=64, heads=64, kv_heads=64, head_dim=256)  # many wide heads
    n = 1024
    need = plan_memory(wide, n, HUGE).stages["captures"]
    assert plan_memory(wide, n, int(need) + 1).rollout == "tiled"  # the kernels' tiles fit
    with pytest.raises(MemoryPlanError, match=r"HEAT's rollout stage needs at least .* at n = 1024"):
        plan_memory(wide, n, int(need) + 1, rollout_torch=True)


# ------------------------------------------------------------------ end to end
IDS = torch.tensor([5, 17, 33, 8, 61, 12, 40, 9, 22, 14, 50, 7, 19])


def budget_for(model, config_kwargs: dict, stage: str) -> int:
    """A budget that fits exactly the given sizes of ``stage`` on the tiny model at n = len(IDS)."""
    dims = ModelDims.from_model(model)
    return int(plan_memory(dims, IDS.numel(), HUGE, **config_kwargs).stages[stage]) + 1


def record(monkeypatch, module, name: str, index: int) -> list:
    """Wrap ``module.name`` to record its positional argument ``index`` (a chunk size) on every call."""
    seen: list = []
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        seen.append(args[index])
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return seen


def test_tight_budget_lowers_the_masked_run_batch_and_keeps_the_scores(monkeypatch):
    model = tiny_model("llama", seed=4).double()
    config = HEATConfig.preset("mi", information=ExactI(batch_size=8))
    ample = HEAT(model, None, config).attribute(IDS, target=7)
    budget = budget_for(model, {"exact_i": True, "info_batch": 2}, "information")
    batches = record(monkeypatch, i_exact, "information", 6)
    tight = HEAT(model, None, config.replace(max_memory=budget)).attribute(IDS, target=7)
    assert batches == [2]  # the exact I ran with the planned batch, not its configured 8
    assert "masked-run batch 8" in ample.cost.details["memory_plan"]
    assert "masked-run batch 2" in tight.cost.details["memory_plan"]
    torch.testing.assert_close(tight.scores, ample.scores, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(tight.information, ample.information, rtol=1e-12, atol=1e-14)


def test_tight_budget_lowers_the_hvp_chunk_and_keeps_s(monkeypatch):
    model = tiny_model("llama", seed=4).double()
    config = HEATConfig.preset("exact", curvature=ExactS(hvp_chunk_size=6, hvp_memory_mb=None))
    ample = HEAT(model, None, config).attribute(IDS, target=7)
    budget = budget_for(model, {"exact_s": True, "exact_i": True, "hvp_chunk": 2, "info_batch": 8}, "curvature")
    chunks = record(monkeypatch, s_exact, "curvature_exact", 6)
    tight = HEAT(model, None, config.replace(max_memory=budget)).attribute(IDS, target=7)
    assert chunks == [2]  # the exact S ran with the planned chunk, not its configured 6
    assert "HVP chunk 6" in ample.cost.details["memory_plan"]
    assert "HVP chunk 2" in tight.cost.details["memory_plan"]
    torch.testing.assert_close(tight.curvature, ample.curvature, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tight.scores, ample.scores, rtol=1e-10, atol=1e-12)


def test_heat_refuses_a_budget_nothing_fits():
    model = tiny_model("llama", seed=4).double()
    with pytest.raises(MemoryPlanError, match=r"at n = 13, got max_memory"):
        HEAT(model, None, HEATConfig(max_memory=1000)).attribute(IDS, target=7)


def test_a_model_without_sizes_is_unplanned_unless_a_budget_is_set():
    bare = torch.nn.Linear(2, 2)
    plan = plan_for(bare, 5, HEATConfig())
    assert plan.summary().startswith("unplanned") and plan.applied(HEATConfig()) == HEATConfig()
    with pytest.raises(TypeError, match="with a config"):
        plan_for(bare, 5, HEATConfig(max_memory="1GB"))


def test_tight_budget_lowers_the_fisher_chunk_and_keeps_the_shared_factors(monkeypatch):
    model = tiny_model("llama", seed=4).double()
    config = HEATConfig.preset("fast")
    ample = HEAT(model, None, config).attribute(IDS, target=7)
    budget = budget_for(model, {"fisher": True, "fisher_chunk": 2}, "fisher")
    chunks = record(monkeypatch, i_fisher, "fisher_factors", 4)
    tight = HEAT(model, None, config.replace(max_memory=budget)).attribute(IDS, target=7)
    assert chunks == [2]  # one set of factors, with the planned chunk
    assert "Fisher chunk 8" in ample.cost.details["memory_plan"]
    assert "Fisher chunk 2" in tight.cost.details["memory_plan"]
    # S and I still from one set of factors: the captured forward and one Fisher forward with K backwards
    assert (tight.cost.forward_passes, tight.cost.gradients) == (ample.cost.forward_passes, ample.cost.gradients)
    assert (tight.cost.forward_passes, tight.cost.gradients) == (2, tight.cost.details["fisher_k"])
    torch.testing.assert_close(tight.scores, ample.scores, rtol=1e-10, atol=1e-12)


def test_tight_budget_lowers_the_rollout_block_and_keeps_m(monkeypatch):
    """The torch backend runs the gate's torch path: a budget that fits the captured forward but not one layer's
    whole attention gets blocks of fewer query rows, and the same M. (A model with learned sinks runs the eager
    attention, whose forward transient is larger than a block's, so there the forward binds first.)"""
    model = tiny_model("llama", seed=2).double()
    ids = torch.randint(4, TINY_VOCAB, (64,), generator=torch.Generator().manual_seed(3))
    config = HEATConfig(ablation="transition", backend="torch", progress=False)
    blocks = record(monkeypatch, transition, "blocked_phi", 3)
    ample = HEAT(model, None, config).attribute(ids, target=7)
    assert blocks == [64, 64] and "rollout in blocks of 64 query rows" in ample.cost.details["memory_plan"]
    dims = ModelDims.from_model(model)
    budget = int(plan_memory(dims, 64, HUGE).stages["captures"]) + 1
    expected = plan_memory(dims, 64, budget, rollout_torch=True).rollout_block
    assert 1 < expected < 64
    blocks.clear()
    tight = HEAT(model, None, config.replace(max_memory=budget)).attribute(ids, target=7)
    assert blocks == [expected, expected]  # both layers, with the planned block
    assert f"rollout in blocks of {expected} query rows" in tight.cost.details["memory_plan"]
    torch.testing.assert_close(tight.transition, ample.transition, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(tight.scores, ample.scores, rtol=1e-6, atol=1e-9)


def test_windows_run_the_gate_with_the_planned_block(monkeypatch):
    """HEAT-WIN's batched windows run the gate's torch path (GPT-OSS's sinks) with the plan's block, not a fixed
    one (on real models the windows' forward binds before their gate does, so the plan is replaced here), with
    the same M."""
    model = tiny_model("gpt_oss", seed=2).double()
    ids = torch.randint(4, TINY_VOCAB, (64,), generator=torch.Generator().manual_seed(3))
    config = HEATConfig(ablation="transition", window=16, progress=False)
    blocks = record(monkeypatch, transition, "blocked_phi", 3)
    ample = HEAT(model, None, config).attribute(ids, target=7)
    assert set(blocks) == {17}  # a whole window (W + 1 rows) when memory allows
    planned = estimator.plan_for
    monkeypatch.setattr(estimator, "plan_for",
                        lambda *a, **k: dataclasses.replace(planned(*a, **k), rollout_block=5))
    blocks.clear()
    tight = HEAT(model, None, config).attribute(ids, target=7)
    assert set(blocks) == {5}
    torch.testing.assert_close(tight.transition, ample.transition, rtol=1e-10, atol=1e-12)


def test_tight_budget_lowers_the_lowrank_chunk_and_keeps_s(monkeypatch):
    model = tiny_model("llama", seed=4).double()
    config = HEATConfig(curvature=LowRankS(rank=5, oversample=3, chunk=6), ablation="curvature", progress=False)
    ample = HEAT(model, None, config).attribute(IDS, target=7)
    dims = ModelDims.from_model(model)
    budget = int(plan_memory(dims, IDS.numel(), HUGE, lowrank=True, lowrank_chunk=2,
                             lowrank_directions=8).stages["lowrank"]) + 1
    chunks = record(monkeypatch, s_lowrank, "curvature_lowrank", 6)
    tight = HEAT(model, None, config.replace(max_memory=budget)).attribute(IDS, target=7)
    assert chunks == [2]  # HEAT-LR ran with the planned chunk, not its configured 6
    assert "low-rank HVP chunk 6" in ample.cost.details["memory_plan"]
    assert "low-rank HVP chunk 2" in tight.cost.details["memory_plan"]
    assert tight.cost["hvps"] == ample.cost["hvps"] == 16  # the same sketch: 2ℓ HVPs
    torch.testing.assert_close(tight.curvature, ample.curvature, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tight.scores, ample.scores, rtol=1e-10, atol=1e-12)
    captures = int(plan_memory(dims, IDS.numel(), HUGE).stages["captures"]) + 1
    with pytest.raises(MemoryPlanError, match="HEAT's lowrank stage needs at least"):
        HEAT(model, None, config.replace(max_memory=captures)).attribute(IDS, target=7)


def test_the_plan_is_on_the_progress_bar(monkeypatch):
    bars: list[Bar] = []
    monkeypatch.setattr(progress, "progress_bar", lambda *a, **k: bars.append(Bar()) or bars[-1])
    res = HEAT(tiny_model("llama", seed=4), None, HEATConfig(progress=True)).attribute(IDS, target=7)
    assert [bar.postfix for bar in bars] == [[res.cost.details["memory_plan"]]]
    assert res.cost.details["memory_plan"].startswith("masked-run batch 8")
