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
    base = ["--model", tiny_folder, "--text", text, "--target", "hat", "--json", "--progress", "off", "--preset", "mi"]
    assert attribute_command(base + ["--foil", "hat"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert "HEAT" not in captured.err and data["extra"]["foil"] == "hat" and not any(data["scores"])
    assert attribute_command(base + ["--foil", "tree", "--level", "words"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["extra"]["level"] == "words" and len(data["tokens"]) == len(text.split())
    assert any(data["scores"]) and data["extra"]["foil"] == "tree"
    assert attribute_command(base[:-5] + ["--preset", "mi", "--foil", "tree"]) == 0
    assert "rather than 'tree'" in capsys.readouterr().out


@pytest.mark.usefixtures("one_thread")
def test_default_is_the_fisher_s_mi_has_no_s_and_preset_exact_adds_hvps(capsys, tiny_folder):
    """No option: HEATConfig() (Fisher S, exact I, normalize="sum"); ``--preset mi``: M·I, no S; ``--preset exact``:
    eq. 5 with the exact S; options override the preset; a foil needs a contrastive S (the default refuses it)."""
    base = ["--model", tiny_folder, "--text", "the cat sat on the old", "--json", "--progress", "off"]
    assert attribute_command(base) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["config"]["beta"], data["config"]["gamma"], data["config"]["normalize"]) == (0.5, 0.5, "sum")
    assert data["config"]["curvature"]["name"] == "fisher" and data["curvature"] is not None
    assert data["cost"]["hvps"] == 0 and data["cost"]["gradients"] > 0
    assert attribute_command(base + ["--preset", "mi"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["config"]["beta"], data["config"]["gamma"]) == (0.0, 1.0) and data["curvature"] is None
    assert data["cost"]["hvps"] == 0 and data["cost"]["gradients"] == 0
    assert attribute_command(base + ["--target", "hat", "--foil", "tree"]) == 2
    assert "for a contrastive (foil) attribution, got 'fisher'" in capsys.readouterr().err
    assert attribute_command(base + ["--preset", "exact", "--probes", "2"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["config"]["beta"], data["config"]["gamma"], data["config"]["curvature"]["probes"]) == (0.5, 0.5, 2)
    assert data["curvature"] is not None and data["cost"]["hvps"] == 2 * len(data["tokens"])


@pytest.mark.usefixtures("one_thread")
def test_estimator_flags_change_the_presets_estimators(capsys, tiny_folder):
    """``--probes`` keeps the preset's S estimator, ``--curvature`` names another, ``--mask`` changes I's mask; an S
    estimator where S is not computed (β = 0) is refused with the config's error."""
    base = ["--model", tiny_folder, "--text", "the cat sat on the old", "--json", "--progress", "off"]
    assert attribute_command(base + ["--preset", "fisher", "--probes", "3", "--mask", "mean"]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert (config["curvature"]["name"], config["curvature"]["probes"], config["information"]["mask"]) == (
        "fisher", 3, "mean")
    assert attribute_command(base + ["--beta", "0.5", "--curvature", "lowrank"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["curvature"]["name"] == "lowrank"
    assert attribute_command(base + ["--preset", "mi", "--curvature", "fisher"]) == 2
    assert "Expected curvature=None where S is not computed" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--text", "x", "--chat"], "--chat, --messages and --keep-special explain an answer"),
    (["--messages", "m.json"], "--text"),
])
def test_answer_options_need_generate_or_continuation(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        attribute_command(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")
def test_answer_option_conflicts_are_reported(capsys, tiny_folder, tmp_path):
    base = ["--model", tiny_folder, "--progress", "off"]
    assert attribute_command(base + ["--text", "a", "--generate", "2", "--continuation", "b"]) == 2
    assert "got both" in capsys.readouterr().err
    assert attribute_command(base + ["--text", "a", "--generate", "0"]) == 2
    assert "N >= 1" in capsys.readouterr().err
    bad = tmp_path / "m.json"
    bad.write_text('[{"role": "user"}]')
    assert attribute_command(base + ["--messages", str(bad), "--generate", "2"]) == 2
    assert "messages[0]" in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")
def test_generate_prints_the_matrix_and_writes_outputs(capsys, tiny_folder, tmp_path):
    base = ["--model", tiny_folder, "--text", "the cat sat on the", "--generate", "3", "--progress", "off"]
    html, png = tmp_path / "m.html", tmp_path / "m.png"
    assert attribute_command(base + ["--color", "always", "--html", str(html), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "\x1b[48;2;" in out and out.count("P=") == 3
    assert html.read_text().count("<td class='p'>") == 3 and png.stat().st_size > 1000
    assert attribute_command(base + ["--color", "never"]) == 0
    assert "\x1b" not in capsys.readouterr().out
    assert attribute_command(base + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["matrix"]) == 3 and len(data["generated_ids"]) == 3
    assert attribute_command(base[:-4] + ["--continuation", " mat and", "--json", "--progress", "off"]) == 0
    assert len(json.loads(capsys.readouterr().out)["matrix"]) == 2
