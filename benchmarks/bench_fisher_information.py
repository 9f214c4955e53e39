"""The n-independent fast path: Fisher I (and Fisher S) against exact I and exact HEAT on SmolLM2.

For every context of exactly n tokens (ReAGent prompts, built like ``bench_variants.py``: LongRA / TellMeWhy /
WikiText alternating; ``--data-root`` or ``HEAT_DATA_DIR`` points at ``shared/data/reagent``), three HEAT runs:

- fast: ``HEATConfig.preset("fast")`` (Fisher S + Fisher I: one forward + one K-cotangent backward);
- fisher_s: Fisher S + exact I (``HEATConfig.preset("fisher")``; its ``information`` is the exact I of eq. 4);
- exact: exact S (m = 1) + exact I (``HEATConfig.preset("exact")``, the default before the choice study), only at the
  lengths in ``--exact-lengths``.

Printed: seconds and FE (``result.cost.forward_equivalents``) per example, Spearman ρ and top-5 overlap of the fast
path's I against exact I, and of each variant's scores against exact HEAT (or against Fisher-S HEAT where exact
HEAT was not run), averaged over contexts; then the ratios: fast-path FE and seconds at the longest n over the
shortest (target ≤ 1.5×), and the FE of Fisher-S HEAT at each n over n (target ≤ 0.5 at n = 256). One torch
thread. ``--time-budget`` stops adding contexts at a length once spent; the count that ran is printed.

    python benchmarks/bench_fisher_information.py --lengths 64 256 --contexts 20 --exact-lengths 64 --csv out.csv

A long length splits over processes: ``--first-context k`` skips the contexts before k (the same contexts in the
same order in every process), each process writes its ``--csv`` after every context, and ``--summarize A.csv
B.csv ...`` runs nothing and prints the means and ratios over the merged rows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, read_csv, write_csv  # noqa: E402
from bench_variants import mixed_contexts, read_prompts, top_overlap  # noqa: E402

import heat_module as hm  # noqa: E402
from heat_module.heat.i_fisher import FisherI  # noqa: E402
from heat_module.heat.s_fisher import FisherS  # noqa: E402
from heat_module.metrics.functional.spearman import spearman_rho  # noqa: E402


def data_files(root: str) -> list[str]:
    base = Path(root)
    return [str(base / "derived/longra_gpt2.jsonl"), str(base / "data/benchmark/tellmewhy2.txt"),
            str(base / "data/benchmark/wikitext.txt")]


def main() -> None:
    default_root = os.environ.get("HEAT_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared/data"))
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lengths", type=int, nargs="+", default=[64, 256])
    p.add_argument("--contexts", type=int, default=20)
    p.add_argument("--exact-lengths", type=int, nargs="*", default=[64])
    p.add_argument("--exact-contexts", type=int, default=None, help="exact HEAT on the first k contexts only")
    p.add_argument("--fisher-topk", type=int, default=16)
    p.add_argument("--time-budget", type=float, default=None, help="seconds per length")
    p.add_argument("--data-root", default=default_root, help="the folder holding reagent/ (or $HEAT_DATA_DIR)")
    p.add_argument("--first-context", type=int, default=0, help="skip the contexts before this index")
    p.add_argument("--summarize", nargs="+", metavar="CSV", default=None,
                   help="run nothing: print the means and ratios over the rows of these --csv files")
    p.add_argument("--csv", default=None)
    args = p.parse_args()
    if args.summarize:
        summarize(read_rows(args.summarize))
        return
    torch.set_num_threads(1)
    model, tok = hm.load_model("smollm2")
    sources = [read_prompts(f, "prompt") for f in data_files(os.path.join(args.data_root, "reagent"))]
    fisher = FisherS(topk=args.fisher_topk)
    fast = hm.HEATConfig.preset("fast", curvature=fisher, information=FisherI(topk=args.fisher_topk))
    fisher_s = hm.HEATConfig.preset("fisher", curvature=fisher)
    exact = hm.HEATConfig.preset("exact")
    print(f"# machine: {machine()}; one torch thread; K = {args.fisher_topk}")
    rows = []
    print("n,context,variant,seconds,fe,rho_I,top5_I,rho_vs_ref,top5_vs_ref,ref", flush=True)
    for n in args.lengths:
        t_start = time.perf_counter()
        for j, ids in enumerate(mixed_contexts(tok, sources, n, args.contexts)):
            if j < args.first_context:
                continue
            if args.time_budget is not None and j > args.first_context and (
                    time.perf_counter() - t_start > args.time_budget):
                break
            runs = {}
            for name, cfg in (("fast", fast), ("fisher_s", fisher_s), ("exact", exact)):
                if name == "exact" and (n not in args.exact_lengths or (
                        args.exact_contexts is not None and j >= args.exact_contexts)):
                    continue
                t0 = time.perf_counter()
                res = hm.HEAT(model, tok, cfg).attribute(ids)
                runs[name] = (res, time.perf_counter() - t0)
            ref_name = "exact" if "exact" in runs else "fisher_s"
            ref = runs[ref_name][0]
            exact_i = runs["fisher_s"][0].information
            for name, (res, sec) in runs.items():
                row = {"n": n, "context": j, "variant": name, "seconds": sec,
                       "fe": float(res.cost.forward_equivalents),
                       "rho_I": float(spearman_rho(res.information, exact_i)),
                       "top5_I": top_overlap(res.information, exact_i),
                       "rho_vs_ref": float(spearman_rho(res.scores, ref.scores)),
                       "top5_vs_ref": top_overlap(res.scores, ref.scores),
                       "ref": ref_name}
                rows.append(row)
                print(",".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()), flush=True)
            if args.csv:
                write_csv(args.csv, rows)  # after every context: a stopped run keeps what it measured
    summarize(rows)


def read_rows(paths: list[str]) -> list[dict]:
    """The rows of several ``--csv`` files, numbers parsed back; a (n, context, variant) measured by more than one
    file counts once (the later file's row)."""
    rows: dict[tuple, dict] = {}
    for path in paths:
        for row in read_csv(path, ints=("n", "context"), strings=("variant", "ref")):
            rows[(row["n"], row["context"], row["variant"])] = row
    return list(rows.values())


def summarize(rows: list[dict]) -> None:
    """Means over contexts per (n, variant), and the ratios against the cost targets."""
    lengths = sorted({r["n"] for r in rows})
    print("\n# means over contexts")
    print("n,variant,contexts,seconds,fe,fe_over_n,rho_I,rho_I_sd,top5_I,rho_vs_ref,rho_vs_ref_sd,top5_vs_ref,ref")
    summary = {}
    for n in lengths:
        for name in ("fast", "fisher_s", "exact"):
            sel = [r for r in rows if r["n"] == n and r["variant"] == name]
            if not sel:
                continue
            mean = {k: statistics.mean(r[k] for r in sel) for k in ("seconds", "fe", "rho_I", "top5_I", "rho_vs_ref",
                                                                     "top5_vs_ref")}
            sd = {k: statistics.stdev(r[k] for r in sel) if len(sel) > 1 else 0.0 for k in ("rho_I", "rho_vs_ref")}
            refs = {r["ref"] for r in sel}
            summary[(n, name)] = mean
            print(f"{n},{name},{len(sel)},{mean['seconds']:.2f},{mean['fe']:.1f},{mean['fe'] / n:.3f},"
                  f"{mean['rho_I']:.3f},{sd['rho_I']:.3f},{mean['top5_I']:.2f},{mean['rho_vs_ref']:.3f},"
                  f"{sd['rho_vs_ref']:.3f},{mean['top5_vs_ref']:.2f},{'/'.join(sorted(refs))}")
    if not lengths:
        return
    lo, hi = min(lengths), max(lengths)
    if (lo, "fast") in summary and (hi, "fast") in summary and hi != lo:
        a, b = summary[(lo, "fast")], summary[(hi, "fast")]
        print(f"\nratio,fast FE n={hi} / n={lo},{b['fe'] / a['fe']:.2f},target <= 1.5")
        print(f"ratio,fast seconds n={hi} / n={lo},{b['seconds'] / a['seconds']:.2f},(one forward grows with n)")
    for n in lengths:
        if (n, "fisher_s") in summary:
            print(f"ratio,Fisher-S HEAT FE / n at n={n},{summary[(n, 'fisher_s')]['fe'] / n:.3f},target <= 0.5 at 256")


if __name__ == "__main__":
    main()
