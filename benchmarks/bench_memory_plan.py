"""The memory planner's predicted peaks against measured peak RSS, stage by stage, on SmolLM2 (one thread).

Each length runs in a fresh subprocess: load SmolLM2, one plain forward of 32 tokens (libraries warmed up, nothing at
length n allocated yet), then with the peak RSS reset before each stage (``/proc/self/clear_refs``): the captured
forward, the rollout (gate M), the first chunk of masked runs for batch sizes 1 and 8 (the first chunk recomputes
all n positions: the largest of exact I's chunks), and with ``--fast`` one ``HEATConfig.preset("fast")``
attribution. Each measured peak is peak RSS minus the RSS before the captured forward; the predicted one is the
planner's (:mod:`heat_module.heat.memory_plan`). With ``--full`` the whole default attribution is measured too
(quadratic time: n = 256 takes minutes).

    OMP_NUM_THREADS=1 python benchmarks/bench_memory_plan.py --lengths 256 512 1024 2048 --fast
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, prompt_ids, rss_mb, run_case  # noqa: E402

BATCHES = (1, 8)


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def case(n: int, fast: bool, full: bool) -> dict:
    import torch

    import heat_module as hm
    from heat_module.heat.information import information
    from heat_module.heat.memory_plan import ModelDims, plan_memory
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
    x = embed(model, ids[None]).detach()
    logp = torch.log_softmax(logits[0], -1)
    for b in BATCHES:
        reset_peak()
        information(model, x, caps, logp, None, None, b, positions=list(range(b)))
        rows[f"information_b{b}"] = peak_mb() - base
    predicted = {"captures": plan_memory(dims, n, budget).stages["captures"],
                 "rollout": plan_memory(dims, n, budget).stages["rollout"]}
    for b in BATCHES:
        predicted[f"information_b{b}"] = plan_memory(dims, n, budget, exact_i=True, info_batch=b).stages["information"]
    if full:
        reset_peak()
        heat.attribute(ids)
        rows["default_attribution"] = peak_mb() - base
        predicted["default_attribution"] = plan_memory(dims, n, budget, exact_i=True).peak
    del caps, logits
    if fast:
        fast_heat = hm.HEAT(model, tokenizer, hm.HEATConfig.preset("fast", progress=False))
        base = rss_mb()
        reset_peak()
        fast_heat.attribute(ids)
        rows["fast_attribution"] = peak_mb() - base
        predicted["fast_attribution"] = plan_memory(dims, n, budget, fisher=True).peak
    return {"n": n, "measured_mb": {k: round(v) for k, v in rows.items() if k != "n"},
            "predicted_mb": {k: round(v / 2**20) for k, v in predicted.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--fast", action="store_true", help="also measure one preset('fast') attribution")
    parser.add_argument("--full", action="store_true", help="also measure the whole default attribution")
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.fast, args.full)))
        return
    print(f"# {machine()}")
    flags = (["--fast"] if args.fast else []) + (["--full"] if args.full else [])
    for n in args.lengths:
        print(json.dumps(run_case(os.path.abspath(__file__), ["--case", str(n), *flags])), flush=True)


if __name__ == "__main__":
    main()
