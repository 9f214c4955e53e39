"""I (eq. 4) on SmolLM2: batched prefix-sharing computation vs the naive one-forward-per-token loop.

Each (method, n) runs in its own process (time after a warm-up; peak RSS increase). Prints CSV rows and the
naive/batched time ratio per n, measured in this one run. Target: ≥ 2× faster at n = 128.

    python benchmarks/bench_information.py [--lengths 32 64 128] [--csv benchmarks/out/information.csv]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout without installing
import _common  # noqa: E402


def case(method: str, n: int, batch_size: int) -> dict:
    import torch

    import heat_module as hm
    from heat_module.heat.information import information, information_naive
    from heat_module.lm.capture import capture, install
    from heat_module.lm.forward import embed, next_token_logits

    torch.manual_seed(0)
    model, tok = hm.load_model("smollm2")
    install(model)
    x = embed(model, _common.prompt_ids(tok, n)[None]).detach()
    with torch.no_grad(), capture() as records:
        logp = torch.log_softmax(next_token_logits(model, x), -1)
    if method == "naive":
        fn = lambda: information_naive(model, x)
    else:
        fn = lambda: information(model, x, records, logp, batch_size=batch_size)
    out = _common.timed(fn)
    return {"component": "information", "method": method, "n": n, **out}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--csv", default=None)
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.n, args.batch_size)))
        return
    print(f"# machine: {_common.machine()}")
    rows = []
    print("component,method,n,seconds,peak_extra_mb")
    for n in args.lengths:
        for method in ("naive", "batched"):
            row = _common.run_case(__file__, ["--case", method, "--n", str(n), "--batch-size", str(args.batch_size)])
            rows.append(row)
            print(f"{row['component']},{row['method']},{n},{row['seconds']:.3f},{row['peak_extra_mb']:.1f}", flush=True)
    print("\nn,naive_s,batched_s,speedup,naive_peak_mb,batched_peak_mb")
    for n in args.lengths:
        a, b = [r for r in rows if r["n"] == n]
        print(f"{n},{a['seconds']:.2f},{b['seconds']:.2f},{a['seconds'] / b['seconds']:.2f}x,"
              f"{a['peak_extra_mb']:.0f},{b['peak_extra_mb']:.0f}")
    if args.csv:
        _common.write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
