"""Generation attribution on SmolLM2: the T × (n + T) matrix with rows shared in batches vs T independent calls.

For each method (default HEAT, AttnLRP) a greedy answer of T tokens is fixed first (not timed); then

- ``independent``: ``method.attribute(prompt + y_<t, target=y_t)`` for t = 1..T, one call each;
- ``shared``: ``method.attribute_generation(prompt, continuation=answer, batch_size=B)``: the T rows as left-padded
  batches of prefixes through ``attribute_batch``.

Prints CSV rows: forward passes, gradients, HVPs and forward-equivalents (FE) summed over the rows from
``result.cost`` (FE of a row are in units of a forward over that row's own prefix; a method whose cost records passes
but no FE, AttnLRP, counts forward + backward = 1 + 1 FE per gradient pass), per generated token, and seconds per
generated token (one torch thread). The two modes do the same arithmetic; the saving of ``shared`` is the per-call
overhead and the larger matmuls of a batch.

    python benchmarks/bench_generation.py [--n 32] [--T 16] [--batch-size 16] [--methods heat attnlrp]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout without installing
import _common  # noqa: E402

FIELDS = ("method", "mode", "n", "T", "batch_size", "forward_passes", "gradients", "hvps", "fe", "fe_per_token",
          "seconds", "seconds_per_token", "max_rel_diff")


def row_fe(cost) -> float:
    """A row's FE: ``cost.forward_equivalents``, else forward passes + one backward per gradient pass."""
    from heat_module.heat.cost import FE_BACKWARD

    if cost.forward_equivalents:
        return float(cost.forward_equivalents)
    return float(cost.forward_passes + FE_BACKWARD * cost.gradients)


def totals(rows) -> dict:
    from heat_module.result import Cost

    costs = [Cost.from_dict(r.cost) for r in rows]
    return {"forward_passes": sum(c.forward_passes for c in costs), "gradients": sum(c.gradients for c in costs),
            "hvps": sum(c.hvps for c in costs), "fe": sum(row_fe(c) for c in costs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="prompt tokens (our filler text)")
    parser.add_argument("--T", type=int, default=16, help="generated tokens")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per attribute_batch call in shared mode")
    parser.add_argument("--methods", nargs="+", default=["heat", "attnlrp"])
    args = parser.parse_args()

    import torch

    import heat_module as hm
    from heat_module.attribution.generation import greedy_answer
    from heat_module.attribution.registry import build
    from heat_module.config import HEATConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, tok = hm.load_model("smollm2")
    prompt = _common.prompt_ids(tok, args.n)
    print(f"# {_common.machine()}", flush=True)
    print(",".join(FIELDS), flush=True)
    for name in args.methods:
        method = build(name, model, tok, config=HEATConfig(progress=False) if name == "heat" else None)
        answer = greedy_answer(method, prompt, args.T)
        full = torch.cat([prompt, prompt.new_tensor(answer)])
        T = len(answer)
        method.attribute(prompt, answer[0])  # warm-up
        t0 = time.perf_counter()
        single = [method.attribute(full[: args.n + t], answer[t]) for t in range(T)]
        t_single = time.perf_counter() - t0
        t0 = time.perf_counter()
        gen = method.attribute_generation(prompt, continuation=answer, batch_size=args.batch_size)
        t_shared = time.perf_counter() - t0
        diff = max(float((gen.matrix[t, : args.n + t] - r.scores).abs().max() / r.scores.abs().max())
                   for t, r in enumerate(single))
        for mode, rows, seconds, bs in (("independent", single, t_single, 1),
                                        ("shared", gen.rows, t_shared, args.batch_size)):
            tot = totals(rows)
            print(_common.csv_row(name, mode, args.n, T, bs, tot["forward_passes"], tot["gradients"], tot["hvps"],
                                  f"{tot['fe']:.1f}", f"{tot['fe'] / T:.2f}", f"{seconds:.2f}",
                                  f"{seconds / T:.3f}", f"{diff if mode == 'shared' else 0.0:.1e}"), flush=True)


if __name__ == "__main__":
    main()
