"""Model anatomy (hybrid layers) and the mask each attention layer really applies, read from the captured mask."""

import pytest
import torch

from heat_module.lm.anatomy import MaskBand, mask_band, model_anatomy
from heat_module.lm.capture import capture, install
from heat_module.lm.forward import embed, next_token_logits
from heat_module.testing import TINY_BAND, TINY_VOCAB, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _additive(allowed: torch.Tensor) -> torch.Tensor:
    return torch.where(allowed, 0.0, torch.finfo(torch.float32).min)[:, None]


def test_mask_band_by_hand():
    n = 6
    j, i = torch.arange(n)[:, None], torch.arange(n)[None]
    causal = i <= j
    assert mask_band(_additive(causal[None])) == MaskBand("causal")
    # window 2: query 3 sees keys 2, 3
    assert mask_band(_additive((causal & (j - i < 2))[None])) == MaskBand("window", window=2)
    # chunks of 2 after one left-padding position: real tokens 1..5, chunks {1,2}, {3,4}, {5}
    real = torch.tensor([False, True, True, True, True, True])
    chunk_id = (torch.arange(n) - 1).div(2, rounding_mode="floor")
    chunked = causal & (chunk_id[:, None] == chunk_id[None]) & real[None]
    chunked[0] = False  # the padded query row attends nothing
    assert mask_band(_additive(chunked[None])) == MaskBand("chunk", chunk=2)
    # a dilated mask is none of these
    dilated = causal & ((j - i) % 2 == 0)
    assert mask_band(_additive(dilated[None])).kind == "other"
    # a window of n or more is the causal mask at this length
    assert mask_band(_additive((causal & (j - i < n))[None])).kind == "causal"


@pytest.mark.parametrize(("arch", "kinds"), [
    ("gemma2", [("window", TINY_BAND, None), ("causal", None, None)]),
    ("gemma3_sliding", [("window", TINY_BAND, None), ("causal", None, None)]),
    ("gpt_oss", [("window", TINY_BAND, None), ("causal", None, None)]),
    ("llama4", [("chunk", None, TINY_BAND), ("causal", None, None)]),
    ("llama", [("causal", None, None), ("causal", None, None)]),
])
def test_captured_bands(arch, kinds):
    model = install(tiny_model(arch).double())
    ids = torch.randint(4, TINY_VOCAB, (2, 11), generator=torch.Generator().manual_seed(0))
    am = torch.ones_like(ids)
    am[0, :3] = 0
    with torch.no_grad(), capture() as caps:
        next_token_logits(model, embed(model, ids), am)
    assert [(c.band.kind, c.band.window, c.band.chunk) for c in caps] == kinds
    assert [c.decoder_layer for c in caps] == list(range(len(caps)))


def test_hybrid_anatomy():
    lfm2 = model_anatomy(tiny_model("lfm2"))
    assert lfm2.hybrid and lfm2.non_attention() == {0: "conv", 2: "conv"}
    assert "'conv' at decoder layers [0, 2]" in lfm2.describe()
    for arch in ("llama", "gpt_oss", "deepseek_v3", "gpt2"):
        assert not model_anatomy(tiny_model(arch)).hybrid, arch


def test_mask_with_an_additive_bias_is_not_a_band():
    """ALiBi-style masks (a per-head linear bias on the attended keys) are 'other', whatever head 0 looks like."""
    from heat_module.lm.anatomy import has_attention_bias

    n, heads = 5, 4
    j, i = torch.arange(n)[:, None], torch.arange(n)[None]
    causal = _additive((i <= j)[None])  # (1, 1, n, n)
    assert not has_attention_bias(causal) and not has_attention_bias((i <= j)[None, None])
    slopes = 2.0 ** -torch.arange(1, heads + 1, dtype=torch.float32)
    alibi = (slopes[:, None, None] * i.float()).expand(heads, n, n)[None].masked_fill(~(i <= j), causal.min())
    assert has_attention_bias(alibi) and mask_band(alibi) == MaskBand("other")
    one_head = alibi[:, 1:2]  # a single-head bias: finite non-zero entries
    assert has_attention_bias(one_head) and mask_band(one_head) == MaskBand("other")
    assert has_attention_bias(causal.expand(1, heads, n, n))  # one mask per head


