"""``HEATConfig(normalize=...)``: S and I put on one scale before β and γ weigh them, checked by hand."""

from __future__ import annotations

import pytest
import torch

from heat_module.config import HEATConfig
from heat_module.heat.combine import Components, combine, normalize_component
from heat_module.heat.s_exact import ExactS

M = torch.tensor([0.5, 0.25, 0.25])
S = torch.tensor([4.0, 1.0, 0.0])
INFO = torch.tensor([0.01, 0.03, 0.02])


def test_normalize_component_by_hand():
    assert torch.equal(normalize_component(S, "none"), S)
    assert torch.allclose(normalize_component(S, "sum"), torch.tensor([0.8, 0.2, 0.0]))
    assert torch.allclose(normalize_component(INFO, "sum"), torch.tensor([1 / 6, 1 / 2, 1 / 3]))
    assert torch.allclose(normalize_component(S, "rank"), torch.tensor([1.0, 2 / 3, 1 / 3]))
    assert torch.allclose(normalize_component(INFO, "rank"), torch.tensor([1 / 3, 1.0, 2 / 3]))
    assert torch.allclose(normalize_component(torch.tensor([2.0, 2.0, 5.0]), "rank"), torch.tensor([0.5, 0.5, 1.0]))
    assert torch.equal(normalize_component(torch.zeros(3), "sum"), torch.zeros(3))
    # a constant component has no order: zeros, not the constant mean rank (n + 1) / 2n
    assert torch.equal(normalize_component(torch.full((3,), 0.7), "rank"), torch.zeros(3))
    assert torch.equal(normalize_component(torch.zeros(3), "rank"), torch.zeros(3))
    with pytest.raises(ValueError, match="normalize"):
        normalize_component(S, "max")


@pytest.mark.parametrize("mode, want", [
    # eq. 5 as written: M·(0.5 S + 0.5 I)
    ("none", [0.5 * (2.0 + 0.005), 0.25 * (0.5 + 0.015), 0.25 * (0.0 + 0.01)]),
    # M·(0.5·S/ΣS + 0.5·I/ΣI) = M·(0.5·(0.8, 0.2, 0) + 0.5·(1/6, 1/2, 1/3))
    ("sum", [0.5 * (0.4 + 1 / 12), 0.25 * (0.1 + 0.25), 0.25 * (0.0 + 1 / 6)]),
    # M·(0.5·(1, 2/3, 1/3) + 0.5·(1/3, 1, 2/3))
    ("rank", [0.5 * (0.5 + 1 / 6), 0.25 * (1 / 3 + 0.5), 0.25 * (1 / 6 + 1 / 3)]),
])
def test_combine_weighs_the_normalised_components(mode, want):
    got = combine(Components(M, S, INFO, None), HEATConfig(beta=0.5, gamma=0.5, normalize=mode))
    assert torch.allclose(got, torch.tensor(want), atol=1e-7)


def test_beta_trades_s_against_i_only_when_normalised():
    """With S ≫ I every β > 0 ranks as S under eq. 5; normalised, a small β lets I decide."""
    parts = Components(torch.full((3,), 1 / 3), S * 1000, INFO, None)
    for beta in (0.1, 0.5):
        raw = combine(parts, HEATConfig(beta=beta, gamma=1 - beta, normalize="none"))
        assert torch.equal(torch.argsort(raw), torch.argsort(S))
    small = combine(parts, HEATConfig(beta=0.1, gamma=0.9, normalize="sum"))
    assert int(small.argmax()) == int(INFO.argmax())


def test_config_choices_and_presets():
    assert HEATConfig().normalize == "sum"  # the choice study's pick
    assert HEATConfig.preset("mi").normalize == HEATConfig.preset("exact").normalize == "none"
    with pytest.raises(ValueError, match="Expected normalize to be one of"):
        HEATConfig(normalize="l2")
    paper = HEATConfig.preset("paper")
    assert (paper.curvature, paper.beta, paper.gamma, paper.normalize, paper.sink) == (ExactS(probes=10), 0.5, 0.5,
                                                                                        "none", "keep")
    assert HEATConfig.preset("default") == HEATConfig()
    assert HEATConfig.preset("paper", curvature=ExactS(probes=4)).curvature.probes == 4
    with pytest.raises(ValueError, match="Expected preset to be one of"):
        HEATConfig.preset("fastest")
    assert HEATConfig(sink="auto-median").sink == "auto-median"


@pytest.mark.parametrize("mode", ["none", "sum", "rank"])
def test_absent_component_counts_as_zero_under_every_normalize(mode):
    """A component that was not computed adds nothing, also under "rank" (whose rank of an all-zero vector is not 0)."""
    with_zero_i = combine(Components(M, S, None, None), HEATConfig(beta=0.5, gamma=0.5, normalize=mode))
    want = M * 0.5 * normalize_component(S, mode)
    assert torch.allclose(with_zero_i, want, atol=1e-7)


@pytest.mark.parametrize("mode", ["sum", "rank"])
def test_first_order_term_is_normalised_like_s_and_i(mode):
    """Under normalize the α term ‖∇g‖₁ is on the scale of S and I: its raw magnitude does not change the scores."""
    grad_norms = torch.tensor([2.0, 30.0, 7.0])
    cfg = HEATConfig(alpha=0.5, beta=0.5, gamma=0.5, normalize=mode)
    got = combine(Components(M, S, INFO, grad_norms), cfg)
    assert torch.allclose(got, combine(Components(M, S, INFO, grad_norms * 1000), cfg), atol=1e-7)
    fo, inner = normalize_component(grad_norms, mode), 0.5 * normalize_component(S, mode) + 0.5 * normalize_component(
        INFO, mode)
    want = M * (0.5 * fo + inner)  # eq. 22: the α term inside the gate
    assert torch.allclose(got, want, atol=1e-7)
