"""GPU pre-flight without a GPU: compile every GPU kernel ahead of time for sm_80 (A100) and sm_90 (H100/H200).

Run by ``make gpu-preflight``, which first downloads the pieces into ``.venv-gpu/`` (git-ignored): the CUDA build of
torch (unpacked for its headers and libraries, never imported), NVIDIA's pip ``nvcc`` / ``cudart`` / ``cccl`` and the
Triton that torch pins. Subcommands:

- ``list``: the Triton variants (kernel × constexprs × autotune config) the launchers can launch; no compiling.
- ``triton``: ``triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 80|90, 32))`` for
  each variant and target; registers and spills from the ``ptxas -v`` log of that compile, shared memory from the
  compiled kernel's metadata (what the launch requests).
- ``cuda``: ``nvcc`` compiles ``csrc/*.cu`` for sm_80 and sm_90 with ``-Xptxas -v`` against the CUDA torch's
  headers, ``g++`` compiles ``csrc/*.cpp``, and both are linked into ``_C.so`` against the CUDA torch's libraries
  (the library is linked, never loaded: there is no GPU driver here).
- ``report``: the Markdown table from the CSVs of the two steps.

A variant fails on a compile error, a spill (ptxas "spill stores" or "spill loads" > 0), shared memory above the
target's per-block limit, or registers × threads above the 64 K registers of an SM. Limits (CUDA C++ Programming
Guide, "Technical Specifications per Compute Capability"): maximum shared memory per thread block 163 KiB on compute
capability 8.0 and 227 KiB on 9.0 (the opt-in dynamic maximum; 48 KiB without opting in, which Triton and our CUDA
launchers do), 64 K 32-bit registers per SM and per block, 255 per thread.

Which variants: the launchers themselves decide. ``launches()`` drives ``_rollout_phi_triton`` and
``_block_norm_triton`` on CPU tensors with the Triton kernels replaced by recorders (``extension.triton_interpret``
forced off, as on a GPU) over every input class that changes a constexpr: dtype fp32/bf16/fp16, key padding mask on
/off, sliding window on/off, chunks on/off, soft-capping on/off, head dims 16..256 (BLOCK_D 16..256) for
``rollout_phi``; the probe count m and factor count K (BLOCK_M, BLOCK_K and the d-chunk BLOCK_D the launcher derives
from them and d) for ``block_norm``. Each recorded launch of an autotuned kernel is crossed with every
``triton.Config`` its autotuner keeps for it (after the autotuner's ``early_config_prune``).
``tests/benchmarks/test_gpu_preflight.py`` checks that every ``@triton.jit`` kernel in ``heat_kernels`` is launched
here, that every boolean constexpr takes both values and that every autotune config is crossed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import importlib
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]

# Compute capability -> maximum shared memory per block in bytes (opt-in dynamic maximum) and the arch name.
TARGETS = {80: 163 * 1024, 90: 227 * 1024}
REGS_PER_SM = 65536
ROLLOUT_HEAD_DIMS = (16, 32, 64, 128, 256)  # BLOCK_D = next power of two ≥ max(16, d_head): 192 → 256, 80 → 128
BLOCK_NORM_PROBES = (1, 2, 4, 8, 16)  # m: HEAT's ``probes`` (default 1)
BLOCK_NORM_FACTORS = (1, 2, 4, 8, 16, 32, 64)  # K: ``FisherS.topk`` / ``LowRankS.rank`` (default 16)
BLOCK_NORM_DIMS = (64, 4096)  # d: the hidden size; 4096 lets the d-chunk reach its register budget
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One compile: a kernel with its Triton signature (arg name -> type or "constexpr"), constexprs and options."""

    kernel: str
    signature: tuple[tuple[str, str], ...]
    constexprs: tuple[tuple[str, object], ...]
    num_warps: int
    num_stages: int

    def config(self) -> str:
        c = dict(self.constexprs)
        dt = dict(self.signature)[self.pointer_arg()].lstrip("*")
        shown = [f"{k}={v}" for k, v in c.items() if k.startswith("BLOCK_")]
        flags = [k.removeprefix("HAS_").lower() for k, v in c.items() if k.startswith("HAS_") and v is True]
        on = f" +{'+'.join(flags)}" if flags else ""
        return f"{dt} {' '.join(shown)} w{self.num_warps} s{self.num_stages}{on}"

    def pointer_arg(self) -> str:
        return next(name for name, ty in self.signature if ty.startswith("*"))

    def key(self) -> str:
        return json.dumps([self.kernel, self.signature, self.constexprs, self.num_warps, self.num_stages])


