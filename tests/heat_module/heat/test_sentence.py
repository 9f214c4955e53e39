"""Sentence-level HEAT (eq. 23) and span-to-span scores (eq. 24)."""

import pytest
import torch

import heat_module as hm
from heat_module.sentence_level import aggregate, span_scores
from tests.conftest import make_tiny

TEXT = "the cat sat on the hat because"


@pytest.fixture(scope="module")
def heat(tiny_tok):
    return hm.HEAT(make_tiny("gpt2"), tiny_tok, hm.HEATConfig.preset("exact"))


def test_one_target_equals_token_level(heat):
    token = heat.attribute(TEXT, target=40)
    sent = heat.attribute_sentence(TEXT, targets=[40])
    assert sent.tokens == token.tokens and sent.target_id == 40 and sent.extra["targets"] == [40]
    for name in ("scores", "transition", "curvature", "information"):
        torch.testing.assert_close(getattr(sent, name), getattr(token, name))
    assert sent.cost["forward_equivalents"] == pytest.approx(token.cost["forward_equivalents"])


def test_aggregation_hand_case():
    rows = torch.tensor([[1.0, 5.0, 0.0], [3.0, 1.0, 2.0]])
    assert aggregate(rows, "mean").tolist() == [2.0, 3.0, 1.0]
    assert aggregate(rows, "max").tolist() == [3.0, 5.0, 2.0]
    assert aggregate(rows, "sum").tolist() == [4.0, 6.0, 2.0]
    with pytest.raises(ValueError, match="Expected aggregation"):
        aggregate(rows, "median")
    table = span_scores(rows, spans=[(0, 2), (1, 3)], target_spans=[(0, 1), (0, 2)], aggregation="mean")
    # target span {0}: row 0; target span {0,1}: mean = [2, 3, 1]
    assert table.tolist() == [[6.0, 5.0], [5.0, 4.0]]
    with pytest.raises(ValueError, match="Expected input spans"):
        span_scores(rows, spans=[(2, 5)])


@pytest.mark.parametrize("how", ["mean", "max", "sum"])
def test_greedy_targets_teacher_forced(heat, how):
    res = heat.attribute_sentence(TEXT, max_new_tokens=3, aggregation=how, spans=[(0, 2), (2, 7)])
    targets = res.extra["targets"]
    assert len(targets) == 3 and res.extra["aggregation"] == how
    ids = heat.encode(TEXT)
    n = ids.numel()
    context, rows = ids, []
    for y in targets:
        step = heat.attribute(context)  # greedy: the generated token is the greedy next token
        assert step.target_id == y
        rows.append(step.scores[:n])
        context = torch.cat([context, context.new_tensor([y])])
    rows = torch.stack(rows)
    # the rows are computed together over the longest prefix (the rollout M in fp32): equal up to its round-off
    close = dict(rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(torch.tensor(res.extra["per_target"]["scores"], dtype=rows.dtype), rows, **close)
    torch.testing.assert_close(res.scores, aggregate(rows, how), **close)
    expected_spans = [[float(aggregate(rows, how)[0:2].sum())], [float(aggregate(rows, how)[2:7].sum())]]
    torch.testing.assert_close(torch.tensor(res.extra["span_scores"], dtype=rows.dtype),
                               torch.tensor(expected_spans, dtype=rows.dtype), **close)
    assert len(res.tokens) == n and res.target == "".join(heat.token_strings(torch.tensor(targets)))


def test_string_targets_and_errors(heat):
    res = heat.attribute_sentence(TEXT, targets="on the hat")
    assert res.extra["target_tokens"] == ["on", "the", "hat"]
    assert len(res.extra["per_target"]["scores"]) == 3
    with pytest.raises(ValueError, match="Expected at least one target"):
        heat.attribute_sentence(TEXT, targets=[])
    with pytest.raises(ValueError, match="Expected max_new_tokens"):
        heat.attribute_sentence(TEXT, max_new_tokens=0)
