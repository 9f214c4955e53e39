"""Results as a pandas DataFrame: one row per (result, context token), long format (pandas is optional)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PANDAS_MISSING = (
    "Expected pandas to be installed for to_dataframe()/results_to_dataframe(), got ImportError: "
    "`pip install pandas` (or `pip install 'heat-attribution[notebook]'`)"
)

COLUMNS = ("example", "position", "token", "token_id", "score", "transition", "curvature", "information",
           "first_order", "target", "target_id", "method")


def results_to_dataframe(results: Sequence[Any]):
    """A ``pandas.DataFrame`` with columns :data:`COLUMNS` (components missing from a result are NaN).

    Args:
        results: :class:`heat_module.result.AttributionResult` objects; ``example`` is the index in this list.

    Example:
        >>> import pytest
        >>> _ = pytest.importorskip("pandas")  # optional: pip install pandas
        >>> from heat_module import HEAT
        >>> from heat_module.interop import results_to_dataframe
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> heat = HEAT(tiny_model("llama"), tiny_tokenizer())
        >>> frame = results_to_dataframe([heat.attribute("the cat sat"), heat.attribute("the dog")])
        >>> len(frame)  # one row per token
        5
    """
    try:
        import pandas as pd  # optional dependency
    except ImportError as err:
        raise ImportError(PANDAS_MISSING) from err
    rows = []
    for k, r in enumerate(results):
        comps = {name: None if getattr(r, name) is None else getattr(r, name).float().tolist()
                 for name in ("transition", "curvature", "information", "first_order")}
        ids = r.token_ids.tolist()
        scores = r.scores.float().tolist()
        for i, tok in enumerate(r.tokens):
            row = {"example": k, "position": i, "token": tok, "token_id": int(ids[i]), "score": scores[i]}
            row.update({name: float("nan") if v is None else v[i] for name, v in comps.items()})
            row.update({"target": r.target, "target_id": int(r.target_id), "method": r.method})
            rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


GENERATION_COLUMNS = ("step", "target", "target_id", "probability", "rank", "entropy", "column", "token",
                      "token_id", "prompt", "special", "score", "method")


def generation_to_dataframe(result: Any):
    """A ``pandas.DataFrame`` of a :class:`heat_module.generation_result.GenerationResult` with columns
    :data:`GENERATION_COLUMNS`: one row per step t and column inside its prefix (the causal triangle left out).

    Example:
        >>> import pytest
        >>> from heat_module.attribution.registry import build
        >>> from heat_module.interop import generation_to_dataframe
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> _ = pytest.importorskip("pandas")  # optional: pip install pandas
        >>> occlusion = build("occlusion", tiny_model("llama"), tiny_tokenizer())  # any method, HEAT alike
        >>> frame = generation_to_dataframe(occlusion.attribute_generation("the cat sat", max_new_tokens=2))
        >>> len(frame)  # one row per (generated token, column it may see): 2 steps over 3 + 4 columns
        7
    """
    try:
        import pandas as pd  # optional dependency
    except ImportError as err:
        raise ImportError(PANDAS_MISSING) from err
    targets = result.generated_tokens
    ids = result.column_ids().tolist()
    steps = {k: v.tolist() for k, v in result.step_scores.items()}
    rows = []
    for t in range(result.T):
        values = result.matrix[t].tolist()
        for c, tok in enumerate(result.tokens):
            if values[c] != values[c]:  # NaN: beyond the prefix of step t
                continue
            rows.append({"step": t, "target": targets[t], "target_id": int(result.generated_ids[t]),
                         **{k: steps[k][t] if k in steps else float("nan") for k in ("probability", "rank", "entropy")},
                         "column": c, "token": tok, "token_id": int(ids[c]), "prompt": c < result.n_prompt,
                         "special": bool(result.special[c]), "score": values[c], "method": result.method})
    return pd.DataFrame(rows, columns=list(GENERATION_COLUMNS))
