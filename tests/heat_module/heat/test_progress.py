"""Progress bars of HEAT.attribute (tqdm on stderr): off prints nothing, on shows a bar, auto follows the estimate."""

import pytest

import heat_module as hm
from heat_module.heat.progress import expected_seconds
from heat_module.heat.s_exact import ExactS
from tests.conftest import make_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "the cat sat on the hat because it was warm"


@pytest.fixture(scope="module")
def model():
    return make_tiny("llama")


def test_progress_false_prints_nothing(model, tiny_tok, capsys):
    hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("exact", curvature=ExactS(probes=2), progress=False)).attribute(TEXT)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_progress_true_shows_a_bar(model, tiny_tok, capsys):
    hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("exact", curvature=ExactS(probes=2, hvp_chunk_size=2),
                                                             progress=True)).attribute(TEXT)
    err = capsys.readouterr().err
    n = len(TEXT.split())
    assert "HEAT S (HVPs)" in err and "HEAT I (masked runs)" in err and f"/{n * 2 + n}" in err


def test_auto_mode_follows_the_estimate_and_lightning_turns_it_off(model, tiny_tok, capsys):
    heat = hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("exact", curvature=ExactS(probes=2)))
    assert expected_seconds(model, 10, 2) < 1.0 and not heat.progress_enabled(10)  # tiny model: instant
    assert expected_seconds(model, 2000, 8) > expected_seconds(model, 10, 2) * 1000
    assert heat.progress_enabled(10**6)  # a long context: n·m HVPs and n masked runs
    # the Fisher surrogates cost a fixed number of passes at any n: no bar, whatever the length
    assert not hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("fast")).progress_enabled(10**6)
    assert hm.HEAT(model, tiny_tok, hm.HEATConfig.preset("fisher")).progress_enabled(10**6)  # exact I still grows
    # called without need_s / need_i it counts what the config computes: M alone is one forward, M·I has n runs
    assert not hm.HEAT(model, tiny_tok, hm.HEATConfig(ablation="transition")).progress_enabled(10**6)
    assert hm.HEAT(model, tiny_tok, hm.HEATConfig()).progress_enabled(10**6)
    assert expected_seconds(model, 10**6, 1, hvps=False) < expected_seconds(model, 10**6, 1) / 2
    heat.attribute(TEXT)
    assert capsys.readouterr().err == ""
    from heat_module.lightning.module import get_attributor

    quiet = get_attributor("heat", model, tiny_tok, hm.HEATConfig())
    assert quiet.show_progress is False and not quiet.progress_enabled(10**6)
    loud = get_attributor("heat", model, tiny_tok, hm.HEATConfig(progress=True))
    assert loud.progress_enabled(3)