# ----------------------------------------------------------------------------------------------------------------
# Enumeration: drive the launchers with recording kernels
# ----------------------------------------------------------------------------------------------------------------

_TRITON_TYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "uint8": "u8", "int32": "i32",
                 "int64": "i64", "float64": "fp64", "bool": "i1"}  # fmt: skip


class _Recorder:
    """Stands in for a JITFunction or Autotuner: ``kernel[grid](*args, **constexprs)`` appends a launch."""

    def __init__(self, name: str, sink: list, tuned: bool):
        self.name, self.sink, self.tuned = name, sink, tuned

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.sink.append((self.name, self.tuned, args, kwargs))

        return launch


def _arg_type(value) -> str:
    import torch

    if isinstance(value, torch.Tensor):
        return "*" + _TRITON_TYPES[str(value.dtype).removeprefix("torch.")]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"Expected a tensor, int or float kernel argument, got {type(value).__name__}")


def _modules():
    return importlib.import_module("heat_kernels.rollout_phi"), importlib.import_module("heat_kernels.block_norm")


def real_kernels() -> dict[str, object]:
    """name -> (JITFunction, its Autotuner or None) of the GPU (non-interpreter) definitions."""
    rp, bn = _modules()
    lse, colsum, lse_tuned, colsum_tuned = rp._triton_kernels(False)
    block = bn._triton_kernel(False)
    return {lse.__name__: (lse, lse_tuned), colsum.__name__: (colsum, colsum_tuned), block.__name__: (block, None)}


def tuned_configs(tuner, named_args: dict, constexprs: dict) -> list:
    """The autotune configs the tuner would benchmark for these arguments (after its ``early_config_prune``)."""
    prune = getattr(tuner, "early_config_prune", None)
    return list(prune(tuner.configs, named_args, **constexprs)) if prune else list(tuner.configs)


def launches() -> list[tuple[str, bool, tuple, dict]]:
    """Every launch the Triton launchers make over the input classes of the module docstring (CPU tensors)."""
    import torch

    rp, bn = _modules()
    kernels = real_kernels()
    sink: list = []
    names = list(kernels)
    rec = {n: _Recorder(n, sink, kernels[n][1] is not None) for n in names}
    lse_name, colsum_name, block_name = names
    patches = [
        mock.patch.object(rp.extension, "triton_interpret", lambda: False),
        mock.patch.object(rp, "_triton_kernels", lambda interpret: (rec[lse_name], rec[colsum_name], rec[lse_name],
                                                                    rec[colsum_name])),
        mock.patch.object(bn, "_triton_kernel", lambda interpret: rec[block_name]),
    ]  # fmt: skip
    n = 8
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        for dtype, mask, window, chunk, softcap, d in itertools.product(
            DTYPES, (False, True), (None, 2), (None, 4), (None, 30.0), ROLLOUT_HEAD_DIMS
        ):
            dt = getattr(torch, dtype)
            q, k = torch.zeros(1, 2, n, d, dtype=dt), torch.zeros(1, 1, n, d, dtype=dt)
            kpm = torch.ones(1, n, dtype=torch.bool) if mask else None
            rp._rollout_phi_triton(q, k, torch.ones(1, n), kpm, d**-0.5, window, softcap, chunk)
        for dtype, m, K, d in itertools.product(DTYPES, BLOCK_NORM_PROBES, BLOCK_NORM_FACTORS, BLOCK_NORM_DIMS):
            dt = getattr(torch, dtype)
            bn._block_norm_triton(torch.zeros(2, K, d, dtype=dt), torch.ones(K), torch.zeros(m, 2, d, dtype=dt))
    return sink


