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
