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
