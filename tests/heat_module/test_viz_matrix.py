"""The generation matrix pictures (:mod:`heat_module.viz_matrix`): HTML structure, colour scale, terminal view, PNG."""

import re

import pytest
import torch

from heat_module.viz_matrix import cell_rgb, matrix_layout, matrix_to_html, matrix_to_text, save_matrix_png

TOKENS = ["<s>", "The", " cat", " sat", " on", " the", " mat", " and", " slept", "."]
N = 6  # prompt: <s> The cat sat on the ; generated: mat and slept .


def matrix(adjacent=100.0):
    """(4, 10): row t covers columns < 6 + t; column 2 (' cat') 0.5, column 3 (' sat') 1.0, column 4 (' on') -0.5,
    the previous token ``adjacent``, the rest 0.1, NaN beyond the causal triangle."""
    T = len(TOKENS) - N
    m = torch.full((T, len(TOKENS)), 0.1)
    m[:, 2], m[:, 3], m[:, 4] = 0.5, 1.0, -0.5
    for t in range(T):
        m[t, N + t - 1] = adjacent
        m[t, N + t:] = float("nan")
    return m


SPECIAL = torch.tensor([True] + [False] * 9)
SPANS = [(0, 6, "user"), (6, 10, "assistant")]
PROB = torch.tensor([0.91, 0.42, 0.07, 0.66])


def page(**kw):
    args = dict(tokens=TOKENS, matrix=matrix(), row_labels=None, step_probability=PROB, special=SPECIAL, spans=SPANS,
                n_prompt=N, title="The cat", foil=None)
    args.update(kw)
    return matrix_to_html(matrix_layout(**args))


def body_rows(html):
    """The table's data rows (those with a P(y_t) cell)."""
    return [r for r in re.findall(r"<tr>(.*?)</tr>", html) if "class='p'" in r]


def test_causal_triangle_is_blank_and_special_tokens_hidden():
    rows = body_rows(page())
    assert len(rows) == 4
    shown = len(TOKENS) - 1  # <s> hidden
    for t, row in enumerate(rows):
        filled = row.count("<td class='c")
        assert filled == N - 1 + t  # the prefix without <s>
        assert row.count("<td class='void") == shown - filled
        assert "background" not in "".join(re.findall(r"<td class='void[^>]*>", row))
    assert "&lt;s&gt;" not in page() and "&lt;s&gt;" in page(show_special=True)


def test_step_probability_beside_each_row_and_row_labels():
    rows = body_rows(page())
    for row, p, label in zip(rows, ("0.91", "0.42", "0.07", "0.66"), (" mat", " and", " slept", ".")):
        assert f"<td class='p'>{p}</td>" in row and f"<th class='row'>{label}</th>" in row


def test_foil_is_named_in_the_title():
    html = page(foil=" dog")
    h2 = re.search(r"<h2>(.*?)</h2>", html).group(1)
    assert "rather than" in h2 and "dog" in h2 and "dog" in re.search(r"<title>(.*?)</title>", html).group(1)
    assert "rather than" not in page()


def test_previous_token_is_marked_printed_and_left_out_of_the_scale():
    """The previous token 100× larger than every other cell does not wash the row out: ' sat' (1.0) gets full
    colour, ' cat' (0.5) half, ' on' (-0.5) half blue; the previous token is marked and its value printed."""
    for row in body_rows(page())[1:]:
        cells = re.findall(r"<td class='c[^']*' style='background:rgb\((\d+),(\d+),(\d+)\)[^>]*title='([^:]*):", row)
        colour = {tok: tuple(map(int, rgb)) for *rgb, tok in cells}
        assert colour[" sat"] == cell_rgb(1.0) and colour[" cat"] == cell_rgb(0.5) and colour[" on"] == cell_rgb(-0.5)
        assert cell_rgb(0.5) != cell_rgb(0.005)  # what the cell would get on a scale set by the previous token
        assert row.count(" adj'") == 1 and "<td class='fin'>100</td>" in row
    first = body_rows(page())[0]  # row 1's previous token is ' the' (column 5): also left out and printed
    assert "<td class='fin'>100</td>" in first
    assert "left out of the scale" in page()  # the legend says so


