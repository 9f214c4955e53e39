"""Attention for first derivatives: SDPA's causal kernel against the blockwise form, one SmolLM2-sized layer.

HEAT's first-order attention (``heat_module.lm.blockwise_attention.first_order_attention``: the Fisher gradients, the
gradient of HEAT+FO) runs SDPA's ``is_causal`` kernel where the mask is plain causal and the blockwise form
otherwise. This times both on one attention layer with SmolLM2's shapes (9 query heads, 3 kv heads, head size 64,
random fp32 operands, a causal mask): the forward, and one batched backward of ``--cotangents`` cotangents
(``is_grads_batched``, as the Fisher factors take it), in CPU seconds, and checks that both give the same gradients.

    OMP_NUM_THREADS=1 python benchmarks/bench_first_order_attention.py --lengths 1024 2048 4096 8192
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine  # noqa: E402

HEADS, KV_HEADS, HEAD_DIM, SCALING = 9, 3, 64, 0.125


def timed(fn):
    c0 = time.process_time()
    out = fn()
    return out, time.process_time() - c0


def case(n: int, cotangents: int) -> dict:
    import torch

    from heat_module.lm.blockwise_attention import blockwise_attention, causal_attention

    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, HEADS, n, HEAD_DIM, generator=g).requires_grad_(True)
    k = torch.randn(1, KV_HEADS, n, HEAD_DIM, generator=g).requires_grad_(True)
    v = torch.randn(1, KV_HEADS, n, HEAD_DIM, generator=g).requires_grad_(True)
    i = torch.arange(n)
    mask = torch.zeros(n, n).masked_fill(i[None, :] > i[:, None], torch.finfo(torch.float32).min)[None, None]
    cot = torch.randn(cotangents, 1, n, HEADS, HEAD_DIM, generator=g)
    row = {"n": n, "cotangents": cotangents}
    grads = {}
    for name, fn in (("blockwise", lambda: blockwise_attention(q, k, v, mask, SCALING)),
                     ("causal_kernel", lambda: causal_attention(q, k, v, SCALING))):
        out, forward = timed(fn)
        grads[name], backward = timed(lambda o=out: torch.autograd.grad(o, (q, k, v), cot, is_grads_batched=True))
        row[f"{name}_forward_s"] = round(forward, 3)
        row[f"{name}_backward_per_cotangent_s"] = round(backward / cotangents, 3)
    row["max_gradient_difference"] = max(float((a - b).abs().max())
                                         for a, b in zip(grads["blockwise"], grads["causal_kernel"]))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--cotangents", type=int, default=10)
    args = parser.parse_args()
    print(f"# {machine()}")
    for n in args.lengths:
        print(json.dumps(case(n, args.cotangents)), flush=True)


if __name__ == "__main__":
    main()
