"""S exact (eq. 3) on SmolLM2 against the authors' algorithm (VishalPramanik/HETA, ``heta/hessian_sensitivity.py``).

The authors' algorithm, written out below as :func:`authors_algorithm`: ONE forward and ONE ``create_graph``
gradient ∇g over all n tokens, then, for every token i and probe k, one double backward through that graph
(``retain_graph``: the graph is reused) of (∇g · Π_i r_k), reading block i of the result. Ours:
:func:`heat_module.heat.curvature.curvature_exact` (runs of tokens on the frozen prefix KV cache, (token, probe)
tangents batched across the tokens of a run, ``hvp_mode="auto"``, chunks from the memory budget). Both use the
same Rademacher probes, and the script asserts the same values (allclose) before printing the ratio.

Each (method, n, m) runs in its own process; for every configuration the two methods run back to back in
alternating order (authors first on even rows, ours first on odd rows) to spread the drift of a shared machine.
Each method gets a short warm-up (its first two tokens) before the timed call over all n tokens (or ``--tokens``
evenly spaced ones where a configuration says so: the authors' cost at m = 10, n = 96 is ~30 min here).

    python benchmarks/bench_curvature.py [--configs 48:1 48:10 96:1 96:10:12] [--csv out.csv]
    python benchmarks/bench_curvature.py --modes [--configs ...]   # ours: forward- vs reverse-over-reverse

A config is n:m or n:m:tokens. One torch thread (``torch.set_num_threads(1)``) in every case. With ``--modes`` the
two methods compared are ours with ``hvp_mode="reverse_over_reverse"`` (what ``"auto"`` picks on the CPU) and
``"forward_over_reverse"``: is that choice right at every shape?
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout without installing
import _common  # noqa: E402


def authors_algorithm(model, x, target, probes, positions):
    """The authors' HVP loop (their ``HessianSensitivity.compute``) with given probes: one ``create_graph``
    gradient over all n tokens, then one double backward per (token, probe) through it (``retain_graph``).

    Args:
        x: (1, n, d) embeddings; probes: (m, n, d); positions: the tokens i to score.
    Returns:
        (n,) S_i (0 where not scored).
    """
    import torch

    from heat_module.heat.objective import target_logprob_fn
    from heat_module.lm.forward import position_ids_from_mask

    n = x.shape[1]
    m = probes.shape[0]
    mask = torch.ones(1, n, dtype=torch.long)
    g = target_logprob_fn(model, target, mask, position_ids_from_mask(mask))
    out = torch.zeros(n)
    with torch.enable_grad():
        emb = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(g(emb), emb, create_graph=True, retain_graph=True)
        for i in positions:
            acc = 0.0
            for k in range(m):
                r = torch.zeros_like(emb)
                r[0, i, :] = probes[k, i]
                (hvp,) = torch.autograd.grad((grad * r).sum(), emb, retain_graph=True)
                acc += hvp[0, i, :].abs().sum().item()
            out[i] = acc / m
    return out


def case(method: str, n: int, probes: int, tokens: int | None, out_path: str) -> dict:
    import time

    import torch

    import heat_module as hm
    from heat_module.heat.curvature import curvature_exact, rademacher
    from heat_module.lm.capture import capture, install
    from heat_module.lm.forward import embed, next_token_logits

    torch.set_num_threads(1)
    model, tok = hm.load_model("smollm2")
    install(model)
    x = embed(model, _common.prompt_ids(tok, n)[None]).detach()
    with torch.no_grad(), capture() as records:
        y = int(next_token_logits(model, x).argmax())
    positions = list(range(n)) if not tokens else sorted({round(i * (n - 1) / max(1, tokens - 1))
                                                          for i in range(tokens)})
    r = rademacher(probes, n, x.shape[-1], seed=0)
    if method == "authors":
        def fn(pos):
            return authors_algorithm(model, x, y, r, pos)
    else:  # "ours" (hvp_mode "auto") or an hvp_mode
        mode = "auto" if method == "ours" else method

        def fn(pos):
            return curvature_exact(model, x, y, r, captures=records, positions=pos, mode=mode)
    fn(positions[:2])  # warm-up
    t0 = time.perf_counter()
    s = fn(positions)
    seconds = time.perf_counter() - t0
    with open(out_path, "w") as f:
        json.dump(s.tolist(), f)
    return {"method": method, "n": n, "probes": probes, "tokens": len(positions), "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--configs", nargs="+", default=["48:1", "48:10", "96:1", "96:10:12"])
    p.add_argument("--csv", default=None)
    p.add_argument("--modes", action="store_true",
                   help="compare our two HVP modes (reverse- vs forward-over-reverse) instead of authors vs ours")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--probes", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--tokens", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.n, args.probes, args.tokens or None, args.out)))
        return
    import torch

    base, ours = ("reverse_over_reverse", "forward_over_reverse") if args.modes else ("authors", "ours")
    print(f"# machine: {_common.machine()}; one torch thread per case; each case in its own process")
    print(f"n,m,tokens,{base}_s,{ours}_s,ratio,max_abs_diff,allclose", flush=True)
    rows = []
    tmp = tempfile.mkdtemp()
    for j, config in enumerate(args.configs):
        n, m, *rest = (int(v) for v in config.split(":"))
        tokens = rest[0] if rest else 0
        order = (base, ours) if j % 2 == 0 else (ours, base)
        res, vals = {}, {}
        for method in order:
            out = os.path.join(tmp, f"{method}-{n}-{m}.json")
            res[method] = _common.run_case(__file__, ["--case", method, "--n", str(n), "--probes", str(m),
                                                      "--tokens", str(tokens), "--out", out])
            with open(out) as f:
                vals[method] = torch.tensor(json.load(f))
        diff = float((vals[base] - vals[ours]).abs().max())
        close = bool(torch.allclose(vals[ours], vals[base], rtol=1e-3, atol=1e-5))
        a, b = res[base]["seconds"], res[ours]["seconds"]
        row = {"n": n, "m": m, "tokens": res[ours]["tokens"], f"{base}_s": a, f"{ours}_s": b, "ratio": a / b,
               "max_abs_diff": diff, "allclose": close}
        rows.append(row)
        print(f"{n},{m},{row['tokens']},{a:.1f},{b:.1f},{a / b:.2f}x,{diff:.2e},{close}", flush=True)
        if not close:
            raise AssertionError(f"Expected the same S from {base} and {ours} at n={n}, m={m}, got max |diff| {diff}")
    if args.csv:
        _common.write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
