import json

import pytest

from heat_module.cli.attribute import main as attribute_command


@pytest.mark.slow
def test_attribute_json(capsys, tmp_path):
    html = tmp_path / "out.html"
    code = attribute_command(["--model", "smollm2", "--text", "The capital of France is", "--json",
                              "--html", str(html)])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["target"].strip() == "Paris" and len(data["scores"]) == len(data["tokens"])
    assert "<html>" in html.read_text()


def test_bad_input_is_reported(capsys):
    assert attribute_command(["--text", "x", "--probes", "0"]) == 2
    assert "probes" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny llama and the tiny word-level tokenizer saved as an HF folder (what --model accepts)."""
    from heat_module.testing import tiny_model, tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny_lm")
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.mark.usefixtures("one_thread")
def test_foil_level_and_progress_flags(capsys, tiny_folder):
    text = "the cat sat on the old"
    base = ["--model", tiny_folder, "--text", text, "--target", "hat", "--json", "--progress", "off"]
    assert attribute_command(base + ["--foil", "hat"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert "HEAT" not in captured.err and data["extra"]["foil"] == "hat" and not any(data["scores"])
    assert attribute_command(base + ["--foil", "tree", "--level", "words"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["extra"]["level"] == "words" and len(data["tokens"]) == len(text.split())
    assert any(data["scores"]) and data["extra"]["foil"] == "tree"
    assert attribute_command(base[:-3] + ["--foil", "tree"]) == 0
    assert "rather than 'tree'" in capsys.readouterr().out


@pytest.mark.usefixtures("one_thread")
def test_default_is_m_times_i_and_preset_exact_adds_s(capsys, tiny_folder):
    """No option: HEATConfig() (M·I, no S); ``--preset exact``: eq. 5 with S; options override the preset."""
    base = ["--model", tiny_folder, "--text", "the cat sat on the old", "--json", "--progress", "off"]
    assert attribute_command(base) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["config"]["beta"], data["config"]["gamma"]) == (0.0, 1.0) and data["curvature"] is None
    assert data["cost"]["hvps"] == 0
    assert attribute_command(base + ["--preset", "exact", "--probes", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["config"]["beta"], data["config"]["gamma"], data["config"]["probes"]) == (0.5, 0.5, 2)
    assert data["curvature"] is not None and data["cost"]["hvps"] == 2 * len(data["tokens"])
