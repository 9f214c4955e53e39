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
