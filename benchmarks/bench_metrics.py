"""Soft-NC + Soft-NS on SmolLM2: batched perturbations vs one forward per perturbed copy.

Both modes run the same ``heat_module.metrics.SoftFaithfulness`` code on the same examples: ``batch_size`` rows
per forward call (batched) vs ``batch_size=1`` (one forward per mask, reference rows included). Examples are
synthetic factual-style prompts of 20–40 tokens (written below, deterministic), left padded in update batches;
attribution scores are random. Prints both times, their ratio, the forward-call counts and the largest
difference between the two modes' metric values; ``--csv`` appends one row per run.

It first measures the *batching ceiling* of the machine: the time per row of ``batch_size`` copies of one example in
one forward call vs one call per copy. No padding, no bookkeeping: the metric's speed-up can only approach it, so
it tells whether a target speed-up is reachable by batching on this device at all.

    .venv/bin/python benchmarks/bench_metrics.py --examples 100 --num-masks 10 --threads 1
    .venv/bin/python benchmarks/bench_metrics.py --examples 100 --num-masks 10 --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, sync  # noqa: E402

from heat_module.lm.forward import make_forward_fn  # noqa: E402
from heat_module.lm.loading import load_model  # noqa: E402
from heat_module.metrics import SoftFaithfulness  # noqa: E402

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


def batching_ceiling(forward_fn, x: torch.Tensor, mask: torch.Tensor, rows: int) -> tuple[float, float]:
    """Seconds per row of ``rows`` copies of one example in one forward call vs one call per row (after a warm-up).

    The best case for batching on this machine: no padding, no mask bookkeeping, one length. The speed-up of the
    metric can only approach their ratio.
    """
    xs, ms = x.expand(rows, *x.shape[1:]).contiguous(), mask.expand(rows, -1).contiguous()
    with torch.no_grad():
        forward_fn(xs, ms)
        forward_fn(x, mask)
        sync(x.device)
        t0 = time.perf_counter()
        forward_fn(xs, ms)
        sync(x.device)
        batched = (time.perf_counter() - t0) / rows
        t0 = time.perf_counter()
        for _ in range(rows):
            forward_fn(x, mask)
        sync(x.device)
        single = (time.perf_counter() - t0) / rows
    return batched, single


def run_mode(forward_fn, data, num_masks: int, batch_size: int) -> tuple[float, int, dict[str, float]]:
    calls = [0]

    def counting(inputs_embeds, attention_mask):
        calls[0] += 1
        return forward_fn(inputs_embeds, attention_mask)

    metric = SoftFaithfulness(counting, kinds=("nc", "ns"), num_masks=num_masks, batch_size=batch_size)
    start = time.perf_counter()
    for scores, x, mask in data:
        metric.update(scores, x, mask)
    sync(data[0][1].device)
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
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--model", default="smollm2",
                        help="smollm2 (default) or an HF folder (the GPU check passes a random-weight SmolLM2 shape)")
    parser.add_argument("--ceiling-rows", type=int, default=None,
                        help="rows of the batching-ceiling measurement (default: --batch-size; 0 skips it)")
    parser.add_argument("--csv", type=str, default=None, help="append one result row to this CSV file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = load_model(args.model, device=args.device)
    forward_fn = make_forward_fn(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts = make_prompts(args.examples, tokenizer, args.min_tokens, args.max_tokens, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    data = []
    with torch.no_grad():
        for i in range(0, len(prompts), args.update_batch):
            ids, mask = left_pad(prompts[i : i + args.update_batch], pad_id)
            ids, mask = ids.to(args.device), mask.to(args.device)
            data.append((torch.rand(ids.shape, generator=gen).to(args.device), model.get_input_embeddings()(ids), mask))
        forward_fn(data[0][1][:1], data[0][2][:1])  # warm-up

    rows = args.examples * (2 + 2 * 2 * args.num_masks)
    print(f"model {args.model} | {args.examples} examples, {args.min_tokens}-{args.max_tokens} tokens, "
          f"num_masks={args.num_masks}, {rows} perturbed/reference rows, device {args.device} | {machine()}")
    ceiling_rows = args.batch_size if args.ceiling_rows is None else args.ceiling_rows
    ceiling = float("nan")
    if ceiling_rows > 0:
        _, x0, m0 = data[0]
        keep = m0[0].bool()
        per_row_batched, per_row_single = batching_ceiling(forward_fn, x0[:1, keep], m0[:1, keep], ceiling_rows)
        ceiling = per_row_single / per_row_batched
        print(f"batching ceiling ({ceiling_rows} copies of one {int(keep.sum())}-token example): "
              f"{per_row_batched * 1e3:.1f} ms/row in one call vs {per_row_single * 1e3:.1f} ms/row one by one "
              f"-> at most {ceiling:.2f}x from batching alone")
    t_batched, calls_batched, v_batched = run_mode(forward_fn, data, args.num_masks, args.batch_size)
    print(f"batched   (batch_size={args.batch_size}): {t_batched:8.1f} s, {calls_batched} forward calls")
    t_single, calls_single, v_single = run_mode(forward_fn, data, args.num_masks, 1)
    print(f"per mask  (batch_size=1):  {t_single:8.1f} s, {calls_single} forward calls")
    ratio = t_single / t_batched
    diff = max(abs(v_batched[k] - v_single[k]) for k in v_batched)
    print(f"speed-up {ratio:.2f}x (target >= 3x; batching ceiling {ceiling:.2f}x) | max |batched - per-mask| "
          f"over metric values {diff:.2e}")
    print("values: " + ", ".join(f"{k}={v:.4f}" for k, v in v_batched.items()))
    if args.csv:
        path = Path(args.csv)
        new = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["bench", "machine", "device", "threads", "examples", "num_masks", "batch_size", "rows",
                            "batched_s", "per_mask_s", "speedup", "batching_ceiling", "max_diff"])
            w.writerow(["soft_nc_ns", machine(), args.device, torch.get_num_threads(), args.examples, args.num_masks,
                        args.batch_size, rows, f"{t_batched:.2f}", f"{t_single:.2f}", f"{ratio:.3f}",
                        f"{ceiling:.3f}", f"{diff:.2e}"])


if __name__ == "__main__":
    main()
