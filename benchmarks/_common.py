"""Shared benchmark plumbing: prompts of a given length, one-case subprocesses for honest peak memory, CSV rows.

Peak memory is the peak resident set size (``ru_maxrss``) of a fresh subprocess that loads the model, runs one
warm-up and then the measured case, minus its RSS just before the measured case: each case gets its own process
so one case's allocations cannot hide another's.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable

FILLER = (
    "On the first cold morning of the year the baker opened the shop early, lit the old oven and set out the bread "
    "while the children walked past the river towards the school near the hill where the red bus always stops and "
    "the driver waves at the dog that sleeps by the gate of the green house with the broken window and the tall tree "
)


def prompt_ids(tokenizer, n: int):
    """(n,) token ids of our own filler text, repeated and cut to exactly n tokens."""
    import torch

    ids = tokenizer(FILLER * (1 + n // 40))["input_ids"][:n]
    if len(ids) < n:
        raise ValueError(f"Expected the filler to reach {n} tokens, got {len(ids)}")
    return torch.tensor(ids)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], object], warmup: bool = True) -> dict:
    """Run fn (after one warm-up call) and report seconds and peak RSS increase over the pre-call RSS."""
    if warmup:
        fn()
    before = rss_mb()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_extra_mb": max(0.0, peak_rss_mb() - before)}


def run_case(script: str, args: list[str]) -> dict:
    """Run ``script --case ...`` in a fresh interpreter and parse the JSON line it prints last."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"case {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> str:
    model = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def write_csv(path: str, rows: list[dict]) -> None:
    if not rows:
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
