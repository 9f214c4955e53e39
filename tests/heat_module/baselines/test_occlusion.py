"""Occlusion against a literal loop (one full forward per masked token); the KL variant equals HEAT's I."""

from __future__ import annotations

import pytest
import torch

from heat_module.baselines import get_method
from heat_module.heat.information import information_naive, kl_divergence
from heat_module.lm.forward import mask_vector


def literal_occlusion(model, ids: torch.Tensor, measure: str, replacement: str):
    x = model.get_input_embeddings()(ids[None])
    vec = mask_vector(model, replacement)
    with torch.no_grad():
        logp = torch.log_softmax(model(inputs_embeds=x).logits[0, -1], -1)
        y = int(logp.argmax())
        out = []
        for i in range(ids.numel()):
            xm = x.clone()
            xm[0, i] = vec
            logq = torch.log_softmax(model(inputs_embeds=xm).logits[0, -1], -1)
            if measure == "prob":
                out.append(float(logp[y].exp() - logq[y].exp()))
            elif measure == "logprob":
                out.append(float(logp[y] - logq[y]))
            else:
                out.append(float(kl_divergence(logp, logq)))
    return torch.tensor(out)


@pytest.mark.parametrize("measure,replacement", [("prob", "zero"), ("logprob", "mean"), ("kl", "zero")])
def test_matches_literal_loop(model, batch, measure, replacement):
    ids = batch[2][2]
    res = get_method("occlusion")(model, measure=measure, replacement=replacement, batch_size=4).attribute(ids)
    torch.testing.assert_close(res.scores, literal_occlusion(model, ids, measure, replacement), atol=1e-6, rtol=1e-4)


def test_kl_variant_equals_heat_information(model, batch):
    ids = batch[2][0]
    x = model.get_input_embeddings()(ids[None]).detach()
    res = get_method("occlusion")(model, measure="kl").attribute(ids)
    torch.testing.assert_close(res.scores, information_naive(model, x), atol=1e-6, rtol=1e-4)


def test_batched_equals_unbatched_with_left_padding(model, batch, check_batched):
    check_batched(get_method("occlusion")(model, batch_size=5), batch, atol=1e-6)
