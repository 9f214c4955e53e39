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


def scale_without(values: torch.Tensor | None, exclude: int | None) -> tuple[list[float], float]:
    """Colour shares in [-1, 1]: each value divided by the largest magnitude among the cells other than ``exclude``.

    The left-out cell (the final context token, which in a causal LM often carries most of the mass) does not set
    the scale, so one dominant cell cannot wash out the others; its own share is clipped to [-1, 1] (it is drawn
    at full colour and marked, its value printed). NaN counts as 0. With no other non-zero cell the scale falls back
    to the left-out cell itself. Returns ``(shares, top)`` with ``top`` the value that maps to full colour.
    """
    if values is None:
        return [], 0.0
    v = values.detach().double().nan_to_num(0.0)
    if v.numel() == 0:
        return [], 0.0
    keep = torch.ones(v.numel(), dtype=torch.bool)
    if exclude is not None and v.numel() > 1:
        keep[exclude] = False
    top = float(v[keep].abs().max())
    if top == 0:
        top = float(v.abs().max())
    if top == 0:
        return [0.0] * v.numel(), 0.0
    return (v / top).clamp(-1.0, 1.0).tolist(), top


def _shares(values: torch.Tensor, exclude: int | None) -> list[float]:
    """Positive shares in [0, 1] (the single-result heatmap shows scores clipped at 0), the scale set without the
    ``exclude`` cell (see :func:`scale_without`)."""
    return [max(0.0, s) for s in scale_without(values.detach().float().clamp_min(0), exclude)[0]]


def final_index(tokens: Sequence[str]) -> int | None:
    """The index of the final context token, left out of the colour scale (None for a context of one token)."""
    return len(tokens) - 1 if len(tokens) > 1 else None


def display_token(token: str) -> str:
    """A token as it should be drawn: newlines as ⏎, byte-level BPE spaces as spaces, the empty token as ∅."""
    return token.replace("\n", "⏎").replace("Ġ", " ") or "∅"


def _cells(tokens: Sequence[str], values: torch.Tensor) -> str:
    """The tokens as inline spans shaded by their share of the largest score among the tokens before the final one
    (the heatmap colour: matplotlib's ``tab:red``, rgb(214, 39, 40), with opacity 0.08–0.95). The final token is
    left out of that scale: it is outlined and its score printed beside it."""
    last = final_index(tokens)
    cells = []
    for k, (tok, share, raw) in enumerate(zip(tokens, _shares(values, last), values.tolist())):
        colour = f"rgba(214,39,40,{0.08 + 0.87 * share:.3f})" if share > 0 else "rgba(0,0,0,0.03)"
        text = html.escape(display_token(tok))
        if k == last:
            cells.append(f"<span class='tok last' style='background:{colour}' title='{raw:.4g} (final token, off "
                         f"the colour scale)'>{text}<small class='val'>{raw:.3g}</small></span>")
        else:
            cells.append(f"<span class='tok' style='background:{colour}' title='{raw:.4g}'>{text}</span>")
    return "".join(cells)


def scale_legend(tokens: Sequence[str], values: torch.Tensor) -> str:
    """The sentence that states the colour scale of :func:`_cells` (plain text)."""
    last = final_index(tokens)
    if last is None:
        return "Colour: the score as a share of its own value."
    v = values.detach().float().nan_to_num(0.0).clamp_min(0)
    top = float(v[:last].max()) if last else 0.0
    final = float(values[last])
    ratio = f", {final / top:.3g}× that" if top > 0 else ""
    return (f"Colour: each score (clipped at 0) as a share of the largest score among the tokens before the final "
            f"one ({top:.3g}). The final token {display_token(tokens[last])!r} is left out of the scale so the rest "
            f"stay visible: it is outlined, drawn at most at full colour, and its score is printed ({final:.3g}"
            f"{ratio}).")


_STYLE = (
    "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}"
    ".tok{display:inline-block;padding:2px 3px;margin:1px;border-radius:3px;white-space:pre;"
    "font-family:ui-monospace,monospace}.row{margin:.6em 0}.lbl{font-weight:600;margin-right:.5em}"
    ".target{border:2px solid #333;background:#ffe680}table{border-collapse:collapse}"
    "td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}"
    ".last{outline:2px dashed #222;outline-offset:-2px}.val{font-size:70%;margin-left:3px;color:#222}"
    ".legend{color:#444;font-size:90%;max-width:60em}</style>"
)


def _foil_note(result: Attribution) -> str:
    """" rather than <foil>" for a contrastive result (``extra["foil"]``), else ""."""
    foil = (getattr(result, "extra", None) or {}).get("foil")
    return "" if foil is None else f"rather than <span class='tok'>{html.escape(display_token(str(foil)))}</span> "


