"""S exact (eq. 3) on SmolLM2: batched HVPs (forward-over-reverse and reverse-over-reverse) on the frozen prefix
KV cache vs the authors'-code loop (one full forward + double backward per token and probe).

The naive loop costs minutes per length on a CPU, so both methods score the same ``--tokens`` evenly spaced
positions (default 8, spread over the whole context so the prefix saving is averaged honestly); times are for those
positions, m probes each. Each (method, n) runs in its own process. Target: ≥ 4× faster at n = 64 with m = 10.

    python benchmarks/bench_curvature.py [--lengths 32 64 128] [--probes 10] [--tokens 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout without installing
import _common  # noqa: E402


def case(method: str, n: int, probes: int, tokens: int, chunk: int) -> dict:
    import torch

    import heat_module as hm
    from heat_module.heat.curvature import curvature_exact, rademacher
    from heat_module.lm.capture import capture, install
    from heat_module.lm.forward import embed, next_token_logits

    model, tok = hm.load_model("smollm2")
    install(model)
    x = embed(model, _common.prompt_ids(tok, n)[None]).detach()
    with torch.no_grad(), capture() as records:
        y = int(next_token_logits(model, x).argmax())
    positions = sorted({round(i * (n - 1) / max(1, tokens - 1)) for i in range(tokens)})
    r = rademacher(probes, n, x.shape[-1], seed=0)
    if method == "naive":
        mask = torch.zeros(n, dtype=torch.bool)
        mask[positions] = True

        def fn():  # the loop over the chosen positions only
            sub = r * mask[None, :, None]
            out = torch.zeros(n)
            for i in positions:
                keep = torch.zeros_like(sub)
                keep[:, i] = sub[:, i]
                out[i] = _naive_one(model, x, y, keep, i)
            return out
    else:
        mode = {"batched": "forward_over_reverse", "batched_rev": "reverse_over_reverse"}[method]
        fn = lambda: curvature_exact(model, x, y, r, captures=records, chunk_size=chunk, positions=positions,
                                     mode=mode)
    out = _common.timed(fn, warmup=method != "naive")
    return {"component": "curvature", "method": method, "n": n, "probes": probes, "tokens": len(positions), **out}


def _naive_one(model, x, y, probes, i):
    """curvature_naive restricted to position i (same code path: forward, grad(create_graph), grad)."""
    import torch

    from heat_module.heat.objective import target_logprob_fn
    from heat_module.lm.forward import position_ids_from_mask

    mask = torch.ones(1, x.shape[1], dtype=torch.long)
    g = target_logprob_fn(model, y, mask, position_ids_from_mask(mask))
    total = 0.0
    with torch.enable_grad():
        for k in range(probes.shape[0]):
            xx = x.detach().clone().requires_grad_(True)
            (gx,) = torch.autograd.grad(g(xx), xx, create_graph=True)
            (hv,) = torch.autograd.grad((gx[0, i] * probes[k, i]).sum(), xx)
            total += float(hv[0, i].abs().sum()) / probes.shape[0]
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--probes", type=int, default=10)
    p.add_argument("--tokens", type=int, default=8)
    p.add_argument("--chunk", type=int, default=10)
    p.add_argument("--csv", default=None)
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.n, args.probes, args.tokens, args.chunk)))
        return
    print(f"# machine: {_common.machine()}; m = {args.probes} probes; {args.tokens} evenly spaced tokens per length")
    rows = []
    print("component,method,n,probes,tokens,seconds,peak_extra_mb")
    for n in args.lengths:
        for method in ("naive", "batched", "batched_rev"):
            row = _common.run_case(__file__, ["--case", method, "--n", str(n), "--probes", str(args.probes),
                                              "--tokens", str(args.tokens), "--chunk", str(args.chunk)])
            rows.append(row)
            print(f"curvature,{method},{n},{args.probes},{row['tokens']},{row['seconds']:.3f},"
                  f"{row['peak_extra_mb']:.1f}", flush=True)
    print("\nn,naive_s,fwd_rev_s,speedup,rev_rev_s,speedup,naive_peak_mb,fwd_rev_peak_mb,rev_rev_peak_mb")
    for n in args.lengths:
        a, b, c = [r for r in rows if r["n"] == n]
        print(f"{n},{a['seconds']:.2f},{b['seconds']:.2f},{a['seconds'] / b['seconds']:.2f}x,{c['seconds']:.2f},"
              f"{a['seconds'] / c['seconds']:.2f}x,{a['peak_extra_mb']:.0f},{b['peak_extra_mb']:.0f},"
              f"{c['peak_extra_mb']:.0f}")
    if args.csv:
        _common.write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
