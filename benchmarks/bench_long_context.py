"""Long contexts: seconds, forward-pass equivalents (FE) measured and reported, and peak RSS of HEAT and AttnLRP at n.

Each case runs in a fresh subprocess (``_common.run_case``): load SmolLM2, one plain forward at n (warm-up), two
timed plain forwards, the method once, two more timed plain forwards. Columns: ``seconds`` (wall clock of the
method); ``measured_fe`` = the method's CPU seconds / one plain forward's CPU seconds at the same n (the mean of the
four; process CPU time, so other jobs on a shared machine slow both alike); ``reported_fe`` =
``result.cost.forward_equivalents`` (empty for AttnLRP, which reports no cost); ``reported/measured`` and ``cost_ok``
(the ratio within ±25 %: the cost model agrees with measured time); ``peak_extra_mb`` = peak RSS during the method
minus RSS before it.

    OMP_NUM_THREADS=1 python benchmarks/bench_long_context.py --lengths 512 1024 --configs fast attnlrp
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, peak_rss_mb, prompt_ids, rss_mb, run_case  # noqa: E402

CONFIGS = ("default", "fast", "windowed", "attnlrp", "attnlrp-materialized")
WINDOW = 256
#: the reported FE may differ from the measured ratio by this fraction
COST_TOLERANCE = 0.25


def build(name: str, model, tokenizer):
    import heat_module as hm
    from heat_module.attribution.registry import build as build_method

    if name == "attnlrp":
        return build_method("attnlrp", model, tokenizer)
    if name == "attnlrp-materialized":  # the n × n probabilities kept for the backward
        return build_method("attnlrp", model, tokenizer, attention="materialized")
    config = {"default": hm.HEATConfig(), "fast": hm.HEATConfig.preset("fast"),
              "windowed": hm.HEATConfig(window=WINDOW)}[name]
    return hm.HEAT(model, tokenizer, config)


def case(name: str, n: int) -> dict:
    import torch

    import heat_module as hm

    torch.manual_seed(0)
    model, tokenizer = hm.load_model("smollm2")
    ids = prompt_ids(tokenizer, n)
    method = build(name, model, tokenizer)
    with torch.no_grad():
        model(ids[None])
    forward_cpu = plain_forward_cpu_s(model, ids, 2)
    before = rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    result = method.attribute(ids)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = peak_rss_mb()
    forward_cpu = (forward_cpu + plain_forward_cpu_s(model, ids, 2)) / 2
    cost = getattr(result, "cost", None)
    reported = getattr(cost, "forward_equivalents", None)
    measured = cpu / forward_cpu
    ratio = None if reported is None else float(reported) / measured
    return {"config": name, "n": n, "seconds": round(seconds, 2), "cpu_s": round(cpu, 2),
            "forward_cpu_s": round(forward_cpu, 3), "measured_fe": round(measured, 1),
            "reported_fe": None if reported is None else round(float(reported), 1),
            "reported/measured": None if ratio is None else round(ratio, 2),
            "cost_ok": None if ratio is None else abs(ratio - 1.0) <= COST_TOLERANCE,
            "peak_extra_mb": round(max(0.0, peak - before))}


def plain_forward_cpu_s(model, ids, repeats: int) -> float:
    """Mean CPU seconds of one plain forward over ``ids`` (the model's own attention, no gradient)."""
    import torch

    with torch.no_grad():
        c0 = time.process_time()
        for _ in range(repeats):
            model(ids[None])
    return (time.process_time() - c0) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--case", nargs=2, metavar=("CONFIG", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(args.case[0], int(args.case[1]))))
        return
    print(f"# {machine()}")
    rows = []
    for n in args.lengths:
        for name in args.configs:
            rows.append(run_case(os.path.abspath(__file__), ["--case", name, str(n)]))
            print(json.dumps(rows[-1]), flush=True)
    for name in args.configs:
        checked = [r for r in rows if r["config"] == name and r["cost_ok"] is not None]
        if checked:
            ratios = ", ".join(f"n = {r['n']}: {r['reported/measured']}" for r in checked)
            verdict = "yes" if all(r["cost_ok"] for r in checked) else "NO"
            print(f"# {name}: reported/measured FE {ratios}; within ±{COST_TOLERANCE:.0%} at every length: {verdict}")


if __name__ == "__main__":
    main()
