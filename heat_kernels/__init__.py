"""Custom ops of heat-attribution: ``rollout_phi`` (fused attention–value rollout) and ``block_norm``
(block-restricted HVP norm reduction). Each op lives in its own file: reference, Triton kernel, launcher,
``torch.library`` op and dispatch; the reference and the dispatching op take the same arguments, on purpose (every
kernel is tested against the reference)."""

from heat_kernels.block_norm import block_norm, block_norm_ref
from heat_kernels.rollout_phi import rollout_phi, rollout_phi_ref

__all__ = ["rollout_phi", "rollout_phi_ref", "block_norm", "block_norm_ref"]
