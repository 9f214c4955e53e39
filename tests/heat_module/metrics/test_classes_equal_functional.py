"""Every registered metric: the class accumulated over two updates equals its functional form on the whole batch,
parametrised over the metric registry (so a new metric is covered by declaring it)."""

from __future__ import annotations

import inspect

import pytest
import torch

from heat_module.metrics.registry import INPUTS, available_metrics, default_metrics, metric_entry, metric_title
from heat_module.testing import grad_x_input_fn

#: small settings for the options a metric accepts (each passed only to the metrics whose constructor takes it)
SMALL = {"num_masks": 2, "seed": 1, "num_samples": 3, "delta": 0.05, "steps": 4}


def data(model, batch, scores):
    """What each kind of :data:`INPUTS` updates with, for the shared left-padded batch of 3."""
    x, mask, targets, _ = batch
    g = torch.Generator().manual_seed(2)
    real = mask.bool()
    gold = (torch.rand(mask.shape, generator=g) > 0.6) & real
    gold[:, -1] = True
    distractor = (torch.rand(mask.shape, generator=g) > 0.5) & real & ~gold
    rephrased = scores + 0.5 * torch.randn(mask.shape, generator=g)
    return {
        "model": (scores, x, mask, targets),
        "gold": (scores, gold, mask),
        "gold_distractor": (scores, gold, distractor, mask),
        "attribute_fn": (x, mask, targets),
        "pairs": (scores, rephrased, real),
    }


@pytest.mark.parametrize("name", available_metrics())
def test_class_accumulated_over_updates_equals_the_functional_form(model, forward_fn, batch, scores, name):
    entry = metric_entry(name)
    assert entry.inputs in INPUTS
    options = {k: v for k, v in SMALL.items() if k in entry.option_names()}
    attribute_fn = grad_x_input_fn(model)
    args = data(model, batch, scores)[entry.inputs]
    metric = entry.build(forward_fn=forward_fn, attribute_fn=attribute_fn, **options)
    metric.update(*(a[:1] for a in args))
    metric.update(*(a[1:] for a in args))
    got = metric.compute()
    params = inspect.signature(entry.functional).parameters
    extra = {"model": (forward_fn,), "attribute_fn": (attribute_fn,)}.get(entry.inputs, ())
    if entry.inputs == "model" and "target_ids" not in params:  # Soft-NC/NS compare whole distributions
        args = args[:3]
    want = entry.functional(*args, *extra, **{**entry.options, **options})
    got = got if isinstance(got, dict) else {name: got}
    want = want if isinstance(want, dict) else {name: want}
    assert set(got) == set(want) and set(entry.keys) <= set(got)
    for key in want:  # Soft-NS can be 0 on every example here, so its log ratio is NaN on both sides
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-5, equal_nan=True, msg=key)
        assert metric_title(key) != key or key not in entry.keys
    assert not entry.cls.full_state_update


def test_defaults_and_titles():
    assert set(default_metrics()) == {"soft_nc", "soft_ns", "aopc", "abpc", "dsa", "f1"}
    assert metric_title("soft_nc_rank") == "Soft-NC (ranks)" and metric_title("span_f1") == "Span-F1"
    assert metric_entry("f1_alignment") is metric_entry("F1") and metric_entry("spearman").inputs == "pairs"
    with pytest.raises(KeyError, match="Expected a metric name"):
        metric_entry("nope")
