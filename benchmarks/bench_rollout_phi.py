"""Benchmark of ``heat_kernels.rollout_phi``: CSV rows, then the ratios measured in this run.

CPU: the pure-torch reference (materialises the (B, H, n, n) attention) vs the C++ op, on SmolLM2-135M shapes
(30 layers, 9 query / 3 key-value heads, d_h 64, batch 1, fp32), n = 256, 512, 1024, 2048; plus the memory of a
plain ``scaled_dot_product_attention`` forward of one layer on the same q, k, v (``is_causal=True``,
``enable_gqa=True``) as the yardstick for the op's peak extra memory. GPU (when CUDA is available): reference vs
Triton vs the CUDA op, fp32 and bf16, with GB/s and TFLOP/s.

Method (stated in the output too):
- time: median wall time of R calls after one warm-up call, for each --threads setting (torch.set_num_threads). One
  layer for every n; the 30-layer loop (30 distinct random q, k; 2 runs, no extra warm-up) for n <= --loop-max-n
  (the reference is slow beyond). The machine may be shared: single-thread figures are the least noisy.
- CPU peak extra memory: in a fresh subprocess per case (all cores), with glibc's mmap threshold fixed at 64 KiB
  (``MALLOC_MMAP_THRESHOLD_``) so that every buffer >= 64 KiB is freshly mapped and unmapped when freed (no reuse of
  pages already resident). The kernel's peak-RSS counter is reset (``echo 5 > /proc/self/clear_refs``), the call
  runs once, and VmHWM − VmRSS(before) is read from /proc/self/status: every page the call touched (tensors,
  BLAS/OpenMP scratch), resolution ~0.1 MiB. "first call": after a warm-up on tiny inputs, so one-time per-thread
  library buffers (BLAS packing, malloc arenas) are included; "steady": after a warm-up call of the same size, what
  each further call (e.g. each of the 30 layers) adds. The targets are judged on "steady".
- GPU peak extra memory: torch.cuda.max_memory_allocated() − memory_allocated() before the call.
- GPU FLOPs: 2·B·H·n²·d_h per call (two causal QKᵀ passes), the same count for every backend; bytes: q, k, rho read
  and Φ written once (a lower bound on traffic).
- Masks (``--window W`` and/or ``--softcap C``): extra one-layer rows per backend with a sliding window
  (Gemma 2/3, Mistral), soft-capping (Gemma 2) and both, in the last CSV column ``mask`` (blank: causal), and the
  ratios time(causal) / time(masked) of each kernel: a window skips the tiles outside the band, so for n ≫ W the
  kernels should get faster while the reference (which materialises n × n) does not.

Usage: python benchmarks/bench_rollout_phi.py [--n 256 512 1024 2048] [--threads 1 2] [--layers 30] [--window 128]
       [--softcap 50]
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

from _common import (  # noqa: E402
    csv_row,
    kernel_bench_main,
    peak_extra_cuda_mib,
    peak_first_and_steady,
    subprocess_peak_mib,
    time_call,
)

import heat_kernels  # noqa: E402
from heat_kernels import extension  # noqa: E402

B, H, HKV, D_HEAD, LAYERS = 1, 9, 3, 64, 30  # SmolLM2-135M
CSV_HEADER = (
    "bench,device,backend,dtype,B,H,H_kv,n,d_h,layers,threads,time_ms,"
    "peak_extra_MiB_steady,peak_extra_MiB_first_call,GB_per_s,TFLOP_per_s,mask"
)


# ---------------------------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------------------------


def make_inputs(n: int, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, n, D_HEAD, generator=g).to(device, dtype)
    k = torch.randn(B, HKV, n, D_HEAD, generator=g).to(device, dtype)
    v = torch.randn(B, HKV, n, D_HEAD, generator=g).to(device, dtype)
    rho = torch.rand(B, n, generator=g).to(device)
    return q, k, v, rho


def make_call(backend: str, q, k, v, rho, **mask_kw) -> Callable[[], torch.Tensor]:
    if backend == "sdpa":
        return lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    return lambda: heat_kernels.rollout_phi(q, k, rho, backend=backend, **mask_kw)


def mask_variants(window: int | None, softcap: float | None) -> dict[str, dict]:
    """``{label: rollout_phi keyword arguments}`` of the masked rows asked for on the command line."""
    out = {}
    if window is not None:
        out[f"window={window}"] = dict(window=window)
    if softcap is not None:
        out[f"softcap={softcap:g}"] = dict(softcap=softcap)
    if window is not None and softcap is not None:
        out[f"window={window}+softcap={softcap:g}"] = dict(window=window, softcap=softcap)
    return out


def run_masked(device: str, dtypes: list, ns: list[int], variants: dict[str, dict], backends: list[str],
               rows: list[str], ratios: list[str]) -> None:
    """One-layer rows of every backend with each mask variant, and time(causal) / time(masked) per backend."""
    cuda = device == "cuda"
    for dtype, dname in dtypes:
        for n in ns:
            q, k, v, rho = make_inputs(n, dtype, device)
            causal = {b: time_call(make_call(b, q, k, v, rho), cuda=cuda) for b in backends}
            for label, kw in variants.items():
                for backend in backends:
                    t = time_call(make_call(backend, q, k, v, rho, **kw), cuda=cuda)
                    name = "reference" if backend == "torch" else backend
                    rows.append(csv_row("rollout_phi", device, name, dname, B, H, HKV, n, D_HEAD, 1,
                                        torch.get_num_threads() if not cuda else None, t * 1e3, None, None, None,
                                        None, label))  # fmt: skip
                    ratios.append(csv_row(f"{device}_{dname}_{name}_causal_over_{label}", n, None, causal[backend] / t,
                                          ""))  # fmt: skip


def mem_case(case: dict) -> None:
    """Child process of the CPU memory measurement: print the peak extra memory of one call."""
    q, k, v, rho = make_inputs(case["n"])
    tiny = make_inputs(32, seed=1)
    call, tiny_call = make_call(case["backend"], q, k, v, rho), make_call(case["backend"], *tiny)
    print(json.dumps(peak_first_and_steady(call, tiny_call)))


def run_cpu(ns: list[int], threads: list[int], layers: int, loop_max_n: int, rows: list[str], ratios: list[str]):
    backends = ["torch", "cpp"] if extension.available() else ["torch"]
    if not extension.available():
        print("# heat_kernels._C is not built: only the reference runs", file=sys.stderr)
    default_threads = torch.get_num_threads()
    for n in ns:
        stacks = [make_inputs(n, seed=s) for s in range(layers if n <= loop_max_n else 1)]
        mem = {b: subprocess_peak_mib(__file__, {"n": n, "backend": b}) for b in [*backends, "sdpa"]}
        for th in threads:
            torch.set_num_threads(th)
            t1, tl = {}, {}
            for backend in [*backends, "sdpa"]:
                name = "reference" if backend == "torch" else backend
                t1[name] = time_call(make_call(backend, *stacks[0]))
                m = mem[backend]
                rows.append(csv_row("rollout_phi", "cpu", name, "fp32", B, H, HKV, n, D_HEAD, 1, th, t1[name] * 1e3,
                                    m["steady"], m["first_call"], None, None))  # fmt: skip
                if n <= loop_max_n and backend != "sdpa":
                    calls = [make_call(backend, *s) for s in stacks]
                    tl[name] = time_call(lambda calls=calls: [c() for c in calls], max_reps=2, warmup=False)
                    rows.append(csv_row("rollout_phi", "cpu", name, "fp32", B, H, HKV, n, D_HEAD, layers, th,
                                        tl[name] * 1e3))  # fmt: skip
            if "cpp" in t1:
                target = ">=2 at n=1024"
                speed = t1["reference"] / t1["cpp"]
                ratios.append(csv_row("cpu_speedup_cpp_vs_reference_1layer", n, th, speed, target))
                if "cpp" in tl:
                    speed = tl["reference"] / tl["cpp"]
                    ratios.append(csv_row(f"cpu_speedup_cpp_vs_reference_{layers}layers", n, th, speed, target))
        torch.set_num_threads(default_threads)
        for kind in ("steady", "first_call"):
            target = "<=1.2 at n=2048" if kind == "steady" else ""
            if "cpp" in mem:
                value = mem["cpp"][kind] / mem["sdpa"][kind]
                ratios.append(csv_row(f"cpu_peak_mem_cpp_over_sdpa_{kind}", n, default_threads, value, target))
            value = mem["torch"][kind] / mem["sdpa"][kind]
            ratios.append(csv_row(f"cpu_peak_mem_reference_over_sdpa_{kind}", n, default_threads, value, ""))


def run_gpu(ns: list[int], rows: list[str], ratios: list[str]) -> None:
    backends = ["torch", "triton"] + (["cuda"] if extension.has_cuda() else [])
    for dtype, dname in [(torch.float32, "fp32"), (torch.bfloat16, "bf16")]:
        for n in ns:
            q, k, v, rho = make_inputs(n, dtype, "cuda")
            flops = 2 * B * H * n * n * D_HEAD
            nbytes = (q.numel() + k.numel()) * q.element_size() + rho.numel() * 4 + B * H * n * 4
            times = {}
            for backend in [*backends, "sdpa"]:
                call = make_call(backend, q, k, v, rho)
                t = time_call(call, cuda=True, max_reps=50)
                mem = peak_extra_cuda_mib(call)
                name = "reference" if backend == "torch" else backend
                times[name] = t
                gbs, tfl = (nbytes / t / 1e9, flops / t / 1e12) if backend != "sdpa" else (None, None)
                rows.append(csv_row("rollout_phi", "cuda", name, dname, B, H, HKV, n, D_HEAD, 1, None, t * 1e3,
                                    mem, None, gbs, tfl))  # fmt: skip
            for name in ("triton", "cuda"):
                if name in times:
                    speed = times["reference"] / times[name]
                    ratios.append(csv_row(f"gpu_{dname}_speedup_{name}_vs_reference", n, None, speed, ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--gpu-n", type=int, nargs="+", default=[256, 1024, 2048, 4096, 8192])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--layers", type=int, default=LAYERS)
    parser.add_argument("--loop-max-n", type=int, default=1024, help="largest n timed over the full layer loop")
    parser.add_argument("--window", type=int, default=None, help="also time a sliding window of this size")
    parser.add_argument("--softcap", type=float, default=None, help="also time logit soft-capping at this value")

    def cpu(a, rows, ratios):
        run_cpu(a.n, a.threads, a.layers, a.loop_max_n, rows, ratios)
        variants = mask_variants(a.window, a.softcap)
        if variants:
            backends = ["torch", "cpp"] if extension.available() else ["torch"]
            run_masked("cpu", [(torch.float32, "fp32")], a.n, variants, backends, rows, ratios)

    def gpu(a, rows, ratios):
        run_gpu(a.gpu_n, rows, ratios)
        variants = mask_variants(a.window, a.softcap)
        if variants:
            backends = ["torch", "triton"] + (["cuda"] if extension.has_cuda() else [])
            dtypes = [(torch.float32, "fp32"), (torch.bfloat16, "bf16")]
            run_masked("cuda", dtypes, a.gpu_n, variants, backends, rows, ratios)

    kernel_bench_main(parser, CSV_HEADER, mem_case, cpu, gpu)


if __name__ == "__main__":
    main()
