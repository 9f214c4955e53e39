"""Long contexts: seconds, forward-pass equivalents (FE) measured and reported, and peak RSS of HEAT and AttnLRP at n.

Each case runs in a fresh subprocess (``_common.run_case``): load SmolLM2, one plain forward at n (warm-up), two
timed plain forwards, the method once, two more timed plain forwards. Columns: ``seconds`` (wall clock of the
method); ``measured_fe`` = the method's CPU seconds / one plain forward's CPU seconds at the same n (the mean of the
four; process CPU time, so other jobs on a shared machine slow both alike); ``reported_fe`` =
``result.cost.forward_equivalents`` (empty for AttnLRP, which reports no cost); ``reported/measured`` and ``cost_ok``
(the ratio within ±25 %: the cost model agrees with measured time); ``peak_extra_mb`` = peak RSS during the method
minus RSS before it.

``--sample-chunks c`` (configurations with the exact I: the default, ``mi``) runs the real setup (the captured
forward, M and S) and only the first c chunks of masked runs, then stops: ``peak_extra_mb`` is the peak over that
(the first chunk recomputes the whole context, the largest), and the seconds are extrapolated: setup + the sampled
chunks' seconds × (all chunks' weight / the sampled chunks' weight), a chunk of c masked runs from position i0
(suffix s = n − i0 recomputed on the prefix cache) weighing c·((1 − a)·s/n + a·(2sn − s²)/n²) — its linear layers
and its queries' attended pairs, a = attention's share of a forward at n
(:func:`heat_module.heat.cost.model_attention_share`).
Such rows carry ``sampled: "k of N chunks"``; ``reported_fe`` is then the cost model's FE of the whole attribution.

``--sample-windows c`` (the windowed configuration only) runs the real setup of HEAT-WIN (the full-context captured
forward for the greedy target, the batched captured forward of all windows, the gate of all windows), then only the
first c windows' components (S and the exact I of each window), then stops: ``peak_extra_mb`` is the peak over that,
and the seconds are extrapolated: setup + the c windows' seconds × (number of windows N / c) — every window has the
same W + 1 tokens and the same settings, so the same work. ``reported_fe`` is the whole windowed attribution's FE as
:func:`heat_module.heat.windowing.attribute_windowed` assembles it (1 for the full-context forward, plus each window's
reported FE × :func:`heat_module.heat.cost.forward_fe` (W + 1, n), a forward over its W + 1 tokens in forwards over
n), with the c sampled windows' scaled by N / c (every window reports the same FE, so this equals the whole run's).
Such rows carry ``sampled: "c of N windows"``. With c ≥ N the run is whole.

    OMP_NUM_THREADS=1 python benchmarks/bench_long_context.py --lengths 512 1024 --configs fast attnlrp
    OMP_NUM_THREADS=1 python benchmarks/bench_long_context.py --lengths 1024 --configs default --sample-chunks 3
    OMP_NUM_THREADS=1 python benchmarks/bench_long_context.py --lengths 8192 --configs windowed --sample-windows 2
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, peak_rss_mb, prompt_ids, rss_mb, run_case  # noqa: E402

CONFIGS = ("default", "mi", "fast", "fast-k16", "windowed", "attnlrp", "attnlrp-materialized")
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
    config = {"default": hm.HEATConfig(), "mi": hm.HEATConfig.preset("mi"), "fast": hm.HEATConfig.preset("fast"),
              "fast-k16": hm.HEATConfig.preset("fast", curvature="fisher", information="fisher"),  # K = 16, no budget
              "windowed": hm.HEATConfig(window=WINDOW)}[name]
    return hm.HEAT(model, tokenizer, config)


class Sampled(Exception):
    """Raised once the sampled chunks of masked runs (or the sampled windows) are done."""


@contextlib.contextmanager
def sampling(chunks: int | None, marks: list):
    """While active, HEAT's masked runs (the progress bar's "HEAT I (masked runs)" part) stop after ``chunks``
    chunks: ``marks`` gets (wall, CPU) at their start and (wall, CPU, runs) after each chunk. ``None``: no sampling."""
    if chunks is None:
        yield
        return
    from heat_module.heat.progress import Meter

    original = Meter.part

    @contextlib.contextmanager
    def part(self, name, units=0, desc=None):
        with original(self, name, units, desc) as update:
            if name != "information" or desc is None:  # not the masked runs (the Fisher I has no per-chunk bar)
                yield update
                return
            marks.append((time.perf_counter(), time.process_time()))

            def counted(k: int) -> None:
                update(k)
                marks.append((time.perf_counter(), time.process_time(), k))
                if len(marks) > chunks:
                    raise Sampled

            yield counted

    Meter.part = part
    try:
        yield
    finally:
        Meter.part = original


def chunk_weight(start: int, runs: int, n: int, share: float) -> float:
    """A chunk of ``runs`` masked runs from ``start`` (suffix s = n − start recomputed): its linear layers (s/n) and
    its queries' attended pairs ((2sn − s²)/n²), weighted by attention's share a of a forward at n."""
    s = n - start
    return runs * ((1 - share) * s / n + share * (2 * s * n - s * s) / (n * n))


def sampled_totals(model, config, n: int, marks: list, t0: float, c0: float, share: float) -> tuple:
    """(wall s, CPU s, "k of N chunks", the cost model's FE of the whole attribution) extrapolated from ``marks``."""
    from heat_module.heat.cost import information_fe
    from heat_module.heat.memory_plan import plan_for

    planned = plan_for(model, n, config).applied(config)
    batch = planned.information.batch_size
    sizes = [m[2] for m in marks[1:]]
    starts = [sum(sizes[:j]) for j in range(len(sizes))]
    sampled = sum(chunk_weight(i0, k, n, share) for i0, k in zip(starts, sizes))
    all_starts = list(range(0, n, batch))
    total = sum(chunk_weight(i0, min(batch, n - i0), n, share) for i0 in all_starts)
    scale = total / sampled
    wall = (marks[0][0] - t0) + (marks[-1][0] - marks[0][0]) * scale
    cpu = (marks[0][1] - c0) + (marks[-1][1] - marks[0][1]) * scale
    return wall, cpu, f"{len(sizes)} of {len(all_starts)} chunks", 1.0 + setup_fe(model, planned, n) + information_fe(
        n, batch, True, share)


def setup_fe(model, config, n: int) -> float:
    """The cost model's FE of S (the Fisher S of ``config``; 0 without S)."""
    from heat_module.heat.cost import fisher_calls, fisher_fe, model_attention_share
    from heat_module.heat.fisher import checkpoints_layers

    s = config.curvature if config.computes_s else None
    if s is None:
        return 0.0
    k = s.topk_at(model, n)
    return fisher_fe(k, model_attention_share(model, n), fisher_calls(k, s.chunk) if checkpoints_layers(n) else 0)


@contextlib.contextmanager
def window_sampling(windows: int | None, marks: list):
    """While active, HEAT-WIN stops after the components of ``windows`` windows (each window is one
    :meth:`heat_module.heat.estimator.HEAT.components` call): ``marks`` gets (wall, CPU) at the start of the first
    window and (wall, CPU, the window's reported FE, its tokens) after each. ``None``: no sampling."""
    if windows is None:
        yield
        return
    if windows < 1:
        raise ValueError(f"Expected --sample-windows >= 1, got {windows}")
    from heat_module.heat.estimator import HEAT

    original = HEAT.components

    def components(self, ids, *args, **kwargs):
        if not marks:
            marks.append((time.perf_counter(), time.process_time()))
        part = original(self, ids, *args, **kwargs)
        marks.append((time.perf_counter(), time.process_time(), float(part.cost.forward_equivalents), ids.numel()))
        if len(marks) > windows:
            raise Sampled
        return part

    HEAT.components = components
    try:
        yield
    finally:
        HEAT.components = original


def sampled_window_totals(model, config, n: int, marks: list, t0: float, c0: float) -> tuple:
    """(wall s, CPU s, "c of N windows", the whole windowed attribution's FE) extrapolated from ``marks`` of
    :func:`window_sampling`: setup (to the first window) + the sampled windows' seconds × N / c; FE = 1 (the
    full-context captured forward of the greedy target) + Σ over the sampled windows of FE × forward_fe(tokens, n),
    × N / c (the cost HEAT-WIN adds up: ``cost.add(part.cost, scale=forward_fe(model, W + 1, n))`` per window)."""
    from heat_module.heat.cost import FE_FORWARD, forward_fe
    from heat_module.heat.windowing import window_bounds

    windows = len(window_bounds(n - 1, config.window, config.effective_stride))
    sampled = marks[1:]
    scale = windows / len(sampled)
    wall = (marks[0][0] - t0) + (marks[-1][0] - marks[0][0]) * scale
    cpu = (marks[0][1] - c0) + (marks[-1][1] - marks[0][1]) * scale
    reported = FE_FORWARD + sum(fe * forward_fe(model, tokens, n) for _, _, fe, tokens in sampled) * scale
    return wall, cpu, f"{len(sampled)} of {windows} windows", reported


#: the configurations whose masked runs ``--sample-chunks`` can sample (one attribution, not windows)
SAMPLED_CONFIGS = ("default", "mi")
#: the configurations whose windows ``--sample-windows`` can sample
WINDOW_SAMPLED_CONFIGS = ("windowed",)


def check_sampling(name: str, sample_chunks: int | None = None, sample_windows: int | None = None) -> None:
    """Refuse a sampling option for a configuration it cannot sample (ValueError)."""
    if sample_chunks is not None and name not in SAMPLED_CONFIGS:
        raise ValueError(f"Expected --sample-chunks only with {SAMPLED_CONFIGS}, got {name!r}")
    if sample_windows is not None and name not in WINDOW_SAMPLED_CONFIGS:
        raise ValueError(f"Expected --sample-windows only with {WINDOW_SAMPLED_CONFIGS}, got {name!r}")


def attribute_measured(method, model, ids, sample_chunks: int | None = None,
                       sample_windows: int | None = None) -> tuple:
    """(wall s, CPU s, the ``sampled`` note or None, reported FE or None, the result or None) of
    ``method.attribute(ids)``, whole or sampled (extrapolated as the module docstring says; no result then)."""
    from heat_module.heat.cost import model_attention_share

    n = ids.numel()
    if sample_windows is not None and not (method.config.window or n) < n:  # attribute() windows only then
        raise ValueError(f"Expected --sample-windows with a window shorter than n = {n}, got "
                         f"window={method.config.window}")
    marks: list = []
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        with sampling(sample_chunks, marks), window_sampling(sample_windows, marks):
            result = method.attribute(ids)
    except Sampled:
        if sample_windows is not None:
            return (*sampled_window_totals(model, method.config, n, marks, t0, c0), None)
        return (*sampled_totals(model, method.config, n, marks, t0, c0, model_attention_share(model, n)), None)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    cost = getattr(result, "cost", None)
    return seconds, cpu, None, getattr(cost, "forward_equivalents", None), result


def case(name: str, n: int, sample_chunks: int | None = None, sample_windows: int | None = None) -> dict:
    check_sampling(name, sample_chunks, sample_windows)
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
    seconds, cpu, sampled, reported, result = attribute_measured(method, model, ids, sample_chunks, sample_windows)
    peak = peak_rss_mb()
    forward_cpu = (forward_cpu + plain_forward_cpu_s(model, ids, 2)) / 2
    measured = cpu / forward_cpu
    ratio = None if reported is None else float(reported) / measured
    row = {"config": name, "n": n, "seconds": round(seconds, 2), "cpu_s": round(cpu, 2),
           "forward_cpu_s": round(forward_cpu, 3), "measured_fe": round(measured, 1),
           "reported_fe": None if reported is None else round(float(reported), 1),
           "reported/measured": None if ratio is None else round(ratio, 2),
           "cost_ok": None if ratio is None else abs(ratio - 1.0) <= COST_TOLERANCE,
           "peak_extra_mb": round(max(0.0, peak - before))}
    if sampled is not None:
        row["sampled"] = sampled
    if result is not None and hasattr(result, "cost"):
        row["fisher_k"] = result.cost.details.get("fisher_k")
        row["stage_wall_s"] = {k: round(float(v), 1) for k, v in result.cost.seconds.items()}
    return row


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
    parser.add_argument("--sample-chunks", type=int, default=None,
                        help="run only the first c chunks of masked runs and extrapolate (see the module docstring)")
    parser.add_argument("--sample-windows", type=int, default=None,
                        help="windowed only: run only the first c windows' components and extrapolate (see the "
                             "module docstring)")
    parser.add_argument("--case", nargs=2, metavar=("CONFIG", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(args.case[0], int(args.case[1]), args.sample_chunks, args.sample_windows)))
        return
    for name in args.configs:
        check_sampling(name, args.sample_chunks, args.sample_windows)
    print(f"# {machine()}")
    rows = []
    for n in args.lengths:
        for name in args.configs:
            sample = [] if args.sample_chunks is None else ["--sample-chunks", str(args.sample_chunks)]
            if args.sample_windows is not None:
                sample += ["--sample-windows", str(args.sample_windows)]
            rows.append(run_case(os.path.abspath(__file__), ["--case", name, str(n), *sample]))
            print(json.dumps(rows[-1]), flush=True)
    for name in args.configs:
        checked = [r for r in rows if r["config"] == name and r["cost_ok"] is not None]
        if checked:
            ratios = ", ".join(f"n = {r['n']}: {r['reported/measured']}" for r in checked)
            verdict = "yes" if all(r["cost_ok"] for r in checked) else "NO"
            print(f"# {name}: reported/measured FE {ratios}; within ±{COST_TOLERANCE:.0%} at every length: {verdict}")


if __name__ == "__main__":
    main()
