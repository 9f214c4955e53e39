"""The memory planner's predicted peaks against measured peak RSS, stage by stage, on SmolLM2 (one thread).

Each length runs in a fresh subprocess: load SmolLM2, one plain forward of 32 tokens (libraries warmed up, nothing at
length n allocated yet), then with the peak RSS reset before each stage (``/proc/self/clear_refs``): the captured
forward, the rollout (gate M; with ``--rollout-blocks R ...`` also its torch path in blocks of R query rows), the
first chunk of masked runs for batch sizes 1 and 8 (the first chunk recomputes all n positions: the largest of exact
I's chunks), and with ``--fast`` one ``HEATConfig.preset("fast")``
attribution, with ``--lowrank-chunks C ...`` one HEAT-LR attribution of S alone per chunk size
(``HEATConfig(curvature=LowRankS(rank, oversample, chunk=C), ablation="curvature")``, ``--lowrank-rank`` /
``--lowrank-oversample``), and with ``--window W`` HEAT-WIN's held captures (the full context's captured forward and
every window's, batched). Each measured peak is peak RSS minus the RSS before the captured forward; the predicted one
is the planner's (:mod:`heat_module.heat.memory_plan`). With ``--full`` the whole default attribution is measured too
(quadratic time: n = 256 takes minutes).

    OMP_NUM_THREADS=1 python benchmarks/bench_memory_plan.py --lengths 256 512 1024 2048 --fast
    OMP_NUM_THREADS=1 python benchmarks/bench_memory_plan.py --lengths 64 128 256 --batches 1 --lowrank-chunks 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, prompt_ids, rss_mb, run_case  # noqa: E402


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def case(n: int, fast: bool, full: bool, batches: list[int], window: int | None,
         lowrank: tuple[list[int], int, int] = ([], 2, 2), rollout_blocks: tuple[int, ...] = ()) -> dict:
    import torch

    import heat_module as hm
    from heat_module.heat.information import information
    from heat_module.heat.memory_plan import FIRST_USE, ModelDims, captures_bytes, plan_memory, rollout_bytes
    from heat_module.heat.transition import transition_from_captures
    from heat_module.lm.forward import embed

    torch.manual_seed(0)
    model, tokenizer = hm.load_model("smollm2")
    ids = prompt_ids(tokenizer, n)
    heat = hm.HEAT(model, tokenizer, hm.HEATConfig(progress=False))
    with torch.no_grad():
        model(ids[None, :32])
    dims = ModelDims.from_model(model)
    budget = 10**15
    rows: dict = {"n": n}
    base = rss_mb()
    reset_peak()
    logits, caps = heat.forward_with_captures(ids[None], torch.ones_like(ids)[None])
    rows["captures"] = peak_mb() - base
    reset_peak()
    transition_from_captures(caps)
    rows["rollout"] = peak_mb() - base
    for block in rollout_blocks:  # the gate's torch path, blocks of query rows
        reset_peak()
        transition_from_captures(caps, backend="torch", block=block)
        rows[f"rollout_torch_r{block}"] = peak_mb() - base
    x = embed(model, ids[None]).detach()
    logp = torch.log_softmax(logits[0], -1)
    for b in batches:
        reset_peak()
        information(model, x, caps, logp, None, None, b, positions=list(range(b)))
        rows[f"information_b{b}"] = peak_mb() - base
    predicted = {"captures": plan_memory(dims, n, budget).stages["captures"],
                 "rollout": plan_memory(dims, n, budget).stages["rollout"]}
    for block in rollout_blocks:
        predicted[f"rollout_torch_r{block}"] = (FIRST_USE + captures_bytes(dims, n) + rollout_bytes(dims, n, block))
    for b in batches:
        predicted[f"information_b{b}"] = plan_memory(dims, n, budget, exact_i=True, info_batch=b).stages["information"]
    if full:
        reset_peak()
        heat.attribute(ids)
        rows["default_attribution"] = peak_mb() - base
        predicted["default_attribution"] = plan_memory(dims, n, budget, exact_i=True).peak
    del caps, logits
    if window is not None:  # HEAT-WIN's held captures: the full context's forward, then every window's, batched
        from heat_module.heat.windowing import window_bounds

        base = rss_mb()
        reset_peak()
        full = heat.forward_with_captures(ids[None], torch.ones_like(ids)[None])
        bounds = window_bounds(n - 1, window, window // 2)
        batch = torch.stack([torch.cat([ids[a:b], ids[-1:]]) for a, b in bounds])
        windows = heat.forward_with_captures(batch, torch.ones_like(batch))
        rows[f"windows_w{window}"] = peak_mb() - base
        predicted[f"windows_w{window}"] = plan_memory(dims, n, budget, window=window).stages["windows"]
        del full, windows
    if fast:
        fast_heat = hm.HEAT(model, tokenizer, hm.HEATConfig.preset("fast", progress=False))
        base = rss_mb()
        reset_peak()
        fast_heat.attribute(ids)
        rows["fast_attribution"] = peak_mb() - base
        predicted["fast_attribution"] = plan_memory(dims, n, budget, fisher=True).peak
    chunks, rank, oversample = lowrank
    for c in chunks:
        from heat_module.heat.s_lowrank import LowRankS

        lr_heat = hm.HEAT(model, tokenizer, hm.HEATConfig(curvature=LowRankS(rank=rank, oversample=oversample, chunk=c),
                                                          ablation="curvature", progress=False))
        base = rss_mb()
        reset_peak()
        lr_heat.attribute(ids)
        rows[f"lowrank_c{c}"] = peak_mb() - base
        predicted[f"lowrank_c{c}"] = plan_memory(dims, n, budget, lowrank=True, lowrank_chunk=c,
                                                 lowrank_directions=rank + oversample).peak
    return {"n": n, "measured_mb": {k: round(v) for k, v in rows.items() if k != "n"},
            "predicted_mb": {k: round(v / 2**20) for k, v in predicted.items()}}


def predict(lengths: list[int], window: int) -> None:
    """Per length: the cost model's FE and the planner's peak for the default and HEAT-WIN (``window``), no model
    run (SmolLM2's sizes, the configured batch of 8 masked runs)."""
    from heat_module.heat.cost import information_fe
    from heat_module.heat.memory_plan import ModelDims, plan_memory
    from heat_module.heat.windowing import window_bounds

    dims = ModelDims(layers=30, hidden=576, intermediate=1536, heads=9, kv_heads=3, head_dim=64)
    for n in lengths:
        windows = window_bounds(n - 1, window, window // 2)
        fe_win = 1 + sum((b - a + 1) / n * (1 + information_fe(b - a + 1, 8, True)) for a, b in windows)
        rows = {"n": n, "default_fe": round(1 + information_fe(n, 8, True), 1),
                "default_peak_mb": round(plan_memory(dims, n, 10**15, exact_i=True).peak / 2**20),
                "default_b1_peak_mb": round(plan_memory(dims, n, 10**15, exact_i=True, info_batch=1).peak / 2**20),
                f"windowed_w{window}_fe": round(fe_win, 1),
                f"windowed_w{window}_peak_mb": round(plan_memory(dims, n, 10**15, exact_i=True, window=window).peak
                                                     / 2**20),
                "fast_peak_mb": round(plan_memory(dims, n, 10**15, fisher=True).peak / 2**20)}
        print(json.dumps(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--fast", action="store_true", help="also measure one preset('fast') attribution")
    parser.add_argument("--full", action="store_true", help="also measure the whole default attribution")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="masked-run batch sizes measured")
    parser.add_argument("--window", type=int, help="also measure HEAT-WIN's windows stage with this window")
    parser.add_argument("--rollout-blocks", type=int, nargs="*", default=[],
                        help="also measure the gate's torch path with these blocks of query rows")
    parser.add_argument("--lowrank-chunks", type=int, nargs="*", default=[],
                        help="also measure one HEAT-LR attribution of S per LowRankS chunk size")
    parser.add_argument("--lowrank-rank", type=int, default=2, help="LowRankS rank of those runs")
    parser.add_argument("--lowrank-oversample", type=int, default=2, help="LowRankS oversample of those runs")
    parser.add_argument("--predict", action="store_true", help="print the predicted FE and peaks only (no model)")
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.fast, args.full, args.batches, args.window,
                              (args.lowrank_chunks, args.lowrank_rank, args.lowrank_oversample),
                              tuple(args.rollout_blocks))))
        return
    if args.predict:
        predict(args.lengths, args.window or 256)
        return
    print(f"# {machine()}")
    flags = ((["--fast"] if args.fast else []) + (["--full"] if args.full else [])
             + ["--batches", *map(str, args.batches)] + ([] if args.window is None else ["--window", str(args.window)])
             + (["--lowrank-chunks", *map(str, args.lowrank_chunks), "--lowrank-rank", str(args.lowrank_rank),
                 "--lowrank-oversample", str(args.lowrank_oversample)] if args.lowrank_chunks else [])
             + (["--rollout-blocks", *map(str, args.rollout_blocks)] if args.rollout_blocks else []))
    for n in args.lengths:
        print(json.dumps(run_case(os.path.abspath(__file__), ["--case", str(n), *flags])), flush=True)


if __name__ == "__main__":
    main()
