"""Benchmark of ``heat_kernels.block_norm``: CSV rows, then the ratios measured in this run.

CPU: the pure-torch reference (forms the (m, n, d) product) vs the C++ op on the ``fisher`` curvature shapes of
SmolLM2-135M: hidden size d = 576, K = 32 top tokens, m = 1 (default) and 10 probes (the authors' code),
n = 256, 1024, 2048 tokens, fp32. GPU (when CUDA is available): reference vs Triton vs the CUDA op, fp32 and bf16,
with GB/s and TFLOP/s.

Method: the same as ``bench_rollout_phi.py`` (the helpers of ``_common.py``): median wall time after a warm-up per
--threads
setting; CPU peak extra memory = peak RSS added by one call in a fresh subprocess (glibc mmap threshold fixed at
64 KiB, /proc/self/clear_refs reset; "first call" after a tiny warm-up, "steady" after a same-size call); GPU memory
= max_memory_allocated delta. FLOPs: 4·m·n·K·d per call (projections and outputs); bytes: w, r read once, s written.

Usage: python benchmarks/bench_block_norm.py [--n 256 1024 2048] [--probes 1 10] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import _common as common  # noqa: E402
from _common import csv_row  # noqa: E402

import heat_kernels  # noqa: E402
from heat_kernels import extension  # noqa: E402

K, D = 32, 576  # fisher top-K, SmolLM2-135M hidden size
CSV_HEADER = (
    "bench,device,backend,dtype,n,K,d,m,threads,time_ms,peak_extra_MiB_steady,peak_extra_MiB_first_call,"
    "GB_per_s,TFLOP_per_s"
)


def make_inputs(n: int, m: int, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, K, D, generator=g).to(device, dtype)
    coef = torch.softmax(torch.randn(K, generator=g), 0).to(device)
    r = (torch.randint(0, 2, (m, n, D), generator=g) * 2 - 1).to(device, dtype)
    return w, coef, r


def make_call(backend: str, w, coef, r) -> Callable[[], torch.Tensor]:
    return lambda: heat_kernels.block_norm(w, coef, r, backend=backend)


def mem_case(case: dict) -> None:
    """Child process of the CPU memory measurement: print the peak extra memory of one call."""
    call = make_call(case["backend"], *make_inputs(case["n"], case["m"]))
    tiny = make_call(case["backend"], *make_inputs(8, case["m"], seed=1))
    print(json.dumps(common.peak_first_and_steady(call, tiny)))


def run_cpu(ns: list[int], probes: list[int], threads: list[int], rows: list[str], ratios: list[str]) -> None:
    backends = ["torch", "cpp"] if extension.available() else ["torch"]
    default_threads = torch.get_num_threads()
    for m in probes:
        for n in ns:
            inputs = make_inputs(n, m)
            mem = {b: common.subprocess_peak_mib(__file__, {"n": n, "m": m, "backend": b}) for b in backends}
            for th in threads:
                torch.set_num_threads(th)
                t = {}
                for backend in backends:
                    name = "reference" if backend == "torch" else backend
                    t[name] = common.time_call(make_call(backend, *inputs))
                    rows.append(csv_row("block_norm", "cpu", name, "fp32", n, K, D, m, th, t[name] * 1e3,
                                        mem[backend]["steady"], mem[backend]["first_call"]))  # fmt: skip
                if "cpp" in t:
                    ratios.append(csv_row(f"cpu_m{m}_speedup_cpp_vs_reference", n, th, t["reference"] / t["cpp"], ""))
            torch.set_num_threads(default_threads)
            if "cpp" in mem and mem["torch"]["steady"] > 0:
                value = mem["cpp"]["steady"] / mem["torch"]["steady"]
                ratios.append(csv_row(f"cpu_m{m}_peak_mem_cpp_over_reference_steady", n, default_threads, value, ""))


def run_gpu(ns: list[int], probes: list[int], rows: list[str], ratios: list[str]) -> None:
    backends = ["torch", "triton"] + (["cuda"] if extension.has_cuda() else [])
    for dtype, dname in [(torch.float32, "fp32"), (torch.bfloat16, "bf16")]:
        for m in probes:
            for n in ns:
                w, coef, r = make_inputs(n, m, dtype, "cuda")
                flops = 4 * m * n * K * D
                nbytes = (w.numel() + r.numel()) * w.element_size() + n * 4
                times = {}
                for backend in backends:
                    call = make_call(backend, w, coef, r)
                    name = "reference" if backend == "torch" else backend
                    times[name] = common.time_call(call, cuda=True, max_reps=50)
                    mem = common.peak_extra_cuda_mib(call)
                    gbs, tfl = nbytes / times[name] / 1e9, flops / times[name] / 1e12
                    rows.append(csv_row("block_norm", "cuda", name, dname, n, K, D, m, None, times[name] * 1e3,
                                        mem, None, gbs, tfl))  # fmt: skip
                for name in ("triton", "cuda"):
                    if name in times:
                        speed = times["reference"] / times[name]
                        ratios.append(csv_row(f"gpu_{dname}_m{m}_speedup_{name}_vs_reference", n, None, speed, ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--gpu-n", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--probes", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    common.kernel_bench_main(
        parser,
        CSV_HEADER,
        mem_case,
        lambda a, rows, ratios: run_cpu(a.n, a.probes, a.threads, rows, ratios),
        lambda a, rows, ratios: run_gpu(a.gpu_n, a.probes, rows, ratios),
    )


if __name__ == "__main__":
    main()
