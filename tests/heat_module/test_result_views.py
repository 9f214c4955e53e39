"""Notebook views of results: _repr_html_ (same markup as to_html), show(), ResultList / results_table."""

import pytest
import torch

import heat_module as hm
from heat_module.result import ResultList
from heat_module.viz import results_table


def make(target="Paris", scores=(0.1, 0.7, 0.2), foil=None):
    return hm.AttributionResult(tokens=["The", " capital", " is"], token_ids=torch.tensor([1, 2, 3]), target=target,
                                target_id=9, scores=torch.tensor(scores), extra={} if foil is None else {"foil": foil})


def test_repr_html_is_to_html():
    res = make()
    assert res._repr_html_() == res.to_html()
    html = res._repr_html_()
    assert "Paris" in html and "Top tokens" in html and "rgba(214,39,40,0.950)" in html  # the top token, darkest
    assert "rather than" not in html
    assert "rather than" in make(foil=" London").to_html() and "London" in make(foil=" London").to_html()


def test_show_prints_a_text_table_without_ipython(capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ipython(name, *args, **kwargs):
        if name.startswith("IPython"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ipython)
    make().show()
    out = capsys.readouterr().out
    assert "target: 'Paris'" in out
    lines = out.splitlines()
    assert "' capital'" in lines[2]  # rank 1 is the highest score


def test_result_list_renders_one_table():
    results = ResultList([make(), make(target="Rome", scores=(0.5, 0.2, 0.3))])
    assert isinstance(results, list) and len(results) == 2 and results[1].target == "Rome"
    html = results._repr_html_()
    assert html.count("<table") == 1 and html.count("<tr>") == 3 and "Rome" in html and "Paris" in html
    assert results_table(results)._repr_html_() == html
    assert "Rome" in str(results.table())


def test_attribute_batch_returns_result_list(tiny_tok):
    from tests.conftest import make_tiny

    heat = hm.HEAT(make_tiny("llama"), tiny_tok, hm.HEATConfig(beta=0.0, progress=False))
    enc = tiny_tok(["the cat sat", "a dog ran on the"], return_tensors="pt", padding=True)
    out = heat.attribute_batch(enc["input_ids"], enc["attention_mask"])
    assert isinstance(out, ResultList) and len(out) == 2
    assert isinstance(hm.attribute_batch(heat.model, enc["input_ids"], enc["attention_mask"],
                                         config=hm.HEATConfig(beta=0.0, progress=False)), ResultList)


@pytest.mark.parametrize("bad", [0, "yes"])
def test_progress_config_validated(bad):
    with pytest.raises(ValueError, match="Expected progress"):
        hm.HEATConfig(progress=bad)


def test_progress_not_in_hash():
    assert hm.HEATConfig(progress=True).hash() == hm.HEATConfig().hash()


def test_final_token_left_out_of_the_colour_scale():
    """A final token 100× larger than the rest does not wash them out: the largest other score gets the full colour,
    half of it about half; the final token is outlined and its score printed; the legend says so."""
    res = hm.AttributionResult(tokens=["Maya", " packed", " her", " umbrella", " got"], token_ids=torch.arange(5),
                               target=" wet", target_id=9, scores=torch.tensor([0.01, 0.5, 0.02, 1.0, 100.0]))
    html = res.to_html()
    heat_row = html.split("<div class='row'>")[1]
    assert "rgba(214,39,40,0.950)' title='1'> umbrella" in heat_row
    assert "rgba(214,39,40,0.515)' title='0.5'> packed" in heat_row
    assert "class='tok last'" in heat_row and "<small class='val'>100</small>" in heat_row
    assert "left out of the scale" in html and "100×" in html
    one = hm.AttributionResult(tokens=["Hi"], token_ids=torch.arange(1), target="!", target_id=9,
                               scores=torch.tensor([2.0]))
    assert "rgba(214,39,40,0.950)" in one.to_html() and "class='tok last'" not in one.to_html()


def test_png_strip_keeps_the_context_visible(tmp_path):
    from PIL import Image

    res = hm.AttributionResult(tokens=["Maya", " packed", " her", " umbrella", " got"], token_ids=torch.arange(5),
                               target=" wet", target_id=9, scores=torch.tensor([0.01, 0.5, 0.02, 1.0, 100.0]),
                               extra={"foil": " dry"})
    res.save_png(str(tmp_path / "s.png"))
    pixels = torch.tensor(list(Image.open(tmp_path / "s.png").convert("RGB").getdata()), dtype=torch.int32)
    import matplotlib

    dark = torch.tensor([round(255 * c) for c in matplotlib.colormaps["Reds"](0.9)[:3]])
    box = int((pixels == torch.tensor([255, 230, 128])).all(-1).sum())  # the target box: one box's area
    full = int((pixels - dark).abs().max(-1).values.le(2).sum())
    assert box > 1000 and full > 1.6 * box  # ' umbrella' and ' got' both at full colour


def test_foil_in_every_title():
    res = make(foil=" London")
    assert "rather than ' London'" in res.to_html(title="The capital").split("<h2>")[1].split("</h2>")[0].replace(
        "&#x27;", "'")
    assert "rather than ' London'" in str(hm.viz.result_to_text(res))
