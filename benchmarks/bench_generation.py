"""Generation attribution on SmolLM2: the T × (n + T) matrix computed together (shared) vs T independent calls.

For each method a greedy answer of T tokens is fixed first (not timed); then, in the same process,

- ``independent``: ``method.attribute(prompt + y_<t, target=y_t)`` for t = 1..T, one call each;
- ``shared``: ``method.attribute_generation(prompt, continuation=answer)``, the default: the rows computed together
  from the longest prefix where that is exact for the method (HEAT's M and exact I, occlusion; see
  :mod:`heat_module.attribution.shared_generation`), else the same per-row calls (AttnLRP, the ``fast`` preset);
- ``batched`` (only with ``--modes ... batched``): ``attribute_generation(..., share=False, batch_size=B)``, the
  per-row calls as left-padded batches through ``attribute_batch``.

Prints CSV rows. FE are in units of **one forward of the longest prefix** (N = n + T − 1 tokens) for every mode, so
they compare: a per-row result's FE (units of a forward over its own n + t tokens) are scaled by (n + t) / N; a
method whose per-row cost records passes but no FE (AttnLRP) counts forward + backward = 1 + 1 per gradient; the
occlusion baseline records no cost per row, so its independent FE are counted from its definition (one reference
forward and n + t masked full forwards of the row's prefix). ``max_rel_diff`` = the largest over rows of
max|shared − independent| / max|independent|. Seconds are wall time, one torch thread.

    python benchmarks/bench_generation.py [--n 32] [--T 16] [--methods heat occlusion-kl attnlrp fast]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout without installing
import _common  # noqa: E402

FIELDS = ("method", "mode", "path", "n", "T", "forward_passes", "gradients", "hvps", "fe", "fe_per_token",
          "seconds", "seconds_per_token", "time_vs_independent", "max_rel_diff")

#: benchmark name -> (registry name, build options; a HEAT config is given by preset name)
METHODS = {
    "heat": ("heat", {"config": None}),
    "mi": ("heat", {"config": "mi"}),
    "occlusion-kl": ("occlusion", {"measure": "kl"}),
    "attnlrp": ("attnlrp", {}),
    "fast": ("heat", {"config": "fast"}),
}


def row_fe(result, n_row: int, N: int, name: str) -> float:
    """One row's FE in forwards of the longest prefix (N tokens); ``n_row`` = the row's context length."""
    from heat_module.heat.cost import FE_BACKWARD
    from heat_module.result import Cost

    cost = Cost.from_dict(result.cost)
    if "shared_cost" in cost.details:  # already in forwards of the longest prefix
        return float(cost.forward_equivalents)
    if cost.forward_equivalents:
        own = float(cost.forward_equivalents)
    elif name == "occlusion-kl" and cost.is_empty():
        own = 1.0 + n_row  # one reference forward and n_row masked full forwards of the row's prefix
    else:
        own = float(cost.forward_passes + FE_BACKWARD * cost.gradients)
    return own * n_row / N


def totals(rows, n: int, N: int, name: str) -> dict:
    from heat_module.result import Cost

    costs = [Cost.from_dict(r.cost) for r in rows]
    passes = sum(c.forward_passes for c in costs)
    if name == "occlusion-kl" and all(c.is_empty() for c in costs):
        passes = sum(1 + n + t for t in range(len(rows)))
    return {"forward_passes": passes, "gradients": sum(c.gradients for c in costs),
            "hvps": sum(c.hvps for c in costs),
            "fe": sum(row_fe(r, n + t, N, name) for t, r in enumerate(rows))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="prompt tokens (our filler text)")
    parser.add_argument("--T", type=int, default=16, help="generated tokens")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per attribute_batch call in batched mode")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--modes", nargs="+", default=["independent", "shared"],
                        choices=["independent", "shared", "batched"])
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
        registry_name, options = METHODS[name]
        options = dict(options)
        if "config" in options:
            preset = options["config"]
            options["config"] = HEATConfig(progress=False) if preset is None else HEATConfig.preset(preset,
                                                                                                  progress=False)
        method = build(registry_name, model, tok, **options)
        answer = greedy_answer(method, prompt, args.T)
        full = torch.cat([prompt, prompt.new_tensor(answer)])
        T = len(answer)
        N = args.n + T - 1
        method.attribute(prompt, answer[0])  # warm-up
        runs = {}
        for mode in args.modes:
            t0 = time.perf_counter()
            if mode == "independent":
                rows, path = [method.attribute(full[: args.n + t], answer[t]) for t in range(T)], "per-row"
            else:
                gen = method.attribute_generation(prompt, continuation=answer, share=mode == "shared",
                                                  batch_size=args.batch_size if mode == "batched" else 1)
                rows = gen.rows
                path = "shared" if gen.extra["shared"] else ("batched" if mode == "batched" else "per-row")
            runs[mode] = (rows, path, time.perf_counter() - t0)
        base = runs.get("independent")
        for mode, (rows, path, seconds) in runs.items():
            tot = totals(rows, args.n, N, name)
            diff = ratio = float("nan")
            if base is not None:
                diff = max(float((r.scores.double() - b.scores.double()).abs().max() / b.scores.double().abs().max())
                           for r, b in zip(rows, base[0]))
                ratio = seconds / base[2]
            print(_common.csv_row(name, mode, path, args.n, T, tot["forward_passes"], tot["gradients"], tot["hvps"],
                                  f"{tot['fe']:.1f}", f"{tot['fe'] / T:.2f}", f"{seconds:.2f}",
                                  f"{seconds / T:.3f}", f"{ratio:.3f}", f"{diff:.1e}"), flush=True)


if __name__ == "__main__":
    main()
