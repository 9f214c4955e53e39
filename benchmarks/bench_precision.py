"""Half precision against fp32: SmolLM2-135M in bf16 and fp16 vs the same model in fp32.

For each prompt the fp32 model's greedy next token is the target of every run (so all dtypes explain the same
prediction), and each method's scores from the bf16 / fp16 model are compared with the fp32 model's:

- Spearman ρ of the scores over the context;
- top-5 overlap (|top-5 ∩ top-5_fp32| / 5);
- max relative error max_i |s_i − s_i^fp32| / max_i |s_i^fp32|;
- the dtype of the returned scores (fp32 for every model dtype).

Methods: HEAT's default (``HEATConfig()``; M·I when the results were recorded), ``"fast"`` (Fisher S and I) and
AttnLRP. SmolLM2 comes from a GGUF file that transformers dequantises on load, then cast to the dtype
(``load_model("smollm2", dtype=...)``).

Usage:
    python benchmarks/bench_precision.py                 # 10 prompts, prints a Markdown table
    python benchmarks/bench_precision.py --prompts 2     # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine  # noqa: E402

PROMPTS = [
    "The capital of France is",
    "She poured the milk into the bowl and handed it to the",
    "Maya packed her umbrella because the radio said it would",
    "The doctor told the patient that the results of the test were",
    "After the long winter, the farmers finally planted their",
    "He opened the door, looked at the empty room and",
    "The train to Berlin leaves from platform",
    "My grandmother always bakes an apple pie when we",
    "The cat chased the mouse under the",
    "Water boils at one hundred degrees",
]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def methods():
    import heat_module as hm

    return {"default": ("heat", hm.HEATConfig()), "fast": ("heat", hm.HEATConfig.preset("fast")),
            "attnlrp": ("attnlrp", {})}


def attribute(model, tok, method: str, config, text: str, target: int):
    import heat_module as hm
    from heat_module.attribution.registry import build

    if method == "heat":
        with hm.HEAT(model, tok, config) as heat:
            return heat.attribute(text, target)
    return build(method, model, tok, **config).attribute(text, target)


def compare(got: torch.Tensor, ref: torch.Tensor) -> dict:
    from heat_module.metrics.functional.spearman import spearman_rho

    k = min(5, ref.numel())
    top = set(got.topk(k).indices.tolist()) & set(ref.topk(k).indices.tolist())
    return {"rho": float(spearman_rho(got.double(), ref.double())), "top5": len(top) / k,
            "rel": float((got.double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-30))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many of the 10 prompts")
    parser.add_argument("--model", default="smollm2")
    args = parser.parse_args(argv)
    import heat_module as hm

    prompts = PROMPTS[: args.prompts]
    ref_model, tok = hm.load_model(args.model)
    targets = []
    for text in prompts:
        ids = tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            targets.append(int(ref_model(ids).logits[0, -1].argmax()))
    refs = {name: [attribute(ref_model, tok, m, c, t, y).scores for t, y in zip(prompts, targets)]
            for name, (m, c) in methods().items()}
    rows = []
    for label, dtype in DTYPES.items():
        model, _ = hm.load_model(args.model, dtype=dtype, memoize=False)
        for name, (method, config) in methods().items():
            start = time.perf_counter()
            stats, dtypes = [], set()
            for text, target, ref in zip(prompts, targets, refs[name]):
                scores = attribute(model, tok, method, config, text, target).scores
                dtypes.add(str(scores.dtype).replace("torch.", ""))
                stats.append(compare(scores, ref))
            seconds = (time.perf_counter() - start) / len(prompts)
            rows.append((label, name, statistics.mean(s["rho"] for s in stats), min(s["rho"] for s in stats),
                         statistics.mean(s["top5"] for s in stats), statistics.mean(s["rel"] for s in stats),
                         max(s["rel"] for s in stats), "/".join(sorted(dtypes)), seconds))
            print(f"{label} {name}: done", file=sys.stderr, flush=True)
        del model
    lengths = [len(tok(t).input_ids) for t in prompts]
    print(f"SmolLM2-135M, {len(prompts)} prompts of {min(lengths)}–{max(lengths)} tokens, targets = the fp32 model's "
          f"greedy next token; machine: {machine()}\n")
    print("| model dtype | method | Spearman ρ mean (min) | top-5 overlap | max rel. error mean (max) | scores dtype "
          "| s / example |")
    print("|---|---|---|---|---|---|---|")
    for label, name, rho, rho_min, top5, rel, rel_max, dt, sec in rows:
        print(f"| {label} | {name} | {rho:.3f} ({rho_min:.3f}) | {top5:.2f} | {rel:.3f} ({rel_max:.3f}) | {dt} "
              f"| {sec:.1f} |")


if __name__ == "__main__":
    main()
