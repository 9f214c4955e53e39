"""Gradient norm and input × gradient against plain autograd on one example, batched = unbatched."""

from __future__ import annotations

import pytest
import torch

from heat_module.baselines import get_method


@pytest.mark.parametrize("norm", [1, 2])
def test_gradient_norm_matches_autograd(model, batch, logprob_and_grad, norm):
    ids = batch[2][0]
    g, grad, _, y = logprob_and_grad(model, ids)
    res = get_method("gradient_norm")(model, norm=norm).attribute(ids)
    assert res.target_id == y and res.extra["logprob"] == pytest.approx(g, abs=1e-5)
    torch.testing.assert_close(res.scores, grad.norm(p=norm, dim=-1), atol=1e-5, rtol=1e-4)
    assert res.method == "gradient_norm" and res.config == {"norm": norm}


@pytest.mark.parametrize("absolute", [False, True])
def test_input_x_gradient_matches_autograd(model, batch, logprob_and_grad, absolute):
    ids = batch[2][2]
    target = 17
    _, grad, x, _ = logprob_and_grad(model, ids, target)
    expected = (x * grad).sum(-1)
    res = get_method("input_x_gradient")(model, absolute=absolute).attribute(ids, target=target)
    torch.testing.assert_close(res.scores, expected.abs() if absolute else expected, atol=1e-6, rtol=1e-4)


def test_batched_equals_unbatched_with_left_padding(model, batch, check_batched):
    check_batched(get_method("gradient_norm")(model), batch)
    check_batched(get_method("input_x_gradient")(model), batch)


def test_options_are_validated(model):
    with pytest.raises(ValueError, match="norm"):
        get_method("gradient_norm")(model, norm=3)
    with pytest.raises(TypeError, match="unexpected options"):
        get_method("input_x_gradient")(model, bogus=1)