def test_layers_that_read_the_cache_length_turn_prefix_sharing_off():
    """Llama 4's attention reads ``cache.get_seq_length`` (its temperature counts absolute positions); a suffix run
    of the prefix cache has no cache, so sharing is off there and on for models that do not read it."""
    from heat_module.lm.capture import can_share_prefix

    for arch, readers in (("llama4", ("Llama4TextAttention",)), ("llama", ()), ("gemma3", ())):
        model = install(tiny_model(arch))
        assert model_anatomy(model).past_length_readers == readers, arch
        ids = torch.randint(4, TINY_VOCAB, (1, 6), generator=torch.Generator().manual_seed(0))
        with torch.no_grad(), capture() as caps:
            next_token_logits(model, embed(model, ids))
        assert can_share_prefix(caps) == (not readers), arch


def test_plain_causal_masks_are_recognised_and_nothing_else():
    """Only an exactly causal mask with as many keys as queries is plain causal: not padding, a window, a bias, a
    longer key axis whose extra keys are attended, or a mask changed in place after it was classified."""
    from heat_module.lm.anatomy import is_plain_causal

    n = 6
    i = torch.arange(n)
    causal = (i[None, :] <= i[:, None])[None, None]
    add = torch.zeros(1, 1, n, n).masked_fill(~causal, torch.finfo(torch.float32).min)
    assert is_plain_causal(add, n) and is_plain_causal(causal, n)
    assert not is_plain_causal(None, n) and not is_plain_causal(add, n - 1)
    padded = add.clone()
    padded[..., :2] = torch.finfo(torch.float32).min
    window = add.masked_fill((i[:, None] - i[None, :] >= 3)[None, None], torch.finfo(torch.float32).min)
    bias = add + torch.where(causal, -0.5, 0.0)
    assert not is_plain_causal(padded, n) and not is_plain_causal(window, n) and not is_plain_causal(bias, n)
    longer = torch.cat([add, torch.zeros(1, 1, n, 2)], -1)  # extra keys everyone attends: cut off, still causal
    assert is_plain_causal(longer, n)
    assert is_plain_causal(add, n)  # classified (and kept) once ...
    add[0, 0, 0, 3] = 0.0  # ... then changed in place: classified again
    assert not is_plain_causal(add, n)


def test_a_forward_classifies_its_mask_once_not_once_per_layer(monkeypatch):
    """The O(n²) questions about a layer's mask (its band, its bias, whether it is plain causal) are answered once per
    mask object: a captured forward of a 4-layer model asks each once, as a 2-layer model does."""
    from heat_module.lm import anatomy

    asked = []
    bias = anatomy.has_attention_bias
    monkeypatch.setattr(anatomy, "has_attention_bias", lambda mask: asked.append(1) or bias(mask))
    counts = []
    for layers in (2, 4):
        model = install(tiny_model("llama", layers=layers).double())
        ids = torch.randint(4, TINY_VOCAB, (1, 9), generator=torch.Generator().manual_seed(0))
        asked.clear()
        with torch.no_grad(), capture() as caps:
            next_token_logits(model, embed(model, ids))
        assert len(caps) == layers and all(c.band == anatomy.CAUSAL for c in caps)
        counts.append(len(asked))
    assert counts[0] == counts[1] > 0


def test_mask_facts_follow_in_place_changes_and_skip_inference_tensors():
    from heat_module.lm.anatomy import mask_fact

    calls = []
    mask = torch.zeros(1, 1, 3, 3)
    assert mask_fact(mask, "q", lambda: calls.append(1) or 1) == 1
    assert mask_fact(mask, "q", lambda: calls.append(1) or 2) == 1 and len(calls) == 1  # kept
    mask.add_(1.0)
    assert mask_fact(mask, "q", lambda: calls.append(1) or 3) == 3 and len(calls) == 2  # changed in place: asked again
    with torch.inference_mode():
        frozen = torch.zeros(2)
    assert mask_fact(frozen, "q", lambda: 4) == 4 and mask_fact(frozen, "q", lambda: 5) == 5  # no version: not kept
