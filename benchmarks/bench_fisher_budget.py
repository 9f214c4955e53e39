"""How much a Fisher budget changes `"fast"`'s scores: Spearman ρ of HEAT with K = 16 against smaller K, real text.

``FisherS``/``FisherI(max_forward_equivalents=B)`` pick the largest K ≤ 16 whose factors the cost model prices within
B at n (fewer at long n). This measures what fewer tokens cost in agreement: on ``--prompts`` real texts of exactly
``--n`` tokens (consecutive passages of annotated LAMBADA, ``shared/data/reagent/data/annotated_lambada.json``, joined
with blank lines; ``--data-root`` or ``HEAT_DATA_DIR`` (as for the evaluation) points at ``shared/data``), the
K = 16 factors are computed once and their first K gradients give the K-token scores (the tokens are sorted by
probability, so these are the
factors ``topk=K`` computes; the first prompt checks that against a real ``topk=K`` run). Printed per prompt and K:
ρ of the HEAT scores (M·(S + I)/2, ``HEATConfig.preset("fast")`` without a budget) with K against K = 16; then the
median, minimum and the share of prompts with ρ ≥ 0.9 per K.

    OMP_NUM_THREADS=1 HEAT_DATA_DIR=/path/to/shared/data python benchmarks/bench_fisher_budget.py --n 512 \
        --prompts 12 --ks 13 11 10
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine  # noqa: E402

THRESHOLD = 0.9


def texts(root: Path, n: int, count: int, tokenizer) -> list[list[int]]:
    """``count`` token-id lists of exactly n tokens, each from its own run of consecutive LAMBADA passages."""
    path = root / "reagent/data/annotated_lambada.json"
    rows = [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    out, k = [], 0
    while len(out) < count:
        ids: list[int] = []
        while len(ids) < n:
            if k >= len(rows):
                raise ValueError(f"Expected {count} texts of {n} tokens from {path}, got {len(out)}")
            ids += tokenizer(rows[k] + "\n\n", add_special_tokens=False)["input_ids"]
            k += 1
        out.append(ids[:n])
    return out


def first_k_scores(k: int, full, ex, m, config):
    """(n,) HEAT scores from the first k of the factors ``full`` (tokens sorted by probability: the factors
    ``topk=k`` computes), with the gate m and ``config``'s S and I estimators."""
    from heat_module.heat.combine import Components, combine
    from heat_module.heat.fisher import FisherFactors
    from heat_module.result import Cost

    f = FisherFactors(full.u[:k], full.probs[:k], full.token_ids[:k])
    s = config.curvature.from_factors(ex, f).values.to(m.dtype)
    i = config.information.from_factors(ex, f).values.to(m.dtype)
    return combine(Components(m, s, i, None, Cost()), config)


def main() -> None:
    default_root = os.environ.get("HEAT_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared/data"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--prompts", type=int, default=12)
    p.add_argument("--ks", type=int, nargs="+", default=[13, 11, 10])
    p.add_argument("--data-root", default=default_root, help="the folder holding reagent/ (or $HEAT_DATA_DIR)")
    args = p.parse_args()

    import torch

    import heat_module as hm
    from heat_module.heat.fisher import fisher_factors
    from heat_module.heat.m_gate import GateM
    from heat_module.heat.part import Example
    from heat_module.lm.capture import slice_captures
    from heat_module.lm.forward import embed
    from heat_module.metrics.functional.spearman import spearman_rho

    print(f"# {machine()}")
    model, tokenizer = hm.load_model("smollm2")
    config = hm.HEATConfig.preset("fast", curvature="fisher", information="fisher")  # K = 16, no budget
    s_part, i_part = config.curvature, config.information
    rhos: dict[int, list[float]] = {k: [] for k in args.ks}
    with hm.HEAT(model, tokenizer, config) as heat:
        for j, ids in enumerate(texts(Path(args.data_root), args.n, args.prompts, tokenizer)):
            t0 = time.perf_counter()
            ids = torch.tensor(ids)
            logits, captures = heat.forward_with_captures(ids[None], torch.ones(1, ids.numel(), dtype=torch.long))
            target = int(logits[0].argmax())
            x = embed(model, ids[None]).detach()
            ex = Example(model, x, target, slice_captures(captures, 0, 0), logits[0], None, config.backend, config.seed)
            m = GateM.from_config(config).estimate(ex).values
            full = fisher_factors(model, x, s_part.topk, s_part.mass, s_part.chunk)
            ref = first_k_scores(s_part.topk, full, ex, m, config)
            row = {"prompt": j, "n": ids.numel(), "target": tokenizer.decode([target])}
            for k in args.ks:
                rho = float(spearman_rho(first_k_scores(k, full, ex, m, config), ref))
                rhos[k].append(rho)
                row[f"rho_k{k}"] = round(rho, 4)
            if j == 0:  # the sliced factors are the factors topk=K computes
                k = min(args.ks)
                small = config.replace(curvature=s_part.replace(topk=k), information=i_part.replace(topk=k))
                with hm.HEAT(model, tokenizer, small) as other:
                    real = other.attribute(ids).scores
                sliced = first_k_scores(k, full, ex, m, config).to(real.dtype)
                row[f"max_abs_diff_sliced_vs_topk{k}"] = float((real - sliced).abs().max())
            row["seconds"] = round(time.perf_counter() - t0, 1)
            print(json.dumps(row), flush=True)
    for k in args.ks:
        values = rhos[k]
        share = sum(v >= THRESHOLD for v in values) / len(values)
        print(f"# K = {k} vs 16 at n = {args.n}: median rho {statistics.median(values):.4f}, min {min(values):.4f}, "
              f"rho >= {THRESHOLD}: {share:.0%} of {len(values)} prompts")


if __name__ == "__main__":
    main()
