"""Scalable HEAT variants side by side (the structure of the paper's Tables 9, 10 and 12).

On SmolLM2-135M (``heat_module.load_model("smollm2")``), contexts of exactly n tokens built from the ``prompt`` field
of a data file (consecutive prompts concatenated until n tokens, then cut), for every n in ``--lengths``:

    full (exact HVPs) | LR(k) | LS(L) | WIN(W=n/4, 50 %) | LR+WIN | Fisher(K)

and for each: wall time per example, peak memory, forward-pass equivalents (``result.cost``, the cost model of
:mod:`heat_module.heat.cost`), HVP count, Spearman ρ and top-5 overlap of the scores against full HEAT on the same
context, and the window-leakage proxy ε̂_M(W) for the windowed variants. It also measures, on the same machine, the
seconds of one forward pass, one gradient and one vmapped HVP at each n, so the nominal FE weights (gradient = 2,
HVP = 4) can be compared with measured ratios, and checks the target "full HEAT with Fisher curvature costs
<= 0.7·n forward-pass equivalents" at every n (the issue asks for n = 256).

Memory: peak resident set size above the RSS just before the variant (``VmHWM`` after resetting it through
``/proc/self/clear_refs``), with glibc's mmap threshold fixed at 64 KiB (the script re-executes itself with
``MALLOC_MMAP_THRESHOLD_``) and ``malloc_trim`` between variants, so freed tensors go back to the OS. It is the RSS of
this process, not a torch profiler figure. With ``--device cuda`` it is ``torch.cuda.max_memory_allocated`` above the
allocation before the variant instead, and timings wait for the GPU (``torch.cuda.synchronize``).

Exact HEAT on a shared 2-core CPU is slow (one vmapped SmolLM2 HVP ≈ 4 forwards; n = 256 full HEAT needs ≈ 140
full-length HVP equivalents), so ``--prompts`` / ``--prompts-long`` / ``--time-budget`` size the run and
``--variants-long`` restricts which variants run at n > 64 (ρ needs "full" in the same run). The reference is
computed once per context. Timings are noisy on a shared machine: compare ratios measured in the same run.

Usage:
    python benchmarks/bench_variants.py --quick                      # CI-sized (n = 24, 2 prompts, small ranks)
    python benchmarks/bench_variants.py --lengths 64 --prompts 21 --variants full LS WIN Fisher --csv a.csv
    python benchmarks/bench_variants.py --lengths 64 --prompts 21 --variants full LR LR+WIN --csv b.csv
    python benchmarks/bench_variants.py --summarize a.csv b.csv --append   # one table from both runs
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time
from pathlib import Path

if "MALLOC_MMAP_THRESHOLD_" not in os.environ and __name__ == "__main__":  # freed tensors return to the OS
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from _common import machine, read_csv, rss_mb, status_kib, sync, write_csv  # noqa: E402

import heat_module as hm  # noqa: E402
from heat_module.heat.i_exact import ExactI  # noqa: E402
from heat_module.heat.s_exact import ExactS  # noqa: E402
from heat_module.heat.s_fisher import FisherS  # noqa: E402
from heat_module.heat.s_lowrank import LowRankS  # noqa: E402
from heat_module.metrics.functional.spearman import spearman_rho  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared/data/reagent"
# the paper's Table 12 averages over LongRA, TellMeWhy and WikiBio: contexts alternate between the three
DEFAULT_DATA = [str(SHARED / "derived/longra_gpt2.jsonl"), str(SHARED / "data/benchmark/tellmewhy2.txt"),
                str(SHARED / "data/benchmark/wikitext.txt")]
#: where --append writes its tables: an untracked run log, curated by hand into benchmarks/RESULTS-variants.md
RESULTS = Path(__file__).resolve().parent / "out" / "bench_variants.md"
HEADING = "## Scalable variants"


# ---------------------------------------------------------------------------------------------------------- inputs
def read_prompts(path: str, field: str) -> list[str]:
    from heat_module.data.readers import read_texts

    return read_texts(path, field)


def mixed_contexts(tokenizer, sources: list[list[str]], n: int, count: int) -> list[torch.Tensor]:
    """``count`` contexts of exactly n tokens that alternate between the prompt lists of several data files:
    context j comes from file j mod F, as context j // F of :func:`contexts` over that file's prompts."""
    per_file = [contexts(tokenizer, prompts, n, len(range(k, count, len(sources))))
                for k, prompts in enumerate(sources)]
    return [per_file[j % len(sources)][j // len(sources)] for j in range(count)]


def contexts(tokenizer, prompts: list[str], n: int, count: int) -> list[torch.Tensor]:
    """``count`` contexts of exactly n tokens: prompt j, j+1, ... joined by spaces until n tokens, then cut."""
    out = []
    for j in range(count):
        ids: list[int] = []
        k = j
        while len(ids) < n:
            ids += tokenizer((" " if ids else "") + prompts[k % len(prompts)])["input_ids"]
            k += 1
            if k - j > 10 * len(prompts):
                raise ValueError(f"Expected the prompts to reach {n} tokens, got {len(ids)}")
        out.append(torch.tensor(ids[:n]))
    return out


def variants(n: int, args) -> dict[str, tuple[str, hm.HEATConfig]]:
    """name -> (family, config) of the six variants at context length n."""
    chunk = args.chunk if n <= 64 else args.chunk_long
    exact = ExactS(probes=args.probes, hvp_chunk_size=chunk)
    base = hm.HEATConfig.preset("exact", curvature=exact, seed=0)  # eq. 5, exact S
    w = max(2, n // 4)
    lowrank = LowRankS(probes=args.probes, rank=args.rank, oversample=args.oversample, chunk=chunk)
    fisher = FisherS(probes=args.probes, topk=args.fisher_topk, chunk=chunk)
    return {
        "full": ("full", base),
        f"LR({args.rank})": ("LR", base.replace(curvature=lowrank)),
        f"LS({args.ls_layers})": ("LS", base.replace(curvature=exact.replace(layers=args.ls_layers))),
        f"WIN({w})": ("WIN", base.replace(window=w, window_leakage=True)),
        f"LR({args.rank})+WIN({w})": ("LR+WIN", base.replace(window=w, window_leakage=True, curvature=lowrank)),
        f"Fisher({args.fisher_topk})": ("Fisher", base.replace(curvature=fisher)),
    }


# ---------------------------------------------------------------------------------------------------------- memory
def reset_peak(device: str = "cpu") -> float:
    """Start a peak-memory window; returns the memory in use now (MB): RSS on CPU (after malloc_trim, with VmHWM
    reset to the current RSS), ``memory_allocated`` on a GPU (with the peak statistics reset)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return rss_mb()


def peak_mb(device: str = "cpu") -> float:
    """The peak memory (MB) since :func:`reset_peak`: VmHWM on CPU, ``max_memory_allocated`` on a GPU."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return status_kib("VmHWM") / 1024


# ---------------------------------------------------------------------------------------------------------- metrics
def top_overlap(a: torch.Tensor, b: torch.Tensor, k: int = 5) -> float:
    k = min(k, a.numel())
    return len(set(torch.topk(a, k).indices.tolist()) & set(torch.topk(b, k).indices.tolist())) / k


def unit_costs(model, n: int, chunk: int, device: str = "cpu") -> dict:
    """Measured seconds of one forward (eager, as HEAT's objective), one gradient and one HVP (vmapped chunk)."""
    from heat_module.heat.objective import batched_hvp, target_logprob_fn
    from heat_module.lm.forward import embed

    ids = torch.randint(100, 10000, (1, n), generator=torch.Generator().manual_seed(0)).to(device)
    x = embed(model, ids).detach()
    g = target_logprob_fn(model, 5)
    with torch.no_grad():
        g(x)
        sync(device)
        t0 = time.perf_counter()
        g(x)
        sync(device)
        fwd = time.perf_counter() - t0
    xx = x.clone().requires_grad_(True)
    t0 = time.perf_counter()
    with torch.enable_grad():
        torch.autograd.grad(g(xx), xx)
    sync(device)
    grd = time.perf_counter() - t0
    tangents = torch.randn(chunk, 1, n, x.shape[-1], generator=torch.Generator().manual_seed(1)).to(device)
    t0 = time.perf_counter()
    with torch.enable_grad():
        batched_hvp(g, x)(tangents)
    sync(device)
    hvp = (time.perf_counter() - t0) / chunk
    return {"forward_s": fwd, "gradient_s": grd, "hvp_s": hvp, "gradient_fe": grd / fwd, "hvp_fe": hvp / fwd}


# ---------------------------------------------------------------------------------------------------------- run
def run(args) -> tuple[list[dict], list[str]]:
    torch.set_num_threads(args.threads)
    from heat_module.lm.capture import install

    model, tok = hm.load_model(args.model, device=args.device)
    install(model)  # the "heat" attention (eager path available for forward-mode AD)
    sources = [read_prompts(path, args.field) for path in args.data]
    rows: list[dict] = []
    report: list[str] = []
    for n in args.lengths:
        long = n > 64
        count = args.prompts_long if long else args.prompts
        ctxs = mixed_contexts(tok, sources, n, count)
        configs = {name: cfg for name, (family, cfg) in variants(n, args).items()
                   if (not args.variants or family in args.variants)
                   and (not (long and args.variants_long) or family in args.variants_long)}
        units = unit_costs(model, n, args.chunk if n <= 64 else args.chunk_long, args.device)
        print(f"[n={n}] measured: forward {units['forward_s']:.3f}s, gradient {units['gradient_fe']:.2f} FE, "
              f"vmapped HVP {units['hvp_fe']:.2f} FE (nominal 2 and 4)", flush=True)
        t_len = time.perf_counter()
        done = 0
        for j, ids in enumerate(ctxs):
            if j < args.first_context:  # another run covers the earlier contexts (merge with --summarize)
                continue
            if done and args.time_budget and time.perf_counter() - t_len > args.time_budget:
                print(f"[n={n}] time budget reached after {done} contexts", flush=True)
                break
            ref = None
            for name, cfg in configs.items():
                heat = hm.HEAT(model, tok, cfg)
                base_mem = reset_peak(args.device)
                t0 = time.perf_counter()
                res = heat.attribute(ids.to(args.device))
                sync(args.device)
                seconds = time.perf_counter() - t0
                peak = max(0.0, peak_mb(args.device) - base_mem)
                if name == "full":
                    ref = res
                row = {
                    "n": n, "context": j, "variant": name, "seconds": seconds, "peak_rss_mb": peak,
                    "forward_equivalents": float(res.cost.get("forward_equivalents", float("nan"))),
                    "hvps": int(res.cost.get("hvps", 0)), "gradients": int(res.cost.get("gradients", 0)),
                    "spearman": float(spearman_rho(res.scores, ref.scores)) if ref is not None else float("nan"),
                    "top5": top_overlap(res.scores, ref.scores) if ref is not None else float("nan"),
                    "leakage": float(res.extra.get("window_leakage", float("nan"))),
                    "target_agrees": bool(ref is None or res.target_id == ref.target_id),
                }
                rows.append(row)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                      flush=True)
            done += 1
            if args.csv:  # after every context, so a run stopped early keeps its rows (see --summarize)
                write_csv(args.csv, rows)
        report += summarize(rows, n, done, units, configs)
        print("\n".join(report[-(len(configs) + 8):]), flush=True)
    return rows, report


def _mean(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.fmean(values) if values else float("nan")


def _sd(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(rows: list[dict], n: int, done: int, units: dict | None, configs: dict) -> list[str]:
    """Markdown table of the rows at length n, one line per variant name of ``configs`` (in its order).

    Merged runs (rows tagged with ``run``) may cover different contexts and each repeat full HEAT as its reference:
    the "full" line has one row per context (the first run's), and every ratio to full is taken against the full
    HEAT rows of the same run on the same contexts (ratios measured in one run).
    """
    sel = [r for r in rows if r["n"] == n]
    full_by_run = {(r.get("run", 0), r["context"]): r for r in sel if r["variant"] == "full"}
    full: dict[int, dict] = {}
    for r in sel:
        if r["variant"] == "full":
            full.setdefault(r["context"], r)

    def reference(r: dict) -> dict | None:  # the same run's full HEAT on that context, else another run's
        return full_by_run.get((r.get("run", 0), r["context"]), full.get(r["context"]))
    measured = (
        f"measured on this machine: forward {units['forward_s']:.3f} s, gradient {units['gradient_fe']:.2f} FE, "
        f"vmapped HVP {units['hvp_fe']:.2f} FE (cost model: 2 and 4)"
        if units else "rows merged from the CSV files of several runs (unit costs: see each run)"
    )
    lines = [
        "",
        f"n = {n}: {done} contexts; {measured}",
        "",
        "| variant | contexts | runtime s/example | runtime vs full | peak memory MB | memory vs full | FE | FE / n "
        "| HVPs | Spearman ρ vs full | top-5 overlap | ε̂_M(W) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in configs:
        rs = list(full.values()) if name == "full" else [r for r in sel if r["variant"] == name]
        if not rs:
            continue
        t = _mean([r["seconds"] for r in rs])
        mem = _mean([r["peak_rss_mb"] for r in rs])
        fe = _mean([r["forward_equivalents"] for r in rs])
        rho, sd = _mean([r["spearman"] for r in rs]), _sd([r["spearman"] for r in rs])
        top = _mean([r["top5"] for r in rs])
        leak = _mean([r["leakage"] for r in rs])
        refs = [ref for ref in map(reference, rs) if ref is not None]
        full_t = _mean([ref["seconds"] for ref in refs])
        full_m = _mean([ref["peak_rss_mb"] for ref in refs])
        rel_t = f"{t / full_t:.2f}×" if full_t == full_t else "n/a"
        rel_m = f"{mem / full_m:.2f}×" if full_m == full_m and full_m > 0 else "n/a"
        quality = f"{rho:.3f} ± {sd:.3f} | {top:.2f}" if rho == rho else "n/a (no full reference) | n/a"
        lines.append(
            f"| {name} | {len(rs)} | {t:.1f} | {rel_t} | {mem:.0f} | {rel_m} | {fe:.0f} | {fe / n:.2f} "
            f"| {rs[0]['hvps']} | {quality} | {'' if leak != leak else f'{leak:.4f}'} |"
        )
    fisher = [r for r in sel if r["variant"].startswith("Fisher")]
    if fisher:
        fe = max(r["forward_equivalents"] for r in fisher)
        verdict = ("PASS" if fe <= 0.7 * n else "FAIL") if n >= 256 else "not applicable (stated for n = 256)"
        lines.append("")
        lines.append(f"Target: full HEAT with Fisher curvature ≤ 0.7·n FE at n = {n}: {fe:.1f} ≤ {0.7 * n:.1f} "
                     f"→ {verdict}")
    return lines


def read_rows(paths: list[str]) -> list[dict]:
    """Rows of earlier runs' ``--csv`` files, numbers parsed, each tagged with ``run`` (its file's index)."""
    return [{"run": run, **row} for run, path in enumerate(paths)
            for row in read_csv(path, ints=("n", "context", "hvps", "gradients"), strings=("variant",))]


def summarize_files(paths: list[str]) -> list[str]:
    """The tables of :func:`summarize` for rows merged from several runs' CSV files (``--summarize``)."""
    rows = read_rows(paths)
    report: list[str] = []
    for n in sorted({r["n"] for r in rows}):
        names = list(dict.fromkeys(r["variant"] for r in rows if r["n"] == n))
        names.sort(key=lambda name: name != "full")  # full first, then the order the runs wrote
        done = len({r["context"] for r in rows if r["n"] == n and r["variant"] == "full"})
        report += summarize(rows, n, done, None, dict.fromkeys(names))
    return report


def append_results(report: list[str], args) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M")
    head = [
        "",
        f"### Run {stamp}",
        f"Machine: {machine()}; {args.threads} torch thread(s) per run, on a machine shared with other work.",
        f"Command: `python benchmarks/bench_variants.py {' '.join(sys.argv[1:])}`",
        f"Model {args.model}, data {', '.join(Path(d).name for d in args.data)} (alternating; `{args.field}` fields "
        f"of .jsonl files, lines of .txt files), probes m = {args.probes}, β = γ = 0.5, "
        f"sink = {hm.HEATConfig().sink}, I batch size = {ExactI().batch_size}, hvp_mode = {ExactS().hvp_mode}. "
        "FE = forward-pass equivalents of the cost model in heat_module/heat/cost.py; memory = "
        + ("peak torch.cuda.max_memory_allocated above the allocation before the variant."
           if args.device.startswith("cuda") else
           "peak RSS above the pre-variant RSS (VmHWM, glibc mmap threshold 64 KiB)."),
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    text = RESULTS.read_text() if RESULTS.exists() else "# bench_variants.py runs\n"
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    if not sections or sections[-1].strip() != HEADING:  # others append too: open our section again if needed
        text = text.rstrip("\n") + "\n\n" + HEADING + "\n"
        RESULTS.write_text(text)
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write("\n".join(head + report) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--data", nargs="+", default=DEFAULT_DATA,
                   help="prompt files (.jsonl with --field, .json, or .txt one per line); contexts alternate")
    p.add_argument("--field", default="prompt")
    p.add_argument("--lengths", type=int, nargs="+", default=[64])
    p.add_argument("--prompts", type=int, default=2, help="contexts per length <= 64")
    p.add_argument("--prompts-long", type=int, default=1, help="contexts per length > 64")
    p.add_argument("--variants", nargs="*", default=None,
                   help="variant families to run at every n (full LR LS WIN LR+WIN Fisher); default all")
    p.add_argument("--variants-long", nargs="*", default=None,
                   help="variant families to run at n > 64 (full LR LS WIN LR+WIN Fisher); default all")
    p.add_argument("--time-budget", type=float, default=0.0, help="seconds per length before stopping (0 = none)")
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--oversample", type=int, default=8)
    p.add_argument("--ls-layers", type=int, default=6)
    p.add_argument("--fisher-topk", type=int, default=16)
    p.add_argument("--probes", type=int, default=1)
    p.add_argument("--chunk", type=int, default=16, help="HVPs per vmapped call at n <= 64")
    p.add_argument("--chunk-long", type=int, default=4, help="HVPs per vmapped call at n > 64 (memory)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda (memory is then the GPU's max_memory_allocated)")
    p.add_argument("--csv", default=None)
    p.add_argument("--append", action="store_true",
                   help="append the tables to the untracked benchmarks/out/bench_variants.md")
    p.add_argument("--quick", action="store_true", help="CI size: n = 24, 2 contexts, rank 8, LS 2, K 4")
    p.add_argument("--first-context", type=int, default=0,
                   help="skip the contexts before this index (split one length over several runs)")
    p.add_argument("--summarize", nargs="+", metavar="CSV", default=None,
                   help="run nothing: print (and with --append, record) the tables of rows merged from these --csv "
                        "files of earlier runs")
    args = p.parse_args(argv)
    if args.summarize:
        report = summarize_files(args.summarize)
        print("\n".join(report))
        if args.append:
            append_results(report, args)
        return 0
    if args.quick:
        args.lengths, args.prompts, args.rank, args.oversample = [24], 2, 8, 4
        args.ls_layers, args.fisher_topk = 2, 4
    rows, report = run(args)
    if args.append:
        append_results(report, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