def test_turn_and_answer_boundaries_are_marked():
    html = page()
    assert "colspan='5'>user</th>" in html and "colspan='4'>assistant</th>" in html
    header = re.search(r"<tr><th class='row'>generated</th>(.*?)</tr>", html).group(1)
    cols = re.findall(r"<th class='(col[^']*)'><div>([^<]*)</div>", header)
    assert [tok for cls, tok in cols if "b" in cls.split()] == ["The", " mat"]
    plain = page(spans=[])
    assert "answer</th>" in plain


def test_layout_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="Expected one token per matrix column"):
        matrix_layout(TOKENS[:-1], matrix(), None, None, None, None, N)
    with pytest.raises(ValueError, match="Expected 4 row labels"):
        matrix_layout(TOKENS, matrix(), ["a"], None, None, None, N)


def test_terminal_view_with_and_without_colour():
    coloured = matrix_to_text(matrix_layout(TOKENS, matrix(), None, PROB, SPECIAL, SPANS, N, None, " dog"))
    assert "\x1b[48;2;" in coloured and "\x1b[0m" in coloured and "rather than ' dog'" in coloured
    assert "[ and]" in coloured and "||" in coloured  # the previous token of row 3 in brackets; the answer starts
    r, g, b = cell_rgb(0.5)
    assert f"\x1b[48;2;{r};{g};{b}m" in coloured  # ' cat' at half colour despite the dominant previous token
    plain = matrix_to_text(matrix_layout(TOKENS, matrix(), None, PROB, SPECIAL, SPANS, N, None, None), color=False)
    assert "\x1b" not in plain
    lines = plain.splitlines()[2:]
    assert len(lines) == 4 and all("P=" in line for line in lines)
    assert "' sat' 1" in lines[1] and "• 100" in lines[1] and "' and'" not in lines[2].split("│")[1]


def test_png_has_both_colours_and_a_blank_triangle(tmp_path):
    from PIL import Image

    path = tmp_path / "m.png"
    save_matrix_png(matrix_layout(TOKENS, matrix(), None, PROB, SPECIAL, SPANS, N, "The cat", " dog"), str(path))
    pixels = torch.tensor(list(Image.open(path).convert("RGB").getdata()), dtype=torch.int32)
    assert (pixels == torch.tensor(cell_rgb(1.0))).all(-1).sum() > 50  # full red (' sat')
    assert (pixels == torch.tensor(cell_rgb(0.5))).all(-1).sum() > 50  # half red (' cat'), not washed out
    assert (pixels == torch.tensor(cell_rgb(-0.5))).all(-1).sum() > 50  # half blue (' on')


def test_merged_columns_use_nan_for_the_triangle():
    """Columns merged into words: each row covers the columns up to its last non-NaN one; labels are required."""
    nan = float("nan")
    m = torch.tensor([[0.2, 1.0, nan, nan], [0.2, 0.4, 9.0, nan], [0.1, 0.2, 0.3, 9.0]])
    words = ["The cat", " sat on", " the", " mat."]
    with pytest.raises(ValueError, match="Expected row labels"):
        matrix_layout(words, m, None, None, None, None, 2)
    layout = matrix_layout(words, m, [" the", " m", "at."], None, None, None, 2)
    assert [sum(s is not None for s in row) for row in layout.shares] == [2, 3, 4]
    assert layout.adjacent == [1, 2, 3] and layout.shares[1][1] == 1.0 and layout.shares[2][2] == 1.0


def test_matrix_views_of_a_generation_result(tmp_path, capsys):
    """The picture methods of GenerationResult: HTML, PNG, terminal text, show()."""
    from heat_module.generation_result import GenerationResult
    from heat_module.viz_matrix import generation_to_html

    res = GenerationResult(torch.arange(N), torch.arange(N, len(TOKENS)), TOKENS, matrix(), {"probability": PROB},
                           SPECIAL, SPANS, method="heat", foil=" dog")
    html = res.to_html()
    assert html == res._repr_html_() and "heat: what each answer token" in html and "rather than" in html
    assert len(body_rows(html)) == 4 and "<td class='p'>0.91</td>" in html
    res.save_html(str(tmp_path / "g.html"))
    res.save_png(str(tmp_path / "g.png"))
    assert (tmp_path / "g.html").read_text() == html and (tmp_path / "g.png").stat().st_size > 1000
    assert "\x1b[48;2;" in res.to_text() and "\x1b" not in res.to_text(color=False)
    words = res.aggregate([(1, 3)])  # merged columns: rows keep the generated tokens as labels
    assert "<th class='row'> slept</th>" in words.to_html() == generation_to_html(words)
    res.show()
    assert "P=0.91" in capsys.readouterr().out