def result_to_html(result: Attribution, title: str | None = None) -> str:
    """A self-contained HTML page: the context tokens shaded by score, one row per component, and a top-k table.
    A contrastive result names its foil in the title ("... rather than ' London'")."""
    rows = [("Attr (eq. 5)", result.scores)]
    heading = (title or "HEAT attribution") + _foil_text(result)
    info_label = "I (|Δ contrast|)" if _foil_note(result) else "I (KL)"
    for name, label in (("transition", "M (gate)"), ("curvature", "S (Hessian)"), ("information", info_label),
                        ("first_order", "first order")):
        value = getattr(result, name)
        if value is not None:
            rows.append((label, value))
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(heading)}</title>",
        _STYLE + "</head><body>",
        f"<h2>{html.escape(heading)}</h2>",
        f"<p>Target (next token): <span class='tok target'>{html.escape(display_token(result.target))}</span> "
        f"{_foil_note(result)}&middot; method: {html.escape(result.method)}</p>",
    ]
    for label, values in rows:
        parts.append(f"<div class='row'><span class='lbl'>{html.escape(label)}</span>"
                     f"{_cells(result.tokens, values)}</div>")
    parts.append(f"<p class='legend'>{html.escape(scale_legend(result.tokens, result.scores))} The component rows "
                 "are scaled the same way, each by its own largest value.</p>")
    parts.append("<h3>Top tokens</h3><table><tr><th>rank</th><th>position</th><th>token</th><th>score</th></tr>")
    for rank, (i, tok, score) in enumerate(result.topk(10), 1):
        parts.append(f"<tr><td>{rank}</td><td>{i}</td><td>{html.escape(display_token(tok))}</td><td>{score:.4g}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)


def save_png(result: Attribution, path: str, title: str | None = None, per_line: int = 14) -> None:
    """A PNG token strip: each context token in a box shaded by its score, the target at the end. The colour scale
    leaves the final context token out (dashed box, its score printed under it), as the HTML heatmap does."""
    import matplotlib  # lazy: heavy optional dependency, only for PNGs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = final_index(result.tokens)
    shares = _shares(result.scores, last)
    tokens = [display_token(t) for t in result.tokens] + [display_token(result.target)]
    lines = (len(tokens) + per_line - 1) // per_line
    fig, ax = plt.subplots(figsize=(min(16, 1.1 * per_line), 0.75 * lines + 1.5))
    ax.set_axis_off()
    ax.set_xlim(0, per_line)
    ax.set_ylim(-lines - 0.15, 0.6)
    cmap = matplotlib.colormaps["Reds"]
    for k, tok in enumerate(tokens):
        row, col = divmod(k, per_line)
        is_target = k == len(tokens) - 1
        face = "#ffe680" if is_target else cmap(0.05 + 0.85 * shares[k])
        edge, style, width = (("black", "-", 1.5) if is_target else ("black", "--", 1.5) if k == last
                              else ("white", "-", 0.5))
        ax.add_patch(plt.Rectangle((col + 0.03, -row - 0.85), 0.94, 0.8, facecolor=face, edgecolor=edge,
                                   linestyle=style, linewidth=width))
        text_colour = "white" if not is_target and shares[k] > 0.6 else "black"
        ax.text(col + 0.5, -row - 0.45, tok if len(tok) <= 10 else tok[:9] + "…", ha="center", va="center",
                fontsize=9, color=text_colour, family="monospace")
        if k == last:
            ax.text(col + 0.5, -row - 0.97, f"{float(result.scores[k]):.3g} (off scale)", ha="center", va="center",
                    fontsize=7, color="black")
    ax.set_title((title or f"HEAT attribution → target {tokens[-1]!r}") + _foil_text(result), fontsize=11, loc="left")
    fig.text(0.01, 0.01, scale_legend(result.tokens, result.scores), fontsize=7, wrap=True, va="bottom")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _foil_text(result: Attribution) -> str:
    """" rather than '<foil>'" for a contrastive result, else "" (the plain-text form of :func:`_foil_note`)."""
    foil = (getattr(result, "extra", None) or {}).get("foil")
    return "" if foil is None else f" rather than {display_token(str(foil))!r}"


def result_to_text(result: Attribution, k: int = 10) -> str:
    """A plain-text table (what ``show()`` prints without IPython): target, method and the top-k tokens."""
    lines = [f"target: {display_token(result.target)!r}{_foil_text(result)} · method: {result.method} · "
             f"{len(result.tokens)} tokens",
             f"{'rank':>4}  {'pos':>4}  {'token':<20} score"]
    for rank, (i, tok, score) in enumerate(result.topk(k), 1):
        lines.append(f"{rank:>4}  {i:>4}  {display_token(tok)!r:<20} {score:.4g}")
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
                         f"<td><span class='tok target'>{html.escape(display_token(r.target))}</span></td></tr>")
        parts.append("</table>")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __str__(self) -> str:
        return "\n\n".join(f"[{k}] {result_to_text(r, 5)}" for k, r in enumerate(self.results))


def results_table(results: Sequence[Attribution], title: str | None = None) -> ResultsTable:
    """One table for a list of results (``_repr_html_`` for notebooks).

    Example:
        >>> from heat_module import HEAT
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> from heat_module.viz import results_table
        >>> heat = HEAT(tiny_model("llama"), tiny_tokenizer())
        >>> table = results_table([heat.attribute("the cat sat"), heat.attribute("the dog ran")], title="two")
        >>> table.to_html().count("<tr>")  # the header and one row per result
        3
    """
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
