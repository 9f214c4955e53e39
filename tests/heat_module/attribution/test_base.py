"""The shared batch validation of :class:`heat_module.attribution.base.Attributor` (HEAT and every baseline)."""

from __future__ import annotations

import pytest
import torch

from heat_module.attribution.registry import build
from heat_module.config import HEATConfig

HOLES = torch.tensor([[1, 0, 1, 1, 1], [0, 0, 1, 1, 1]])  # row 0 has a hole: its scores would land on wrong tokens


@pytest.mark.parametrize("name", ["heat", "gradient_norm", "occlusion", "attention_rollout"])
def test_mask_with_holes_is_refused(model, name):
    method = build(name, model, None, HEATConfig()) if name == "heat" else build(name, model, None)
    ids = torch.randint(4, 60, HOLES.shape, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"Expected a left-padding attention_mask .* got row 0 = \[1, 0, 1, 1, 1\]"):
        method.attribute_batch(ids, HOLES)
    with pytest.raises(ValueError, match=r"Expected attention_mask values 0 \(padding\) and 1"):
        method.attribute_batch(ids, torch.full(ids.shape, 2))
    ok = method.attribute_batch(ids, torch.tensor([[0, 1, 1, 1, 1], [0, 0, 1, 1, 1]]))  # left padding still works
    assert [len(r) for r in ok] == [4, 3]
    if name == "heat":
        method.close()
