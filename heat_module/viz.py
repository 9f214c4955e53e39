"""Pictures of attributions: a self-contained HTML heatmap, a PNG token strip (paper Figures 4–6 style), a plain-text
table for terminals, and one HTML table for a list of results (:func:`results_table`, what a notebook shows for a
:class:`heat_module.result.ResultList`)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Protocol

import torch


class Attribution(Protocol):
    """What the pictures read from an :class:`heat_module.result.AttributionResult` (this module sits below it)."""

    tokens: list[str]
    target: str
    method: str
    scores: torch.Tensor
    transition: torch.Tensor | None
    curvature: torch.Tensor | None
    information: torch.Tensor | None
    first_order: torch.Tensor | None

    def topk(self, k: int = 5) -> list[tuple[int, str, float]]: ...


def _shares(values: torch.Tensor | None) -> list[float] | None:
    """Scores clipped at 0 and scaled to [0, 1] by the maximum (for colouring)."""
    if values is None:
        return None
    v = values.detach().float().nan_to_num(0.0).clamp_min(0)
    top = float(v.max()) if v.numel() else 0.0
    return (v / top).tolist() if top > 0 else [0.0] * v.numel()


def _show(token: str) -> str:
    return token.replace("\n", "⏎").replace("Ġ", " ") or "∅"


def _cells(tokens: Sequence[str], values: torch.Tensor) -> str:
    """The tokens as inline spans shaded by their share of the maximum (the heatmap colour: matplotlib's
    ``tab:red``, rgb(214, 39, 40), with opacity 0.08–0.95)."""
    cells = []
    for tok, share, raw in zip(tokens, _shares(values), values.tolist()):
        colour = f"rgba(214,39,40,{0.08 + 0.87 * share:.3f})" if share > 0 else "rgba(0,0,0,0.03)"
        cells.append(f"<span class='tok' style='background:{colour}' title='{raw:.4g}'>"
                     f"{html.escape(_show(tok))}</span>")
    return "".join(cells)


_STYLE = (
    "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}"
    ".tok{display:inline-block;padding:2px 3px;margin:1px;border-radius:3px;white-space:pre;"
    "font-family:ui-monospace,monospace}.row{margin:.6em 0}.lbl{font-weight:600;margin-right:.5em}"
    ".target{border:2px solid #333;background:#ffe680}table{border-collapse:collapse}"
    "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}</style>"
)


def _foil_note(result: Attribution) -> str:
    """" rather than <foil>" for a contrastive result (``extra["foil"]``), else ""."""
    foil = (getattr(result, "extra", None) or {}).get("foil")
    return "" if foil is None else f"rather than <span class='tok'>{html.escape(_show(str(foil)))}</span> "


def result_to_html(result: Attribution, title: str | None = None) -> str:
    """A self-contained HTML page: the context tokens shaded by score, one row per component, and a top-k table."""
    rows = [("Attr (eq. 5)", result.scores)]
    info_label = "I (|Δ contrast|)" if _foil_note(result) else "I (KL)"
    for name, label in (("transition", "M (gate)"), ("curvature", "S (Hessian)"), ("information", info_label),
                        ("first_order", "first order")):
        value = getattr(result, name)
        if value is not None:
            rows.append((label, value))
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title or 'HEAT attribution')}</title>",
        _STYLE + "</head><body>",
        f"<h2>{html.escape(title or 'HEAT attribution')}</h2>",
        f"<p>Target (next token): <span class='tok target'>{html.escape(_show(result.target))}</span> "
        f"{_foil_note(result)}&middot; method: {html.escape(result.method)}</p>",
    ]
    for label, values in rows:
        parts.append(f"<div class='row'><span class='lbl'>{html.escape(label)}</span>"
                     f"{_cells(result.tokens, values)}</div>")
    parts.append("<h3>Top tokens</h3><table><tr><th>rank</th><th>position</th><th>token</th><th>score</th></tr>")
    for rank, (i, tok, score) in enumerate(result.topk(10), 1):
        parts.append(f"<tr><td>{rank}</td><td>{i}</td><td>{html.escape(_show(tok))}</td><td>{score:.4g}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


def save_png(result: Attribution, path: str, title: str | None = None, per_line: int = 14) -> None:
    """A PNG token strip: each context token in a box shaded by its normalised score, the target at the end."""
    import matplotlib  # lazy: heavy optional dependency, only for PNGs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = _shares(result.scores)
    tokens = [_show(t) for t in result.tokens] + [_show(result.target)]
    lines = (len(tokens) + per_line - 1) // per_line
    fig, ax = plt.subplots(figsize=(min(16, 1.1 * per_line), 0.75 * lines + 1.0))
    ax.set_axis_off()
    ax.set_xlim(0, per_line)
    ax.set_ylim(-lines, 0.6)
    cmap = matplotlib.colormaps["Reds"]
    for k, tok in enumerate(tokens):
        row, col = divmod(k, per_line)
        is_target = k == len(tokens) - 1
        face = "#ffe680" if is_target else cmap(0.05 + 0.85 * shares[k])
        ax.add_patch(plt.Rectangle((col + 0.03, -row - 0.85), 0.94, 0.8, facecolor=face,
                                   edgecolor="black" if is_target else "white", linewidth=1.5 if is_target else 0.5))
        text_colour = "white" if not is_target and shares[k] > 0.6 else "black"
        ax.text(col + 0.5, -row - 0.45, tok if len(tok) <= 10 else tok[:9] + "…", ha="center", va="center",
                fontsize=9, color=text_colour, family="monospace")
    ax.set_title(title or f"HEAT attribution → target {tokens[-1]!r}", fontsize=11, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def result_to_text(result: Attribution, k: int = 10) -> str:
    """A plain-text table (what ``show()`` prints without IPython): target, method and the top-k tokens."""
    lines = [f"target: {_show(result.target)!r} · method: {result.method} · {len(result.tokens)} tokens",
             f"{'rank':>4}  {'pos':>4}  {'token':<20} score"]
    for rank, (i, tok, score) in enumerate(result.topk(k), 1):
        lines.append(f"{rank:>4}  {i:>4}  {_show(tok)!r:<20} {score:.4g}")
    return "\n".join(lines)


class ResultsTable:
    """Several results as one HTML table (one row per result: its heatmap and its target); ``_repr_html_`` is what
    Jupyter shows, ``str()`` a plain-text version."""

    def __init__(self, results: Sequence[Attribution], title: str | None = None) -> None:
        self.results = list(results)
        self.title = title

    def to_html(self) -> str:
        parts = [_STYLE, "<table class='heat-results'>"]
        if self.title:
            parts.append(f"<caption>{html.escape(self.title)}</caption>")
        parts.append("<tr><th>#</th><th>method</th><th>context (shaded by score)</th><th>target</th></tr>")
        for k, r in enumerate(self.results):
            parts.append(f"<tr><td>{k}</td><td>{html.escape(r.method)}</td><td>{_cells(r.tokens, r.scores)}</td>"
                         f"<td><span class='tok target'>{html.escape(_show(r.target))}</span></td></tr>")
        parts.append("</table>")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __str__(self) -> str:
        return "\n\n".join(f"[{k}] {result_to_text(r, 5)}" for k, r in enumerate(self.results))


def results_table(results: Sequence[Attribution], title: str | None = None) -> ResultsTable:
    """One table for a list of results (``_repr_html_`` for notebooks)."""
    return ResultsTable(results, title)


def display_or_print(obj: object, text: str) -> None:
    """Display ``obj`` (which has ``_repr_html_``) in Jupyter when IPython is running, else print ``text``."""
    try:
        from IPython import get_ipython  # optional: only present in notebook environments
        from IPython.display import display
    except ImportError:
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display(obj)
