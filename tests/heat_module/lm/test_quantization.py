"""bitsandbytes-quantised models are refused before anything runs, by HEAT and by every baseline."""

from __future__ import annotations

import pytest
from torch import nn

import heat_module as hm
from heat_module.attribution.registry import build
from heat_module.lm.quantization import bitsandbytes_modules
from heat_module.testing import tiny_model


class Linear4bit(nn.Linear):
    """Stands for ``bitsandbytes.nn.Linear4bit`` (recognised by class name, so bitsandbytes need not be installed)."""


def quantised_tiny() -> nn.Module:
    model = tiny_model("llama")
    attn = model.model.layers[0].self_attn
    old = attn.o_proj
    attn.o_proj = Linear4bit(old.in_features, old.out_features, bias=False)
    return model


def test_bitsandbytes_layers_are_found():
    assert bitsandbytes_modules(tiny_model("llama")) == []
    assert bitsandbytes_modules(quantised_tiny()) == [("model.layers.0.self_attn.o_proj", "Linear4bit")]


@pytest.mark.parametrize("method", ["heat", "attnlrp", "gradient_norm", "gated"])
def test_a_bitsandbytes_model_is_refused_before_anything_runs(method, tiny_tok):
    model = quantised_tiny()
    with pytest.raises(ValueError, match=r"floating-point weights.*1 bitsandbytes-quantised.*o_proj.*Linear4bit"):
        if method == "heat":
            hm.HEAT(model, tiny_tok)
        else:
            build(method, model, tiny_tok)
    from heat_module.lm.capture import ATTN_IMPLEMENTATION

    assert model.config._attn_implementation != ATTN_IMPLEMENTATION  # nothing was installed


@pytest.mark.slow
def test_a_real_bitsandbytes_model_is_refused():
    """Runs where bitsandbytes is installed (its CPU backend installs from PyPI: a 43 MB wheel)."""
    pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig

    model, tok = hm.load_model("smollm2", quantization_config=BitsAndBytesConfig(load_in_4bit=True), memoize=False)
    with pytest.raises(ValueError, match="bitsandbytes-quantised layers"):
        hm.HEAT(model, tok)
