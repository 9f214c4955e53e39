"""S exact (eq. 3) on SmolLM2 against the authors' algorithm (VishalPramanik/HETA, ``heta/hessian_sensitivity.py``).

The authors' algorithm, written out below as :func:`authors_algorithm`: ONE forward and ONE ``create_graph``
gradient ∇g over all n tokens, then, for every token i and probe k, one double backward through that graph
(``retain_graph``: the graph is reused) of (∇g · Π_i r_k), reading block i of the result. Ours:
:func:`heat_module.heat.curvature.curvature_exact` (runs of tokens on the frozen prefix KV cache, (token, probe)
tangents batched across the tokens of a run, ``hvp_mode="auto"``, chunks from the memory budget). Both use the
same Rademacher probes, and the script asserts the same values (allclose) before printing the ratio.

Each (method, n, m) runs in its own process; for every configuration the methods run back to back in an order
rotated per configuration and per round (``--repeats R``: R rounds, median seconds, the range of the per-round
ratios printed beside the ratio of medians) to spread the drift of a shared machine.
Each method gets a short warm-up (its first two tokens) before the timed call over all n tokens (or ``--tokens``
evenly spaced ones where a configuration says so: the authors' cost at m = 10, n = 96 is ~30 min here).

    python benchmarks/bench_curvature.py [--configs 48:1 48:10 96:1 96:10:12] [--csv out.csv]
    python benchmarks/bench_curvature.py --baselines authors authors_code --configs 48:1 48:10
    python benchmarks/bench_curvature.py --modes [--configs ...]   # ours: forward- vs reverse-over-reverse
    python benchmarks/bench_curvature.py --floor [--configs 48:10]  # what one HVP costs: the ceiling of any exact S

Two baselines (``--baselines``, default ``authors``): ``authors`` is their loop on OUR objective (logits of the
last position only, n positions), which isolates the algorithm; ``authors_code`` is their code path as a user runs
it (:func:`authors_code`: the sequence includes the target token, T = n + 1 positions, one forward with
``output_attentions`` and ``output_hidden_states`` and the full-vocabulary logits of every position, parameters
left trainable as ``from_pretrained`` gives them), the same loop on top. Both give the same S (asserted).

``--floor`` times the pieces at n (full length and the half-length suffix a prefix-cached token recomputes on
average): a forward, a gradient, one double backward through a ``create_graph`` gradient (the authors' HVP, D_1),
and a batched double backward of the c·m tangents of one of our runs (c tokens from
:func:`~heat_module.heat.cost.hvp_runs`, m probes each, at most :func:`~heat_module.heat.curvature.hvp_chunk` of the
default memory budget per call, as ``curvature_exact`` sends them; D_batched per tangent). Any exact S pays at least
one HVP per (token, probe); the prefix cache halves the positions on average and batching gains what it gains, so
the speed-up over the authors' loop is at most D_1(n) / D_batched(n/2) (printed as the ceiling; the per-run
gradients, which we pay and the authors do not, only lower it).

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


def authors_loop(emb, logp, probes, positions, n: int):
    """Their ``HessianSensitivity.compute`` with given probes: one ``create_graph`` gradient of ``logp`` w.r.t.
    ``emb`` (1, T, d), then one double backward per (token, probe) through it (``retain_graph``), reading block i.

    Returns:
        (n,) S_i (0 where not scored).
    """
    import torch

    m = probes.shape[0]
    out = torch.zeros(n)
    (grad,) = torch.autograd.grad(logp, emb, create_graph=True, retain_graph=True, allow_unused=True)
    for i in positions:
        acc = 0.0
        for k in range(m):
            r = torch.zeros_like(emb)
            r[0, i, :] = probes[k, i]
            (hvp,) = torch.autograd.grad((grad * r).sum(), emb, retain_graph=True, allow_unused=True)
            acc += hvp.detach()[0, i, :].abs().sum().item()
        out[i] = acc / m
    return out


def authors_algorithm(model, x, target, probes, positions):
    """The authors' loop (:func:`authors_loop`) on our objective: g = log P(y | X) from the logits of the last of
    the n positions only (:func:`~heat_module.heat.objective.target_logprob_fn`).

    Args:
        x: (1, n, d) embeddings; probes: (m, n, d); positions: the tokens i to score.
    Returns:
        (n,) S_i (0 where not scored).
    """
    import torch

    from heat_module.heat.objective import target_logprob_fn
    from heat_module.lm.forward import position_ids_from_mask

    n = x.shape[1]
    mask = torch.ones(1, n, dtype=torch.long)
    g = target_logprob_fn(model, target, mask, position_ids_from_mask(mask))
    with torch.enable_grad():
        emb = x.detach().clone().requires_grad_(True)
        return authors_loop(emb, g(emb), probes, positions, n)


def authors_code(model, ids, target, probes, positions):
    """The authors' code path as a user runs it (``HETA._attribute_full`` then ``HessianSensitivity.compute``): the
    embeddings of the context and the target token (T = n + 1), ``model(inputs_embeds, output_attentions=True,
    output_hidden_states=True, use_cache=False)`` with HF's eager attention, g = log_softmax(logits[0, T − 2])[y]
    (full-vocabulary logits at every position), then :func:`authors_loop` on that graph.

    Args:
        ids: (n,) context ids; target: y; probes: (m, n, d); positions: the tokens i to score.
    Returns:
        (n,) S_i (0 where not scored).
    """
    import torch

    seq = torch.cat([ids, torch.tensor([target])])[None]
    n = ids.shape[0]
    with torch.enable_grad():
        emb = model.get_input_embeddings()(seq).detach().clone().requires_grad_(True)
        logits = model(inputs_embeds=emb, output_attentions=True, output_hidden_states=True, use_cache=False).logits
        logp = torch.log_softmax(logits[0, n - 1, :], dim=-1)[target]
        return authors_loop(emb, logp, probes, positions, n)


def pieces(model, tok, s: int, probes: int) -> dict:
    """Seconds at s positions: forward, gradient, one HVP (D_1) and, per tangent, a batched HVP of one run's c·m
    tangents at most :func:`~heat_module.heat.curvature.hvp_chunk` at a time (D_batched; c from
    :func:`~heat_module.heat.cost.hvp_runs`), with the batch size."""
    import torch

    from heat_module.heat.cost import hvp_runs
    from heat_module.heat.curvature import hvp_chunk, rademacher
    from heat_module.heat.objective import target_logprob_fn
    from heat_module.lm.forward import embed, position_ids_from_mask

    x = embed(model, _common.prompt_ids(tok, s)[None]).detach()
    mask = torch.ones(1, s, dtype=torch.long)
    g = target_logprob_fn(model, 42, mask, position_ids_from_mask(mask))

    def gradient(create_graph=False):
        xx = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(g(xx), xx, create_graph=create_graph)
        return xx, gx

    with torch.no_grad():
        forward_s = _common.time_call(lambda: g(x))
    gradient_s = _common.time_call(gradient)
    xx, gx = gradient(create_graph=True)
    r = rademacher(probes, s, x.shape[-1], seed=0)
    one = torch.zeros_like(x)
    one[0, s // 2] = r[0, s // 2]
    hvp_s = _common.time_call(lambda: torch.autograd.grad((gx * one).sum(), xx, retain_graph=True))
    c = len(hvp_runs(list(range(s)), probes, s, share=True)[0])
    batch = min(c * probes, hvp_chunk(model, s, None, None))  # what curvature_exact sends per call
    many = torch.zeros(batch, *x.shape)
    for j in range(batch):
        many[j, 0, j // probes] = r[j % probes, j // probes]
    batched_s = _common.time_call(
        lambda: torch.autograd.grad(gx, xx, many, retain_graph=True, is_grads_batched=True)) / batch
    return {"forward_s": forward_s, "gradient_s": gradient_s, "hvp_s": hvp_s, "batch": batch,
            "hvp_batched_per_tangent_s": batched_s}


def floor(n: int, probes: int) -> dict:
    """:func:`pieces` at n (``full_*``) and at the half-length suffix (``half_*``), and the ceiling
    D_1(n) / D_batched(n/2) of any exact S over the authors' loop (see the module doc)."""
    import torch

    import heat_module as hm
    from heat_module.lm.capture import install

    torch.set_num_threads(1)
    model, tok = hm.load_model("smollm2")
    install(model)
    out: dict = {"n": n, "probes": probes}
    for label, s in (("full", n), ("half", max(2, n // 2))):
        out.update({f"{label}_{k}": v for k, v in pieces(model, tok, s, probes).items()})
    out["ceiling"] = out["full_hvp_s"] / out["half_hvp_batched_per_tangent_s"]
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
    elif method == "authors_code":
        ids = _common.prompt_ids(tok, n)
        for p in model.parameters():  # as from_pretrained leaves them
            p.requires_grad_(True)
        model.set_attn_implementation("eager")

        def fn(pos):
            return authors_code(model, ids, y, r, pos)
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


def compare(configs: list[str], bases: list[str], ours: str, repeats: int = 1) -> list[dict]:
    """Per config: ``ours`` and every method of ``bases`` in fresh processes, ``repeats`` rounds with the order
    rotated every round (and per config), the same S asserted, one row per base with the ratio of the median
    seconds (base / ours) and the spread of the per-round ratios."""
    import statistics

    import torch

    print(f"# machine: {_common.machine()}; one torch thread per case; each case in its own process")
    print(f"n,m,tokens,baseline,baseline_s,{ours}_s,ratio,ratio_range,max_abs_diff,allclose", flush=True)
    rows = []
    tmp = tempfile.mkdtemp()
    for j, config in enumerate(configs):
        n, m, *rest = (int(v) for v in config.split(":"))
        tokens = rest[0] if rest else 0
        methods = [*bases, ours]
        seconds: dict[str, list[float]] = {method: [] for method in methods}
        vals, tokens_scored = {}, 0
        for rep in range(repeats):
            shift = (j + rep) % len(methods)
            for method in methods[shift:] + methods[:shift]:
                out = os.path.join(tmp, f"{method}-{n}-{m}.json")
                res = _common.run_case(__file__, ["--case", method, "--n", str(n), "--probes", str(m),
                                                  "--tokens", str(tokens), "--out", out])
                seconds[method].append(res["seconds"])
                tokens_scored = res["tokens"]
                with open(out) as f:
                    vals[method] = torch.tensor(json.load(f))
        for base in bases:
            diff = float((vals[base] - vals[ours]).abs().max())
            close = bool(torch.allclose(vals[ours], vals[base], rtol=1e-3, atol=1e-5))
            a, b = statistics.median(seconds[base]), statistics.median(seconds[ours])
            per_round = [x / y for x, y in zip(seconds[base], seconds[ours])]
            row = {"n": n, "m": m, "tokens": tokens_scored, "baseline": base, "baseline_s": a, f"{ours}_s": b,
                   "ratio": a / b, "ratio_min": min(per_round), "ratio_max": max(per_round), "repeats": repeats,
                   "max_abs_diff": diff, "allclose": close}
            rows.append(row)
            print(f"{n},{m},{tokens_scored},{base},{a:.1f},{b:.1f},{a / b:.2f}x,{min(per_round):.2f}-"
                  f"{max(per_round):.2f},{diff:.2e},{close}", flush=True)
            if not close:
                raise AssertionError(
                    f"Expected the same S from {base} and {ours} at n={n}, m={m}, got max |diff| {diff}")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--configs", nargs="+", default=["48:1", "48:10", "96:1", "96:10:12"])
    p.add_argument("--baselines", nargs="+", default=["authors"], choices=["authors", "authors_code"])
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds per config (fresh processes, order rotated); seconds are medians (a noisy machine)")
    p.add_argument("--csv", default=None)
    p.add_argument("--modes", action="store_true",
                   help="compare our two HVP modes (reverse- vs forward-over-reverse) instead of authors vs ours")
    p.add_argument("--floor", action="store_true", help="time one HVP of each kind and print the ceiling")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--probes", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--tokens", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case == "floor":
        print(json.dumps(floor(args.n, args.probes)))
        return
    if args.case:
        print(json.dumps(case(args.case, args.n, args.probes, args.tokens or None, args.out)))
        return
    if args.floor:
        print(f"# machine: {_common.machine()}; one torch thread; seconds per call (median)")
        rows = []
        for config in args.configs:
            n, m, *_ = (int(v) for v in config.split(":"))
            row = _common.run_case(__file__, ["--case", "floor", "--n", str(n), "--probes", str(m)])
            rows.append(row)
            print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
    elif args.modes:
        rows = compare(args.configs, ["reverse_over_reverse"], "forward_over_reverse", args.repeats)
    else:
        rows = compare(args.configs, args.baselines, "ours", args.repeats)
    if args.csv:
        _common.write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
