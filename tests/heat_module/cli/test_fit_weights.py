"""``heat fit-weights``: the command runs end to end on a tiny saved model and writes its JSON."""

import json

from heat_module.cli.fit_weights import main as fit_weights_command
from tests.conftest import make_tiny

TEXTS = ["the cat sat on the hat because it", "a red bird sat in the old tree and", "my dog ate the bread after"]


def test_command(tmp_path, tiny_tok, capsys):
    folder = tmp_path / "tiny"
    make_tiny("gpt2", double=False).save_pretrained(folder)
    tiny_tok.save_pretrained(folder)
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": t}) for t in TEXTS))
    out = tmp_path / "fit.json"
    code = fit_weights_command(["--model", str(folder), "--data", str(data), "--limit", "2", "--num-spans", "2",
                                "--curvature", "fisher", "--fisher-topk", "4", "--json", str(out)])
    assert code == 0 and "beta=" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["num_examples"] == 2 and saved["beta"] >= 0 and saved["gamma"] >= 0
