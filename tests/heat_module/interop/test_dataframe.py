"""Results as a pandas DataFrame (pandas optional: a clear ImportError without it)."""

import importlib.util
import math

import pytest
import torch

import heat_module as hm
from heat_module.interop.pandas import COLUMNS, results_to_dataframe
from heat_module.result import ResultList


def make(n, target, curvature=True):
    return hm.AttributionResult(tokens=[f"t{i}" for i in range(n)], token_ids=torch.arange(n), target=target,
                                target_id=5, scores=torch.arange(n, dtype=torch.float32),
                                curvature=torch.ones(n) if curvature else None)


@pytest.mark.skipif(importlib.util.find_spec("pandas") is not None, reason="pandas is installed")
def test_clear_error_without_pandas():
    with pytest.raises(ImportError, match="pip install pandas"):
        make(3, "x").to_dataframe()


def test_dataframe_rows_and_columns():
    pytest.importorskip("pandas")
    df = ResultList([make(3, "x"), make(2, "y", curvature=False)]).to_dataframe()
    assert list(df.columns) == list(COLUMNS) and len(df) == 5
    assert df["example"].tolist() == [0, 0, 0, 1, 1] and df["score"].tolist() == [0.0, 1.0, 2.0, 0.0, 1.0]
    assert df["target"].tolist() == ["x"] * 3 + ["y"] * 2
    assert df["curvature"].iloc[0] == 1.0 and math.isnan(df["curvature"].iloc[4])
    assert results_to_dataframe([make(1, "z")]).equals(make(1, "z").to_dataframe())
