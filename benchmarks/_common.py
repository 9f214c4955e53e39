"""Shared benchmark plumbing: prompts of a given length, the machine line, timing, peak memory, CSV rows, and the
``main`` of the two kernel benchmarks.

Peak memory, model benchmarks (``run_case`` + ``timed``): the peak resident set size (``ru_maxrss``) of a fresh
subprocess that loads the model, runs one warm-up and then the measured case, minus its RSS just before the measured
case: each case gets its own process so one case's allocations cannot hide another's.

Peak memory, kernel benchmarks (``subprocess_peak_mib`` + ``peak_first_and_steady``): VmHWM − VmRSS around one call
in a fresh subprocess with glibc's mmap threshold fixed at 64 KiB and VmHWM reset through /proc/self/clear_refs
(see ``bench_rollout_phi.py``); on a GPU, ``max_memory_allocated`` − ``memory_allocated`` (``peak_extra_cuda_mib``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import statistics
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
    """The resident set size now (MiB), NaN where /proc/self/status has no VmRSS."""
    try:
        return status_kib("VmRSS") / 1024
    except KeyError:
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
    """CPU model and core count, torch version and threads, and the GPU if there is one."""
    import torch

    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}"


def sync(device: str | object = "cpu") -> None:
    """Wait for queued GPU work (a no-op on CPU), so wall-clock timings include it."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_call(
    fn: Callable[[], object], budget_s: float = 2.0, max_reps: int = 20, cuda: bool = False, warmup: bool = True
) -> float:
    """Median seconds of one call: one warm-up call, then as many calls as fit in ``budget_s`` (2 .. max_reps)."""
    device = "cuda" if cuda else "cpu"
    times = []
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    first = time.perf_counter() - t0
    if not warmup:
        times.append(first)
    reps = max(2, min(max_reps, int(budget_s / max(first, 1e-6)))) - len(times)
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def status_kib(key: str) -> int:
    """A ``/proc/self/status`` field (VmRSS, VmHWM, ...) in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_extra_rss_mib(fn: Callable[[], object], warm: Callable[[], object]) -> float:
    """Peak resident memory added by one call of ``fn`` (MiB), after ``warm()`` (see the module docstring)."""
    warm()
    before = status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    out = fn()
    peak = status_kib("VmHWM")
    del out
    return (peak - before) / 1024


def peak_extra_cuda_mib(fn: Callable[[], object]) -> float:
    """Peak GPU memory added by one call of ``fn`` (MiB), after one warm-up call."""
    import torch

    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out
    return (peak - before) / 2**20


def subprocess_peak_mib(script: str, case: dict) -> dict[str, float]:
    """Run ``script --mem-case <json>`` in a fresh interpreter with glibc's mmap threshold fixed; it prints
    {"steady": MiB, "first_call": MiB} last."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="131072")
    proc = subprocess.run(
        [sys.executable, script, "--mem-case", json.dumps(case)], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory case {case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peak_first_and_steady(fn: Callable[[], object], tiny: Callable[[], object]) -> dict[str, float]:
    """Peak extra RSS of ``fn`` after a tiny warm-up ("first_call") and after a same-size one ("steady")."""
    first = peak_extra_rss_mib(fn, tiny)
    return {"first_call": first, "steady": peak_extra_rss_mib(fn, fn)}


def csv_row(*fields) -> str:
    return ",".join("" if f is None else (f"{f:.4g}" if isinstance(f, float) else str(f)) for f in fields)


class Rows(list):
    """CSV rows, printed as they are appended (a long run shows progress)."""

    def append(self, row: str) -> None:
        print(row, flush=True)
        super().append(row)


def kernel_bench_main(
    parser: argparse.ArgumentParser,
    header: str,
    mem_case: Callable[[dict], None],
    run_cpu: Callable[[argparse.Namespace, list[str], list[str]], None],
    run_gpu: Callable[[argparse.Namespace, list[str], list[str]], None],
) -> None:
    """The ``main`` of the kernel benchmarks: parse, answer a ``--mem-case`` child, or print the CSV rows of the CPU
    (and, with CUDA, GPU) cases followed by the ratios measured in this run."""
    import torch

    parser.add_argument("--mem-case", help=argparse.SUPPRESS)
    parser.add_argument("--skip-cpu", action="store_true", help="only the GPU cases (the GPU check)")
    args = parser.parse_args()
    if args.mem_case:
        return mem_case(json.loads(args.mem_case))
    print(f"# machine: {machine()}")
    print("# time = median wall time after a warm-up; CPU memory = peak RSS added by one call (fresh subprocess, "
          "MALLOC_MMAP_THRESHOLD_=65536, /proc/self/clear_refs reset; 'first_call' after a tiny warm-up, 'steady' "
          "after a same-size call); GPU memory = max_memory_allocated delta")  # fmt: skip
    rows = Rows()
    rows.append(header)
    ratios = ["ratio,n,threads,value,target"]
    if not args.skip_cpu:
        run_cpu(args, rows, ratios)
    if torch.cuda.is_available():
        run_gpu(args, rows, ratios)
    print()
    print("\n".join(ratios))


def write_csv(path: str, rows: list[dict]) -> None:
    if not rows:
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: str, ints: tuple[str, ...] = (), strings: tuple[str, ...] = ()) -> list[dict]:
    """The rows :func:`write_csv` wrote, parsed back: ``ints`` as int, ``strings`` as written, ``True``/``False`` as
    bool, everything else as float (``""`` and ``nan`` as NaN)."""
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict = {}
            for key, value in raw.items():
                if key in ints:
                    row[key] = int(value)
                elif key in strings:
                    row[key] = value
                elif value in ("True", "False"):
                    row[key] = value == "True"
                else:
                    row[key] = float(value) if value not in ("", "nan") else float("nan")
            rows.append(row)
    return rows
