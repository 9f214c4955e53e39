"""The gate's torch path in blocks of query rows (``transition.blocked_phi``) against the model's own eager
attention weights (``output_attentions``): learned sinks (GPT-OSS), a mask the kernels do not cover, and the torch
backend on causal / window / chunked layers with padding — for block sizes that divide n and ones that do not."""

from __future__ import annotations

import pytest
import torch

from heat_kernels import rollout_phi
from heat_module.heat import transition
from heat_module.heat.transition import layer_phi, transition_from_captures, value_output_norms
from heat_module.lm.capture import attention_scores, attention_softmax, capture, install
from heat_module.lm.forward import position_ids_from_mask
from heat_module.testing import TINY_VOCAB, tiny_model

N = 11
BLOCKS = (1, 2, 4, 5, 11, 64)  # 2, 4, 5 do not divide n = 11; 64 > n is one block


def dilated_mask(n: int) -> torch.Tensor:
    """(1, 1, n, n) additive fp64 mask: query j sees keys i ≤ j at even distance (neither causal, window nor chunk)."""
    j, i = torch.arange(n)[:, None], torch.arange(n)[None]
    allowed = (i <= j) & ((j - i) % 2 == 0)
    return torch.zeros(1, 1, n, n, dtype=torch.float64).masked_fill(~allowed, torch.finfo(torch.float64).min)


def model_attentions(case: str, weights: bool = False):
    """(model's eager attention weights per layer, our captures) of one fp64 forward of ``case``: an architecture,
    or ``"<arch>-other"``: that architecture given the dilated 4-D mask, so its own eager attention applies it;
    ``weights``: the captures record the attention probabilities."""
    arch, _, other = case.partition("-")
    model = tiny_model(arch, seed=3).double()
    ids = torch.randint(4, TINY_VOCAB, (1, N), generator=torch.Generator().manual_seed(2))
    mask = dilated_mask(N) if other == "other" else None
    model.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = model(ids, attention_mask=mask, output_attentions=True).attentions
    install(model)
    with torch.no_grad(), capture(weights=weights) as caps:
        model(ids, attention_mask=mask)
    return attentions, caps


def materialised_phi(cap, rho: torch.Tensor) -> torch.Tensor:
    """(B, H, n) ρ A with the whole (B, H, n, n) attention of the capture at once (the computation before blocks)."""
    probs = attention_softmax(attention_scores(cap.query, cap.key, cap.mask, cap.scaling, cap.softcap), cap.sinks)
    return torch.einsum("bj,bhji->bhi", rho, probs)


def captures_of(case: str):
    """The model's attention weights and our captures; ``…-recomputed``: the captures as HEAT takes them, without
    attention probabilities (sinks and soft-capping run the eager attention, but it keeps no n × n weights), so
    every block is recomputed from the captured q, k, mask and sinks; otherwise captures that record them."""
    recomputed = case.endswith("-recomputed")
    attentions, caps = model_attentions(case.removesuffix("-recomputed"), weights=not recomputed)
    assert all((c.weights is None) == recomputed for c in caps)
    return attentions, caps


#: GPT-OSS's eager softmax runs in the model's dtype (fp64 here); Llama's runs in fp32 whatever the dtype, so its
#: weights match only to fp32 precision (and the fp64 materialised computation is checked tightly instead)
CASES = ["gpt_oss", "gpt_oss-recomputed", "gpt_oss-other-recomputed", "llama-other"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("block", BLOCKS)
def test_blocked_phi_equals_rho_times_the_models_attention(case, block):
    attentions, caps = captures_of(case)
    if case.startswith("gpt_oss"):
        assert all(c.sinks is not None for c in caps)
        assert attentions[0][0, 0].sum(-1).max() < 1 - 1e-6  # the sink takes mass: rows sum to less than one
    if "other" in case:
        assert {c.band.kind for c in caps} == {"other"}
    rho = torch.rand(1, N, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    tight = case.startswith("gpt_oss")
    for cap, att in zip(caps, attentions):
        expected = torch.einsum("bj,bhji->bhi", rho, att.double())
        got = layer_phi(cap, rho, None, "auto", block)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, expected, rtol=1e-12 if tight else 1e-6, atol=1e-14 if tight else 1e-8)
        torch.testing.assert_close(got, materialised_phi(cap, rho), rtol=1e-13, atol=1e-15)


def naive_rollout(attentions, caps) -> torch.Tensor:
    """(n,) M from the model's attention weights: ρ ← 0.5·ρ + 0.5·mean_h ρ A^h, M ∝ Σ_{l,h} ρ A^{l,h} ⊙ N^{l,h}."""
    n = attentions[0].shape[-1]
    rho = torch.zeros(n, dtype=torch.float64)
    rho[-1] = 1.0
    m = torch.zeros(n, dtype=torch.float64)
    for att, cap in zip(reversed(attentions), reversed(caps)):
        phi = torch.einsum("j,hji->hi", rho, att[0].double())
        m += (phi * value_output_norms(cap)[0].double()).sum(0)
        rho = 0.5 * rho + 0.5 * phi.mean(0)
    return m / m.sum()


@pytest.mark.parametrize("case", CASES)
def test_m_in_blocks_equals_the_rollout_of_the_models_attention(case):
    attentions, caps = captures_of(case)
    expected = naive_rollout(attentions, caps)
    for block in BLOCKS:
        got = transition_from_captures(caps, sink="keep", block=block)[0]
        torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-8)  # M itself is fp32


def record_rows(monkeypatch) -> list[int]:
    """The query rows of every score block the torch path computes."""
    rows: list[int] = []
    original = transition.attention_scores

    def wrapped(query, *args, **kwargs):
        rows.append(query.shape[-2])
        return original(query, *args, **kwargs)

    monkeypatch.setattr(transition, "attention_scores", wrapped)
    return rows


@pytest.mark.parametrize("arch", ["llama", "gemma3_sliding", "llama4"])
def test_torch_backend_runs_in_blocks_and_equals_the_kernel(arch, monkeypatch):
    """The torch backend on layers the kernels cover (causal, sliding window, chunks; left padding in a batch of two)
    computes blocks of at most block // B rows, never the (B, H, n, n) attention, and equals the C++ kernel."""
    model = install(tiny_model(arch, seed=1))
    ids = torch.randint(4, TINY_VOCAB, (2, 13), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    with torch.no_grad(), capture() as caps:
        model(ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    expected = transition_from_captures(caps, mask, backend="cpp")
    rows = record_rows(monkeypatch)
    for block in (2, 6, 7, 26):
        rows.clear()
        got = transition_from_captures(caps, mask, backend="torch", block=block)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
        assert rows and max(rows) == min(13, block // 2)
    rho = torch.rand(2, 13, generator=torch.Generator().manual_seed(6)) * mask
    for cap in caps:  # Φ of every layer, not only the normalised M
        torch.testing.assert_close(layer_phi(cap, rho, mask.bool(), "torch", 3).float(),
                                   rollout_phi(cap.query, cap.key, rho, mask.bool(), cap.scaling, backend="cpp",
                                               window=cap.band.window, softcap=cap.softcap, chunk=cap.band.chunk),
                                   rtol=1e-5, atol=1e-7)


def test_a_block_below_one_row_is_refused():
    _, caps = model_attentions("llama-other")
    with pytest.raises(ValueError, match="Expected a rollout block of at least 1 query row, got 0"):
        layer_phi(caps[0], torch.ones(1, N, dtype=torch.float64), None, "auto", 0)
