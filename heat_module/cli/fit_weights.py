"""``heat fit-weights``: fit HEAT's β, γ on a data file by non-negative least squares (Theorem 3).

The math is :mod:`heat_module.heat.fit`; this module is only the argument parsing and printing.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from heat_module.config import HEATConfig, s_estimator_names
from heat_module.data.readers import read_texts
from heat_module.heat.estimator import HEAT
from heat_module.heat.fit import fit_weights
from heat_module.lm.loading import load_model


def main(argv: Sequence[str] | None = None) -> int:
    """``heat fit-weights``: fit β, γ on a data file and print them (and optionally write JSON).

    Arguments: ``--data PATH`` (required; .jsonl/.json/.txt), ``--field NAME``, ``--model smollm2``,
    ``--limit 20``, ``--max-tokens 64`` (truncate each context to its last N tokens), ``--num-spans 8``,
    ``--max-span N``, ``--seed 0``, ``--curvature exact|fisher|lowrank``, ``--probes 1``, ``--rank 16``,
    ``--fisher-topk 16``, ``--layers K``, ``--window W``, ``--json OUT``.
    """
    p = argparse.ArgumentParser(prog="heat fit-weights", description="Fit HEAT's beta, gamma by NNLS (Theorem 3).")
    p.add_argument("--data", required=True)
    p.add_argument("--field", default=None)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--num-spans", type=int, default=8)
    p.add_argument("--max-span", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--curvature", default="exact", choices=s_estimator_names(), help="the S estimator")
    p.add_argument("--probes", type=int, default=None, help="its Rademacher probes (default 1)")
    p.add_argument("--rank", type=int, default=None, help="k of --curvature lowrank (default 16)")
    p.add_argument("--fisher-topk", type=int, default=None, help="K of --curvature fisher (default 16)")
    p.add_argument("--layers", type=int, default=None, help="HEAT-LS: S w.r.t. the input of layer L - k")
    p.add_argument("--window", type=int, default=None)
    p.add_argument("--json", default=None, help="write the result as JSON here")
    args = p.parse_args(argv)

    model, tok = load_model(args.model)
    # β = γ = 1: what the fit computes its features with (fit.collect), so S's settings are never a no-op here
    settings = {"probes": args.probes, "layers": args.layers, "rank": args.rank, "topk": args.fisher_topk}
    settings = {k: v for k, v in settings.items() if v is not None}
    own = {"lowrank": "rank", "fisher": "topk"}
    stray = [f"--{'fisher-topk' if k == 'topk' else k}" for k in ("rank", "topk")
             if k in settings and own.get(args.curvature) != k]
    if stray:
        p.error(f"{', '.join(stray)} do not apply to --curvature {args.curvature}")
    cfg = HEATConfig(beta=1.0, gamma=1.0, curvature={"name": args.curvature, **settings}, window=args.window,
                     seed=args.seed)
    heat = HEAT(model, tok, cfg)
    texts = read_texts(args.data, args.field, args.limit)
    examples = []
    for text in texts:
        ids = heat.encode(text)
        examples.append(ids[-args.max_tokens:] if args.max_tokens else ids)
    result = fit_weights(heat, examples, args.num_spans, args.seed, args.max_span)
    out = result.to_dict()
    print(f"beta={out['beta']:.6g} gamma={out['gamma']:.6g} loss={out['loss']:.6g} "
          f"relative_error={out['relative_error']:.4f} subsets={out['num_subsets']} examples={out['num_examples']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
