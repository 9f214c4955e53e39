"""Proof that the HTML heatmap renders: a headless Chromium screenshot of ``to_html()`` shows the heatmap colours.

Needs Chromium from the distribution (``apt-get install -y chromium``); skipped with that reason where
``/usr/bin/chromium`` is missing.
"""

import os
import shutil
import subprocess

import pytest
import torch

import heat_module as hm

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "") if p and os.path.exists(p)), None)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium missing: apt-get install -y chromium")


def screenshot(html_path, png_path, size=(1000, 700)):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           f"--screenshot={png_path}", f"--window-size={size[0]},{size[1]}", f"file://{html_path}"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    from PIL import Image  # matplotlib's dependency

    return torch.tensor(list(Image.open(png_path).convert("RGB").getdata()), dtype=torch.int32)


def test_html_heatmap_renders_with_heatmap_colours(tmp_path):
    tokens = ["The", " capital", " of", " France", " is"]
    res = hm.AttributionResult(tokens=tokens, token_ids=torch.arange(5), target=" Paris", target_id=9,
                               scores=torch.tensor([0.05, 0.4, 0.02, 1.0, 0.1]),
                               transition=torch.tensor([0.1, 0.2, 0.1, 0.5, 0.1]))
    assert res._repr_html_() == res.to_html()
    html_path = tmp_path / "heat.html"
    res.save_html(str(html_path), title="The capital of France is")
    pixels = screenshot(html_path, tmp_path / "heat.png")
    r, g, b = pixels.unbind(-1)
    assert (pixels != pixels[0]).any(dim=-1).float().mean() > 0.01, "blank screenshot"
    # the colour map's hue: tab:red rgb(214, 39, 40) blended on white — red clearly above green and blue
    reddish = (r > 150) & (r - g > 80) & (r - b > 80) & ((g - b).abs() < 30)
    assert int(reddish.sum()) > 200, "no heatmap (red) pixels"
    # the target box (#ffe680) is drawn too
    target = ((r - 255).abs() < 4) & ((g - 230).abs() < 4) & ((b - 128).abs() < 6)
    assert int(target.sum()) > 50, "no target box"
    # a result with all-zero scores has no red: the check above can fail
    flat = hm.AttributionResult(tokens=tokens, token_ids=torch.arange(5), target=" Paris", target_id=9,
                                scores=torch.zeros(5))
    flat.save_html(str(tmp_path / "flat.html"))
    r, g, b = screenshot(tmp_path / "flat.html", tmp_path / "flat.png").unbind(-1)
    assert int(((r > 150) & (r - g > 80) & (r - b > 80) & ((g - b).abs() < 30)).sum()) == 0


def count(pixels, rgb, tol=3):
    return int(((pixels - torch.tensor(rgb)).abs().max(-1).values <= tol).sum())


def test_dominant_final_token_leaves_the_context_visible(tmp_path):
    """The final token 100× the rest: the other tokens are still drawn in strong colour (the scale leaves it out)."""
    tokens = ["Maya", " packed", " her", " umbrella", " because", " it", " would", " rain", " so", " she", " got"]
    scores = torch.tensor([0.1, 0.6, 0.05, 1.0, 0.1, 0.2, 0.1, 0.9, 0.3, 0.4, 100.0])
    res = hm.AttributionResult(tokens=tokens, token_ids=torch.arange(11), target=" wet", target_id=9, scores=scores)
    res.save_html(str(tmp_path / "last.html"), title="Maya packed her umbrella")
    r, g, b = screenshot(tmp_path / "last.html", tmp_path / "last.png").unbind(-1)
    strong = (r > 180) & (g < 90) & (b < 90)  # tab:red at opacity ≥ 0.8 on white
    assert int(strong.sum()) > 1500, "only the final token is dark: the context is washed out"


def test_generation_matrix_renders(tmp_path):
    """The matrix picture: red and blue cells, the blank causal triangle, the foil in the title."""
    from heat_module.viz_matrix import cell_rgb, matrix_layout, matrix_to_html

    tokens = ["<|im_start|>", "user", "\n", "Name", " a", " fruit", "<|im_end|>", "\n", "<|im_start|>", "assistant",
              "\n", "An", " apple", " a", " day", "."]
    n, T = 11, 5
    m = torch.rand(T, n + T, generator=torch.Generator().manual_seed(0)) * 0.5
    m[:, 5] = 1.0
    m[:, 4] = -0.8
    for t in range(T):
        m[t, n + t - 1] = 50.0
        m[t, n + t:] = float("nan")
    special = torch.tensor([k in (0, 1, 2, 6, 7, 8, 9, 10) for k in range(n + T)])
    page = matrix_to_html(matrix_layout(tokens, m, None, torch.tensor([0.5, 0.9, 0.3, 0.8, 0.6]), special,
                                        [(0, 8, "user"), (8, 16, "assistant")], n, "Name a fruit", " pear"))
    (tmp_path / "matrix.html").write_text(page)
    pixels = screenshot(tmp_path / "matrix.html", tmp_path / "matrix.png")
    assert count(pixels, cell_rgb(1.0)) > 300, "no full-red ' fruit' column"
    assert count(pixels, cell_rgb(-0.8)) > 300, "no blue ' a' column"
    white = count(pixels, (255, 255, 255), tol=0)
    assert white > 0.5 * len(pixels)
    assert "rather than" in page and "pear" in page
