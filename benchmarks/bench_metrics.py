"""Soft-NC + Soft-NS on SmolLM2: batched perturbations vs one forward per perturbed copy.

Both modes run the same ``heat_module.metrics.SoftFaithfulness`` code on the same examples: ``batch_size`` rows
per forward call (batched) vs ``batch_size=1`` (one forward per mask, reference rows included). Examples are
synthetic factual-style prompts of 20–40 tokens (written below, deterministic), left padded in update batches;
attribution scores are random. Prints both times, their ratio, the forward-call counts and the largest
difference between the two modes' metric values; ``--csv`` appends one row per run.

    .venv/bin/python benchmarks/bench_metrics.py --examples 100 --num-masks 10
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heat_module.forward import make_forward_fn  # noqa: E402
from heat_module.metrics import SoftFaithfulness  # noqa: E402
from heat_module.models import load_model  # noqa: E402

SUBJECTS = ["The old lighthouse", "Marie Curie", "The river Danube", "A young engineer", "The city council",
            "The museum in Lisbon", "My grandmother", "The red telescope", "The football team", "A small bakery"]
VERBS = ["was built in", "moved to", "was founded near", "wrote a long letter about", "became famous for",
         "spent ten years studying", "was rebuilt after", "opened a new branch in", "lost the final against"]
OBJECTS = ["the northern coast of France", "the capital of Japan", "a village in the Alps", "the winter of 1921",
           "the history of chemistry", "the largest port in Europe", "a quiet street in Berlin", "the rainy season"]
ENDINGS = ["Everyone agreed that the best part of the story was", "Years later, the visitors still talked about",
           "According to the local newspaper, the main reason was", "Because of this, the people of the town chose"]


def make_prompts(count: int, tokenizer, min_tokens: int, max_tokens: int, seed: int) -> list[list[int]]:
    """``count`` token-id lists with lengths uniform in [min_tokens, max_tokens]."""
    rng = random.Random(seed)
    prompts = []
    while len(prompts) < count:
        sentences = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(4)]
        text = " ".join(sentences) + " " + rng.choice(ENDINGS)
        ids = tokenizer(text).input_ids
        length = rng.randint(min_tokens, max_tokens)
        if len(ids) >= length:
            prompts.append(ids[-length:])
    return prompts


def left_pad(batch: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    mask = torch.zeros(len(batch), n, dtype=torch.long)
    for b, row in enumerate(batch):
        ids[b, n - len(row):] = torch.tensor(row)
        mask[b, n - len(row):] = 1
    return ids, mask


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_mode(forward_fn, data, num_masks: int, batch_size: int) -> tuple[float, int, dict[str, float]]:
    calls = [0]

    def counting(inputs_embeds, attention_mask):
        calls[0] += 1
        return forward_fn(inputs_embeds, attention_mask)

    metric = SoftFaithfulness(counting, kinds=("nc", "ns"), num_masks=num_masks, batch_size=batch_size)
    start = time.perf_counter()
    for scores, x, mask in data:
        metric.update(scores, x, mask)
    elapsed = time.perf_counter() - start
    return elapsed, calls[0], {k: float(v) for k, v in metric.compute().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--num-masks", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="rows per forward call in the batched mode")
    parser.add_argument("--update-batch", type=int, default=10, help="examples per metric update")
    parser.add_argument("--min-tokens", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=str, default=None, help="append one result row to this CSV file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = load_model("smollm2")
    forward_fn = make_forward_fn(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = make_prompts(args.examples, tokenizer, args.min_tokens, args.max_tokens, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    data = []
    with torch.no_grad():
        for i in range(0, len(prompts), args.update_batch):
            ids, mask = left_pad(prompts[i : i + args.update_batch], pad_id)
            data.append((torch.rand(ids.shape, generator=gen), model.get_input_embeddings()(ids), mask))
        forward_fn(data[0][1][:1], data[0][2][:1])  # warm-up

    rows = args.examples * (2 + 2 * 2 * args.num_masks)
    print(f"model SmolLM2-135M | {args.examples} examples, {args.min_tokens}-{args.max_tokens} tokens, "
          f"num_masks={args.num_masks}, {rows} perturbed/reference rows | CPU: {cpu_name()}, "
          f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    t_batched, calls_batched, v_batched = run_mode(forward_fn, data, args.num_masks, args.batch_size)
    print(f"batched   (batch_size={args.batch_size}): {t_batched:8.1f} s, {calls_batched} forward calls")
    t_single, calls_single, v_single = run_mode(forward_fn, data, args.num_masks, 1)
    print(f"per mask  (batch_size=1):  {t_single:8.1f} s, {calls_single} forward calls")
    ratio = t_single / t_batched
    diff = max(abs(v_batched[k] - v_single[k]) for k in v_batched)
    print(f"speed-up {ratio:.2f}x | max |batched - per-mask| over metric values {diff:.2e}")
    print("values: " + ", ".join(f"{k}={v:.4f}" for k, v in v_batched.items()))
    if args.csv:
        path = Path(args.csv)
        new = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["bench", "cpu", "threads", "examples", "num_masks", "batch_size", "rows", "batched_s",
                            "per_mask_s", "speedup", "max_diff"])
            w.writerow(["soft_nc_ns", cpu_name(), torch.get_num_threads(), args.examples, args.num_masks,
                        args.batch_size, rows, f"{t_batched:.2f}", f"{t_single:.2f}", f"{ratio:.3f}", f"{diff:.2e}"])


if __name__ == "__main__":
    main()