def variants() -> list[Variant]:
    """The distinct compiles: each launch with its arg types and constexprs, × the autotune configs if tuned."""
    kernels = real_kernels()
    seen: dict[str, Variant] = {}
    for name, tuned, args, kwargs in launches():
        fn, tuner = kernels[name]
        meta = dict(kwargs)
        warps, stages = meta.pop("num_warps", 4), meta.pop("num_stages", 3)
        tuned_keys = {k for c in tuner.configs for k in c.kwargs} if tuned else set()
        plain = [a for a in fn.arg_names if a not in meta and a not in tuned_keys]
        types = dict(zip(plain, (_arg_type(a) for a in args), strict=True))
        for cfg in tuned_configs(tuner, dict(zip(plain, args)), meta) if tuned else [None]:
            const = dict(meta, **(cfg.kwargs if cfg else {}))
            w, s = (cfg.num_warps, cfg.num_stages) if cfg else (warps, stages)
            missing = [a for a in fn.arg_names if a not in types and a not in const]
            if missing:
                raise ValueError(f"Expected a value for every argument of {name}, got none for {missing}")
            sig = tuple((a, types.get(a, "constexpr")) for a in fn.arg_names)
            v = Variant(name, sig, tuple((a, const[a]) for a in fn.arg_names if a in const), w, s)
            seen.setdefault(v.key(), v)
    return list(seen.values())


# ----------------------------------------------------------------------------------------------------------------
# Triton: compile each variant for each target
# ----------------------------------------------------------------------------------------------------------------

