"""heat_module.lm.forward: the embedding and next-token logits HEAT differentiates, against the model's own forward."""

import pytest
import torch

from heat_module.lm.forward import embed, next_token_logits
from tests.conftest import make_tiny

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_next_token_logits_match_the_model_and_keep_fp64(dtype):
    model = make_tiny("llama", double=False).to(dtype)
    ids = torch.tensor([[3, 7, 1, 9, 4]])
    with torch.no_grad():
        ours = next_token_logits(model, embed(model, ids))
        theirs = model(input_ids=ids).logits[:, -1]
    # fp64 stays fp64 (the exactness tests compare at 1e-10); half precision is returned as fp32
    assert ours.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert ours.shape == (1, model.config.vocab_size)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 5e-2}[dtype]
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=0, atol=tol)
