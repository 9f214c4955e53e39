"""PNG heatmaps of HEAT on three prompts written for the evaluation (paper Figures 4–6 style)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from heat_module.config import HEATConfig
from heat_module.heat.estimator import HEAT

#: three prompts written for the figures (not from any data set): (prompt, expected target)
FIGURE_PROMPTS = (
    ("Maria checked the forecast: heavy rain all afternoon. Before leaving the house she grabbed her", "umbrella"),
    ("Tom baked a chocolate cake for his sister's birthday. He lit the candles and the whole family sang happy",
     "birthday"),
    ("The museum guard noticed that the famous painting had been stolen. The police arrested the", "thief"),
)


def draw_figures(model: nn.Module, tokenizer: Any, out_dir: Path, sink: str, probes: int = 1,
                 seed: int = 0) -> list[dict]:
    """PNG heatmaps of HEAT eq. 5 with exact S (``HEATConfig.preset("exact")``, the evaluation's HEAT row) on
    :data:`FIGURE_PROMPTS` (greedy target) via ``AttributionResult.save_png``.

    Returns:
        One ``{"path", "target", "top"}`` per figure (``top``: the four highest-scored tokens with their scores).
    """
    heat = HEAT(model, tokenizer, HEATConfig.preset("exact", sink=sink, curvature={"name": "exact", "probes": probes},
                                                          seed=seed))
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for k, (prompt, _) in enumerate(FIGURE_PROMPTS, 1):
        res = heat.attribute(prompt)
        path = out_dir / f"heat_figure_{k}.png"
        res.save_png(str(path), title=f"HEAT (sink={sink}) — target {res.target!r}")
        figures.append({"path": str(path), "target": res.target,
                        "top": ", ".join(f"{t.strip() or t!r} {s:.3g}" for _, t, s in res.topk(4))})
    return figures