_PTXAS = {
    "regs": re.compile(r"Used (\d+) registers"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
    "static_smem": re.compile(r"(\d+) bytes smem"),
}


def parse_ptxas(log: str) -> dict[str, int]:
    """Numbers of one kernel's ``ptxas -v`` log (0 where a line is absent, -1 registers when none is found)."""
    out = {k: sum(int(x) for x in p.findall(log)) for k, p in _PTXAS.items() if k != "regs"}
    regs = _PTXAS["regs"].findall(log)
    out["regs"] = max((int(r) for r in regs), default=-1)
    return out


def check(row: dict, limit: int, threads: int | None) -> str:
    """"ok" or why the row fails: a spill, shared memory over the limit, registers × threads over an SM's file
    (``threads`` None: not checked, as for CUDA kernels whose ``__launch_bounds__`` makes ptxas cap the registers)."""
    problems = [] if row["regs"] >= 0 else ["no ptxas report"]
    if row["spill_stores"] or row["spill_loads"]:
        problems.append(f"spills {row['spill_stores']}+{row['spill_loads']} B")
    if row["smem"] > limit:
        problems.append(f"smem {row['smem']} B > {limit} B")
    if threads and row["regs"] > 0 and row["regs"] * threads > REGS_PER_SM:
        problems.append(f"{row['regs']} regs x {threads} threads > {REGS_PER_SM}")
    return "; ".join(problems) or "ok"


def compile_triton(v: Variant, cap: int) -> dict:
    """Compile one variant for sm_<cap>; the row of the table (status "error: ..." on a compile error)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = real_kernels()[v.kernel][0]
    row = dict(kernel=v.kernel, config=v.config(), target=f"sm_{cap}", regs=-1, spill_stores=0, spill_loads=0,
               stack=0, static_smem=0, smem=0, seconds=0.0, status="", key=v.key())  # fmt: skip
    t0 = time.perf_counter()
    buf = io.StringIO()
    os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"  # the ptxas -v log of each compile, printed
    os.environ["TRITON_ALWAYS_COMPILE"] = "1"  # also when Triton's cache holds the kernel (no ptxas run then)
    try:
        with contextlib.redirect_stdout(buf):
            k = triton.compile(ASTSource(fn, dict(v.signature), dict(v.constexprs)),
                               target=GPUTarget("cuda", cap, 32), options=dict(num_warps=v.num_warps,
                                                                                num_stages=v.num_stages))  # fmt: skip
    except Exception as e:  # noqa: BLE001 - every compile error is a row of the report
        row.update(status="error: " + " ".join(str(e).split())[:300], seconds=round(time.perf_counter() - t0, 1))
        return row
    log = buf.getvalue()
    if "registers" not in log:  # no log printed (a Triton without these knobs): run ptxas on the PTX
        log = _ptxas_log(k.asm["ptx"], cap)
    row.update(parse_ptxas(log))
    row["smem"] = int(k.metadata.shared) + row["static_smem"]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    row["status"] = check(row, TARGETS[cap], 32 * v.num_warps)
    return row


def _ptxas_log(ptx: str, cap: int) -> str:
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    ptxas = get_ptxas().path if get_ptxas.__code__.co_argcount == 0 else get_ptxas(cap).path
    arch = sm_arch_from_capability(cap)  # sm_90a for 90, as Triton compiles
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"heat-preflight-{os.getpid()}.ptx"
    tmp.write_text(ptx)
    try:
        res = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", str(tmp), "-o", "/dev/null"], capture_output=True,
                             text=True)  # fmt: skip
        return res.stderr + res.stdout
    finally:
        tmp.unlink(missing_ok=True)


FIELDS = ["kernel", "config", "target", "regs", "spill_stores", "spill_loads", "stack", "static_smem", "smem",
          "seconds", "status", "key"]  # fmt: skip


def run_triton(out: Path, targets: list[int], only: str | None, limit: int | None) -> int:
    """Compile the variants (resuming from ``out/triton.csv``); the number of failed rows."""
    import triton

    rows_path = out / "triton.csv"
    done: dict[tuple[str, str], dict] = {}
    current = {v.key() for v in variants()}
    if rows_path.exists():  # resume: keep the rows of variants the launchers still launch
        with rows_path.open() as f:
            done = {(r["key"], r["target"]): r for r in csv.DictReader(f) if r["key"] in current}
        with rows_path.open("w", newline="") as f:
            w = csv.DictWriter(f, FIELDS)
            w.writeheader()
            w.writerows(done.values())
    todo = [(v, cap) for v in variants() for cap in targets if only is None or re.search(only, v.key())]
    todo = todo[:limit] if limit else todo
    print(f"triton {triton.__version__}: {len(todo)} compiles ({len(done)} rows already in {rows_path})", flush=True)
    new = not rows_path.exists()
    with rows_path.open("a", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        for i, (v, cap) in enumerate(todo):
            if (v.key(), f"sm_{cap}") in done:
                continue
            row = compile_triton(v, cap)
            w.writerow(row)
            f.flush()
            done[(v.key(), f"sm_{cap}")] = row
            print(f"[{i + 1}/{len(todo)}] {row['kernel']} sm_{cap} {row['config']}: regs {row['regs']} spills "
                  f"{row['spill_stores']}/{row['spill_loads']} smem {row['smem']} ({row['seconds']} s) {row['status']}",
                  flush=True)  # fmt: skip
    wanted = {(v.key(), f"sm_{cap}") for v, cap in todo}
    return sum(1 for k, r in done.items() if k in wanted and r["status"] != "ok")


# ----------------------------------------------------------------------------------------------------------------
# CUDA extension: nvcc for sm_80 / sm_90, g++, link
# ----------------------------------------------------------------------------------------------------------------


def run_cuda(out: Path, env_dir: Path) -> int:
    """Compile and link the extension; per-kernel rows in ``out/cuda.csv``; the number of failed rows."""
    import sysconfig

    cuda = env_dir / "site" / "nvidia" / "cu13"
    torch_dir = env_dir / "torch-cuda" / "torch"
    nvcc = cuda / "bin" / "nvcc"
    for p in (nvcc, torch_dir / "include", torch_dir / "lib"):
        if not p.exists():
            raise FileNotFoundError(f"Expected {p} (run `make gpu-preflight`, which installs it), got nothing there")
    build = out / "cuda-build"
    build.mkdir(parents=True, exist_ok=True)
    incs = [f"-I{torch_dir / 'include'}", f"-I{torch_dir / 'include' / 'torch' / 'csrc' / 'api' / 'include'}",
            f"-I{cuda / 'include'}", f"-I{cuda / 'include' / 'cccl'}", f"-I{sysconfig.get_paths()['include']}"]
    defs = ["-DHEAT_WITH_CUDA=1", "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C",
            "-D_GLIBCXX_USE_CXX11_ABI=1"]
    # torch.utils.cpp_extension's COMMON_NVCC_FLAGS and the flags of setup.py's CUDAExtension
    nvcc_flags = ["-O3", "-std=c++17", "--use_fast_math", "-D__CUDA_NO_HALF_OPERATORS__",
                  "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
                  "-D__CUDA_NO_HALF2_OPERATORS__", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC",
                  "-Xptxas", "-v"] + [f"-gencode=arch=compute_{c},code=sm_{c}" for c in TARGETS]  # fmt: skip
    env = dict(os.environ, PATH=f"{cuda / 'bin'}:{os.environ['PATH']}")
    rows, objs, failed = [], [], 0
    for src in sorted((ROOT / "csrc").glob("*.cu")):
        obj = build / (src.stem + ".o")
        t0 = time.perf_counter()
        res = subprocess.run([str(nvcc), "-c", str(src), "-o", str(obj), *incs, *defs, *nvcc_flags], env=env,
                             capture_output=True, text=True)  # fmt: skip
        log = res.stderr + res.stdout
        (build / (src.stem + ".ptxas.log")).write_text(log)
        secs = round(time.perf_counter() - t0, 1)
        if res.returncode:
            rows.append(dict(kernel=src.name, config="nvcc", target="sm_80+sm_90", regs=-1, spill_stores=0,
                             spill_loads=0, stack=0, static_smem=0, smem=0, seconds=secs,
                             status="error: " + " ".join(log.split())[-300:], key=""))  # fmt: skip
            failed += 1
            continue
        objs.append(obj)
        for fn, cap, flog in _split_ptxas(log):
            row = dict(kernel=_demangle(fn), config=src.name, target=f"sm_{cap}", seconds=secs, key="")
            row.update(parse_ptxas(flog))
            row["smem"] = row["static_smem"]  # + the dynamic shared memory of the launch: see the report
            row["status"] = check(row, TARGETS[cap], None)
            failed += row["status"] != "ok"
            rows.append(row)
    for src in sorted((ROOT / "csrc").glob("*.cpp")):
        obj = build / (src.stem + ".o")
        res = subprocess.run(["g++", "-c", str(src), "-o", str(obj), "-fPIC", "-O3", "-std=c++17", "-fopenmp", *incs,
                              *defs], capture_output=True, text=True)  # fmt: skip
        ok = res.returncode == 0
        rows.append(dict(kernel=src.name, config="g++", target="x86_64", regs=-1, spill_stores=0, spill_loads=0,
                         stack=0, static_smem=0, smem=0, seconds=0.0,
                         status="ok" if ok else "error: " + " ".join(res.stderr.split())[-300:], key=""))  # fmt: skip
        failed += not ok
        objs.append(obj)
    lib = build / "_C.so"
    libs = ["-lc10", "-lc10_cuda", "-ltorch", "-ltorch_cpu", "-ltorch_cuda", "-ltorch_python", "-l:libcudart.so.13"]
    res = subprocess.run(["g++", "-shared", "-o", str(lib), *map(str, objs), f"-L{torch_dir / 'lib'}",
                          f"-L{cuda / 'lib'}", *libs, "-fopenmp"], capture_output=True, text=True)  # fmt: skip
    ok = res.returncode == 0
    rows.append(dict(kernel="_C.so", config="link", target="x86_64", regs=-1, spill_stores=0, spill_loads=0, stack=0,
                     static_smem=0, smem=0, seconds=0.0,
                     status="ok" if ok else "error: " + " ".join((res.stderr or "an object failed").split())[-300:],
                     key=""))  # fmt: skip
    failed += not ok
    with (out / "cuda.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print(f"{r['kernel']} {r['target']}: regs {r['regs']} spills {r['spill_stores']}/{r['spill_loads']} "
              f"static smem {r['smem']} {r['status']}")
    return failed


def _split_ptxas(log: str):
    """(mangled kernel, compute capability, its part of the log) for each ``Compiling entry function`` block."""
    parts = re.split(r"ptxas info\s*: Compiling entry function '([^']+)' for 'sm_(\d+)'", log)
    for i in range(1, len(parts) - 1, 3):
        yield parts[i], int(parts[i + 1]), parts[i + 2]


def _demangle(name: str) -> str:
    if shutil.which("c++filt"):
        name = subprocess.run(["c++filt", name], capture_output=True, text=True).stdout.strip() or name
    name = name.removeprefix("void ").replace("heat::", "").replace("(anonymous namespace)::", "")
    return re.sub(r"\(.*\)$", "", name)


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


def report(out: Path) -> str:
    """Markdown of ``out/cuda.csv`` and ``out/triton.csv``: a summary line, the failures, one row per CUDA kernel and
    target, and the Triton rows merged over the mask/window/chunk/softcap flags (both targets in one row:
    maximum registers, spills and shared memory over the merged variants), ``block_norm`` merged per dtype."""
    tables = {}
    for step in ("cuda", "triton"):
        if (out / f"{step}.csv").exists():
            with (out / f"{step}.csv").open() as f:
                tables[step] = list(csv.DictReader(f))
    rows = [r for rs in tables.values() for r in rs]
    bad = [r for r in rows if r["status"] != "ok"]
    tri = tables.get("triton", [])
    n_var = len({r["key"] for r in tri})
    lines = [f"Pre-flight: {len(rows)} compiles ({n_var} Triton variants x {len({r['target'] for r in tri})} targets, "
             f"{len(tables.get('cuda', []))} CUDA/C++ rows), {len(bad)} failed, "
             f"{sum(1 for r in rows if int(r['spill_stores']) or int(r['spill_loads']))} with spills, "
             f"{sum(1 for r in rows if r['status'].startswith('error'))} compile errors.", ""]  # fmt: skip
    if bad:
        lines += ["Failures:", ""] + [f"- {r['kernel']} {r['config']} {r['target']}: {r['status']}" for r in bad] + [""]

    def cell(rs, field, fn=max):
        return "/".join(str(fn(int(r[field]) for r in rs if r["target"] == t)) if any(r["target"] == t for r in rs)
                        else "-" for t in ("sm_80", "sm_90"))  # fmt: skip

    if "cuda" in tables:
        lines += ["| CUDA kernel | source | regs sm_80/sm_90 | spills st+ld B | static smem B | status |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        groups: dict[tuple, list] = {}
        for r in tables["cuda"]:
            groups.setdefault((r["kernel"], r["config"]), []).append(r)
        for (kernel, src), rs in groups.items():
            spills = max(int(r["spill_stores"]) + int(r["spill_loads"]) for r in rs)
            st = "ok" if all(r["status"] == "ok" for r in rs) else "FAIL"
            lines.append(f"| {kernel} | {src} | {cell(rs, 'regs')} | {spills} | {cell(rs, 'smem')} | {st} |")
        lines.append("")
    if tri:
        groups = {}
        for r in tri:
            base = r["config"].split(" +")[0]
            if r["kernel"] == "_block_norm_kernel":
                base = base.split(" ")[0] + " (every BLOCK_M x BLOCK_K x BLOCK_D) w4 s3"
            groups.setdefault((r["kernel"], base), []).append(r)
        lines += ["| Triton kernel | dtype, tiles, warps, stages | variants per target | regs sm_80/sm_90 | "
                  "spills st+ld B | smem B sm_80/sm_90 | status |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for (kernel, base), rs in sorted(groups.items()):
            spills = max(int(r["spill_stores"]) + int(r["spill_loads"]) for r in rs)
            nbad = sum(r["status"] != "ok" for r in rs)
            per_t = max(sum(r["target"] == t for r in rs) for t in ("sm_80", "sm_90"))
            lines.append(f"| {kernel} | {base} | {per_t} | {cell(rs, 'regs')} | {spills} | {cell(rs, 'smem')} | "
                         f"{'ok' if not nbad else f'{nbad} FAIL'} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["list", "triton", "cuda", "report"])
    p.add_argument("--out", type=Path, default=ROOT / "out" / "gpu-preflight", help="CSVs, logs and the build")
    p.add_argument("--env", type=Path, default=ROOT / ".venv-gpu", help="what `make gpu-preflight` downloaded")
    p.add_argument("--targets", default="80,90", help="compute capabilities, comma-separated")
    p.add_argument("--only", default=None, help="regex on a variant's key: compile only the matching ones")
    p.add_argument("--limit", type=int, default=None, help="compile at most this many (first in order)")
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if a.step == "list":
        vs = variants()
        for v in vs:
            print(v.kernel, v.config())
        print(f"{len(vs)} variants x {len(a.targets.split(','))} targets")
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    if a.step == "report":
        print(report(a.out))
        return 0
    targets = [int(t) for t in a.targets.split(",")]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise SystemExit(f"Expected targets among {sorted(TARGETS)}, got {unknown}")
    failed = run_triton(a.out, targets, a.only, a.limit) if a.step == "triton" else run_cuda(a.out, a.env)
    print(f"{a.step}: {failed} failed row(s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
