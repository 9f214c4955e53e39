"""Models that accelerate dispatched across devices (``device_map=``), with CPU or disk offload.

accelerate attaches an ``AlignDevicesHook`` to each dispatched module: it moves the module's inputs to the module's
execution device and, for an offloaded module, loads its weights (from CPU memory or from ``offload_folder``) just
before its forward and puts them back on the ``meta`` device just after. HEAT reads a few weights outside the
forward (the attention output projection W_O for the value–output norms), and places its inputs itself, so it needs
two things from here: :func:`input_device` (where the token ids and embeddings go: the embedding's execution device,
not the first parameter's, which may be ``meta``) and :func:`materialized` (a module's real weights outside its
forward). Autograd, first and second order, needs nothing: the forward's saved tensors keep the loaded weights.

accelerate is imported only when a module carries its hooks, so plain models never need it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def execution_device(module: nn.Module) -> torch.device | None:
    """Where accelerate runs ``module`` (its hook's execution device), or None for a module without such a hook."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is None:
        for inner in getattr(hook, "hooks", ()):  # a SequentialHook
            device = getattr(inner, "execution_device", None) or device
    if device is None:
        return None
    return torch.device(f"cuda:{device}" if isinstance(device, int) else device)


def is_dispatched(model: nn.Module) -> bool:
    """Whether accelerate dispatched ``model`` (``from_pretrained(device_map=...)`` or ``dispatch_model``)."""
    return getattr(model, "hf_device_map", None) is not None or any(
        hasattr(m, "_hf_hook") for m in model.modules()
    )


def input_device(model: nn.Module) -> torch.device:
    """The device the token ids and input embeddings go to: the input embedding's execution device when accelerate
    dispatched it, else the device of its weight (of the first parameter for a model without input embeddings)."""
    try:
        emb = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        emb = None
    if emb is not None:
        device = execution_device(emb)
        if device is not None:
            return device
        weight = getattr(emb, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.device.type != "meta":
            return weight.device
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    raise ValueError("Expected a model with at least one parameter off the meta device, got none")


def _offloaded(module: nn.Module) -> bool:
    hook = getattr(module, "_hf_hook", None)
    return bool(getattr(hook, "offload", False)) or any(
        getattr(inner, "offload", False) for inner in getattr(hook, "hooks", ()))


def offloaded_modules(model: nn.Module) -> list[str]:
    """Names of the modules whose weights accelerate offloads (to the CPU or to disk) and loads per forward."""
    return [name for name, m in model.named_modules() if _offloaded(m)]


@contextlib.contextmanager
def materialized(module: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``module`` and its submodules hold their real weights on their execution device even when
    accelerate offloaded them (to the CPU or to disk); afterwards they are offloaded again. A module that is not
    offloaded is yielded unchanged."""
    offloaded = [m for m in module.modules() if _offloaded(m)]
    if not offloaded:
        yield module
        return
    from accelerate.utils import align_module_device  # installed whenever its hooks are attached

    with contextlib.ExitStack() as stack:
        for m in offloaded:
            stack.enter_context(align_module_device(m))
        yield module
