"""The long-context benchmark's sampled windowed mode (``--sample-windows``) on a tiny model: which windows run, how
their seconds and FE are extrapolated, and which configurations it refuses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_long_context as blc  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

N_TOKENS, WINDOW = 40, 8  # 39 context tokens: window starts 0, 4, ..., 28 and 31, nine windows


@pytest.fixture(scope="module")
def windowed(tiny_tok):
    import heat_module as hm
    from heat_module.testing import tiny_model

    torch.manual_seed(0)
    model = tiny_model("llama", seed=0)
    method = hm.HEAT(model, tiny_tok, hm.HEATConfig(window=WINDOW, progress=False))
    ids = torch.randint(3, model.config.vocab_size, (N_TOKENS,), generator=torch.Generator().manual_seed(1))
    yield method, model, ids
    method.close()


@pytest.fixture
def counted_windows(monkeypatch):
    """The number of ``HEAT.components`` calls (one per window in HEAT-WIN) made while the test runs."""
    from heat_module.heat.estimator import HEAT

    calls = []
    original = HEAT.components

    def components(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HEAT, "components", components)
    return calls


def test_sample_windows_of_all_windows_equals_the_whole_run(windowed, counted_windows):
    method, model, ids = windowed
    _, _, sampled, reported, result = blc.attribute_measured(method, model, ids)
    windows = len(result.extra["windows"])
    assert sampled is None and windows == 9 and len(counted_windows) == windows
    counted_windows.clear()
    _, cpu, sampled, sampled_reported, no_result = blc.attribute_measured(method, model, ids, sample_windows=windows)
    assert sampled == f"{windows} of {windows} windows" and no_result is None and cpu > 0
    assert len(counted_windows) == windows
    assert sampled_reported == pytest.approx(result.cost.forward_equivalents, rel=1e-12)


def test_sample_windows_stops_after_c_windows_and_scales_by_n_over_c(windowed, counted_windows):
    from heat_module.heat.estimator import HEAT

    method, model, ids = windowed
    whole = blc.attribute_measured(method, model, ids)[3]
    counted_windows.clear()
    patched = HEAT.components
    _, _, sampled, reported, _ = blc.attribute_measured(method, model, ids, sample_windows=2)
    assert sampled == "2 of 9 windows" and len(counted_windows) == 2
    assert reported == pytest.approx(whole, rel=1e-12)  # every window reports the same FE
    assert HEAT.components is patched  # the stop is undone after the run


def test_sampled_window_totals_extrapolate_setup_plus_windows_times_n_over_c(windowed):
    import heat_module as hm
    from heat_module.heat.cost import forward_fe

    model = windowed[1]
    config = hm.HEATConfig(window=WINDOW)
    # setup until wall 10 s / CPU 5 s, then two windows of 2 s wall / 1 s CPU, each reporting 3 FE over 9 tokens
    marks = [(10.0, 5.0), (12.0, 6.0, 3.0, 9), (14.0, 7.0, 3.0, 9)]
    wall, cpu, sampled, reported = blc.sampled_window_totals(model, config, N_TOKENS, marks, 0.0, 0.0)
    assert sampled == "2 of 9 windows"
    assert wall == pytest.approx(10.0 + 4.0 * 9 / 2)
    assert cpu == pytest.approx(5.0 + 2.0 * 9 / 2)
    assert reported == pytest.approx(1.0 + 9 * 3.0 * forward_fe(model, 9, N_TOKENS))


@pytest.mark.parametrize("name", ["default", "mi", "fast", "fast-k16", "attnlrp", "attnlrp-materialized"])
def test_sample_windows_is_refused_for_configurations_without_windows(name):
    with pytest.raises(ValueError, match="Expected --sample-windows only with"):
        blc.case(name, 512, sample_windows=2)  # refused before the model loads
    blc.check_sampling("windowed", sample_windows=2)
    with pytest.raises(ValueError, match="Expected --sample-chunks only with"):
        blc.check_sampling("windowed", sample_chunks=2)


def test_sample_windows_is_refused_when_the_context_fits_one_window(tiny_tok):
    import heat_module as hm
    from heat_module.testing import tiny_model

    model = tiny_model("llama", seed=0)
    with hm.HEAT(model, tiny_tok, hm.HEATConfig(window=WINDOW, progress=False)) as method:
        with pytest.raises(ValueError, match="window shorter than n = 8"):
            blc.attribute_measured(method, model, torch.arange(3, 3 + WINDOW), sample_windows=1)
