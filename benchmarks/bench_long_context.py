"""Long contexts: seconds, reported forward-pass equivalents (FE) and peak RSS of HEAT and AttnLRP at length n.

Each case runs in a fresh subprocess (``_common.run_case``): load SmolLM2, one plain forward at n (warm-up), one timed
plain forward at n, then the method once at n. Columns: ``seconds``; ``measured_fe`` = seconds / one plain forward's
seconds at the same n; ``reported_fe`` = ``result.cost.forward_equivalents`` (empty for AttnLRP, which reports no
cost); ``peak_extra_mb`` = peak RSS during the method minus RSS before it.

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
        t0 = time.perf_counter()
        model(ids[None])
        forward_s = time.perf_counter() - t0
    before = rss_mb()
    t0 = time.perf_counter()
    result = method.attribute(ids)
    seconds = time.perf_counter() - t0
    cost = getattr(result, "cost", None)
    reported = getattr(cost, "forward_equivalents", None)
    return {"config": name, "n": n, "seconds": round(seconds, 2), "forward_s": round(forward_s, 3),
            "measured_fe": round(seconds / forward_s, 1),
            "reported_fe": None if reported is None else round(float(reported), 1),
            "peak_extra_mb": round(max(0.0, peak_rss_mb() - before))}


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
    for n in args.lengths:
        for name in args.configs:
            print(json.dumps(run_case(os.path.abspath(__file__), ["--case", name, str(n)])), flush=True)


if __name__ == "__main__":
    main()
