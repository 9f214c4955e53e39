"""The position-controlled score: a method's per-example metric minus the position prior's on the same example.

Every causal LM relies on the tokens just before the prediction, so part of any faithfulness value is earned by
position alone. ``position_prior`` (the average attribution by distance from the end, learned on a held-apart split)
is the method that knows nothing but position; subtracting its value on the same example,

    Δ_e = metric(method, e) − metric(position_prior, e),

leaves what the method knows about *this* context. The differences are paired (same example, same perturbation
draws: the metrics seed their draws per example), so their mean and a bootstrap interval over examples
(``heat_module.evaluation.stats.bootstrap_ci(position_controlled(m, p).tolist(), ...)``) are the comparison to
report. Higher is better when the metric's higher is better; 0 means "no better than position".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def position_controlled(
    metric_values: torch.Tensor | Sequence[float], prior_values: torch.Tensor | Sequence[float]
) -> torch.Tensor:
    """(examples,) paired differences metric − prior (fp64).

    Args:
        metric_values: (examples,) a method's per-example metric values (e.g. ``abpc_values``).
        prior_values: (examples,) the ``position_prior`` method's values of the same metric on the same examples,
            in the same order.
    Raises:
        ValueError: when the two are not 1-d of one length, or a value is not finite (a NaN would silently drop an
            example from one side only).

    Example:
        >>> from heat_module.metrics.functional import position_controlled
        >>> position_controlled([0.5, 0.7], [0.4, 0.4])  # a method's per-example values minus the position prior's
        tensor([0.1000, 0.3000], dtype=torch.float64)
    """
    m = torch.as_tensor(metric_values, dtype=torch.float64).detach().cpu()
    p = torch.as_tensor(prior_values, dtype=torch.float64).detach().cpu()
    if m.dim() != 1 or p.dim() != 1 or m.shape != p.shape:
        raise ValueError(
            f"Expected metric_values and prior_values as two 1-d sequences of one length (paired per example), got "
            f"shapes {tuple(m.shape)} and {tuple(p.shape)}"
        )
    bad = (~torch.isfinite(m) | ~torch.isfinite(p)).nonzero().flatten()
    if len(bad):
        raise ValueError(f"Expected finite values on both sides, got non-finite ones at examples {bad.tolist()}")
    return m - p
