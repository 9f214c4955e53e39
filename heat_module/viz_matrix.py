"""Pictures of a generation's attribution matrix: rows the generated tokens y_1..y_T, columns the prompt and the
answer tokens, cell (t, c) the attribution of y_t to token c (red positive, blue negative); the causal triangle
beyond each row's prefix is blank. Three views of one layout (:func:`matrix_layout`): a self-contained HTML table
(:func:`matrix_to_html`, no JavaScript), a PNG (:func:`save_matrix_png`, matplotlib) and a coloured terminal view
(:func:`matrix_to_text`, 24-bit ANSI background colours, or plain text).

The colour scale is set per row and leaves out the cell right before y_t (column n + t - 1: the previous token,
which in a causal LM often carries most of the mass): each row is divided by its largest magnitude over its other
shown tokens, so one dominant cell cannot wash the rest of the row out. The left-out cell is marked (•), drawn at
most at full colour, and its value printed at the end of the row. Special / chat-template tokens are hidden by
default. The layout takes plain arguments (tensors, lists, strings), so these functions sit below
:class:`heat_module.generation_result.GenerationResult`, whose ``to_html`` / ``save_png`` / ``to_text`` call them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from heat_module.viz import display_or_print, display_token, scale_without

POSITIVE = (214, 39, 40)  # matplotlib tab:red, as in the single-result heatmap
NEGATIVE = (31, 119, 180)  # matplotlib tab:blue


def cell_rgb(share: float) -> tuple[int, int, int]:
    """The opaque colour of a cell with signed share in [-1, 1]: red (positive) or blue (negative) at opacity
    0.08 + 0.87·|share| blended on white; exactly 0 is white."""
    if share == 0 or math.isnan(share):
        return (255, 255, 255)
    alpha = 0.08 + 0.87 * min(1.0, abs(share))
    base = POSITIVE if share > 0 else NEGATIVE
    return tuple(round(255 + alpha * (c - 255)) for c in base)  # type: ignore[return-value]


@dataclass
class MatrixLayout:
    """What every view draws. ``columns`` are the shown token indices (special tokens left out unless asked);
    ``values[t][j]`` / ``shares[t][j]`` the raw value and colour share of row t at shown column j (None beyond the
    causal triangle); ``adjacent[t]`` the shown position of the previous token of row t when it is left out of the
    scale (else None); ``tops[t]`` the magnitude that maps to full colour in row t; ``boundaries`` the shown
    positions where a turn or the answer starts, with its label."""

    title: str
    columns: list[int]
    column_tokens: list[str]
    row_labels: list[str]
    probability: list[float | None]
    values: list[list[float | None]]
    shares: list[list[float | None]]
    adjacent: list[int | None]
    tops: list[float]
    boundaries: dict[int, str]
    hidden: int
    n_prompt: int

    def adjacent_value(self, t: int) -> float | None:
        j = self.adjacent[t]
        return None if j is None else self.values[t][j]

    def legend(self) -> str:
        hidden = (f" {self.hidden} special / template tokens are hidden (their columns are left out of the scale)."
                  if self.hidden else "")
        return ("Rows: the generated tokens y_t with P(y_t), the model's probability of each. Columns: the prompt, "
                "then the answer so far; a cell is the attribution of y_t to that token (red positive, blue "
                "negative); cells beyond each row's prefix are blank (the causal triangle). Colour scale: each row "
                "is divided by its own largest |score| over its tokens except the one right before y_t; that cell "
                "(marked •) is left out of the scale so the rest of the row stays visible — it is drawn at most at "
                "full colour and its score is printed at the end of the row. Thick lines: where a turn or the "
                "answer starts." + hidden)


def matrix_layout(
    tokens: Sequence[str],
    matrix: torch.Tensor,
    row_labels: Sequence[str] | None,
    step_probability: torch.Tensor | Sequence[float] | None,
    special: torch.Tensor | Sequence[bool] | None,
    spans: Sequence[tuple[int, int, str]] | None,
    n_prompt: int,
    title: str | None = None,
    foil: str | None = None,
    show_special: bool = False,
) -> MatrixLayout:
    """The layout of the matrix picture.

    Args:
        tokens: the n + T token strings (prompt then generated).
        matrix: (T, n + T) attribution matrix; row t covers columns < n + t (the rest NaN or ignored). Columns
            merged into words or turns (then not n + T of them) are fine: each row then covers the columns up to
            its last non-NaN one.
        row_labels: T labels for the rows (default: the generated tokens ``tokens[n:]``; required for merged
            columns).
        step_probability: (T,) P(y_t), or None.
        special: (n + T,) bool, True for special / chat-template tokens (hidden unless ``show_special``), or None.
        spans: turn spans ``(start, end, label)`` over token positions (may be empty).
        n_prompt: n, the number of prompt tokens.
        title: the title (default "Attribution of each generated token").
        foil: for a contrastive attribution, the foil token, named in the title.
        show_special: draw the special tokens too.
    Raises:
        ValueError: when the shapes disagree (messages say what was expected and what came).
    """
    if matrix.dim() != 2:
        raise ValueError(f"Expected a (T, n + T) matrix, got shape {tuple(matrix.shape)}")
    n_rows, n_cols = matrix.shape
    if len(tokens) != n_cols:
        raise ValueError(f"Expected one token per matrix column ({n_cols}), got {len(tokens)} tokens")
    token_level = n_prompt + n_rows == n_cols  # else the columns were merged (words, turns): NaN marks the triangle
    if row_labels is None and not token_level:
        raise ValueError(f"Expected row labels for a matrix whose {n_cols} columns are not {n_prompt} prompt + "
                         f"{n_rows} generated tokens")
    labels = list(row_labels) if row_labels is not None else list(tokens[n_prompt:])
    if len(labels) != n_rows:
        raise ValueError(f"Expected {n_rows} row labels, got {len(labels)}")
    is_special = [False] * n_cols if special is None else [bool(x) for x in (
        special.tolist() if isinstance(special, torch.Tensor) else special)]
    if len(is_special) != n_cols:
        raise ValueError(f"Expected special to have {n_cols} entries, got {len(is_special)}")
    columns = [c for c in range(n_cols) if show_special or not is_special[c]]
    position = {c: j for j, c in enumerate(columns)}
    prob = [None] * n_rows if step_probability is None else [float(p) for p in (
        step_probability.tolist() if isinstance(step_probability, torch.Tensor) else step_probability)]
    m = matrix.detach().double()
    values, shares, adjacent, tops = [], [], [], []
    finite = torch.isfinite(m)
    for t in range(n_rows):
        if token_level:
            extent = n_prompt + t
        else:
            seen = finite[t].nonzero()
            extent = int(seen[-1]) + 1 if len(seen) else 0
        prefix = [c for c in columns if c < extent]
        row = m[t, prefix] if prefix else m.new_zeros(0)
        adj = position.get(extent - 1) if len(prefix) > 1 else None
        row_shares, top = scale_without(row, None if adj is None else prefix.index(extent - 1))
        pad = [None] * (len(columns) - len(prefix))
        values.append([None if math.isnan(v) else v for v in row.tolist()] + pad)
        shares.append(row_shares + pad)
        adjacent.append(adj)
        tops.append(top)
    boundaries = {}
    for start, end, label in spans or []:
        shown = [position[c] for c in range(start, end) if c in position]
        if shown:
            boundaries[shown[0]] = str(label)
    answer = next((position[c] for c in range(n_prompt, n_cols) if c in position), None)
    if answer is not None:
        boundaries.setdefault(answer, "answer")
    heading = title or "Attribution of each generated token"
    if foil is not None:
        heading += f" — rather than {display_token(str(foil))!r}"
    return MatrixLayout(title=heading, columns=columns, column_tokens=[display_token(tokens[c]) for c in columns],
                        row_labels=[display_token(x) for x in labels], probability=prob, values=values,
                        shares=shares, adjacent=adjacent, tops=tops, boundaries=boundaries,
                        hidden=n_cols - len(columns), n_prompt=n_prompt)


_STYLE = (
    "<style>body{font-family:system-ui,sans-serif;margin:1.5em}"
    "table.heat-matrix{border-collapse:collapse;font-size:12px}"
    ".heat-matrix td.c,.heat-matrix td.void{width:20px;min-width:20px;height:20px;padding:0;text-align:center;"
    "border:1px solid #f2f2f2;font-size:10px}"
    ".heat-matrix td.void{background:#fff;border-color:#fff}"
    ".heat-matrix td.adj{outline:2px solid #222;outline-offset:-2px}"
    ".heat-matrix .b{border-left:3px solid #333 !important}"
    ".heat-matrix th.col{vertical-align:bottom;padding:2px 0;font-weight:400}"
    ".heat-matrix th.col div{writing-mode:vertical-rl;transform:rotate(180deg);white-space:pre;"
    "font-family:ui-monospace,monospace;max-height:9em;overflow:hidden}"
    ".heat-matrix th.span{font-weight:600;text-align:left;padding:0 3px;color:#333;border-bottom:1px solid #999}"
    ".heat-matrix th.row{text-align:right;padding:0 6px;white-space:pre;font-family:ui-monospace,monospace;"
    "font-weight:400}"
    ".heat-matrix td.p,.heat-matrix td.fin{padding:0 6px;text-align:right;font-variant-numeric:tabular-nums;"
    "color:#333}"
    ".legend{color:#444;font-size:13px;max-width:60em}</style>"
)


def matrix_table(layout: MatrixLayout) -> str:
    """The HTML ``<table class='heat-matrix'>`` of a layout (what notebooks and :func:`matrix_to_html` show)."""
    parts = ["<table class='heat-matrix'>", "<tr><th></th><th></th>"]
    starts = sorted(layout.boundaries)
    if not starts or starts[0] != 0:
        starts = [0] + starts
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(layout.columns)
        cls = "span b" if start in layout.boundaries else "span"
        parts.append(f"<th class='{cls}' colspan='{end - start}'>"
                     f"{html.escape(layout.boundaries.get(start, ''))}</th>")
    parts.append("<th></th></tr>")
    parts.append("<tr><th class='row'>generated</th><th class='row'>P(y_t)</th>")
    for j, tok in enumerate(layout.column_tokens):
        cls = "col b" if j in layout.boundaries else "col"
        parts.append(f"<th class='{cls}'><div>{html.escape(tok)}</div></th>")
    parts.append("<th class='row'>• prev. token<br>(off scale)</th></tr>")
    for t, label in enumerate(layout.row_labels):
        p = layout.probability[t]
        parts.append(f"<tr><th class='row'>{html.escape(label)}</th>"
                     f"<td class='p'>{'' if p is None else f'{p:.2f}'}</td>")
        for j, (value, share) in enumerate(zip(layout.values[t], layout.shares[t])):
            b = " b" if j in layout.boundaries else ""
            if share is None:
                parts.append(f"<td class='void{b}'></td>")
                continue
            r, g, bl = cell_rgb(share)
            shown = "" if value is None else f"{value:.4g}"
            mark, adj = ("•", " adj") if layout.adjacent[t] == j else ("", "")
            ink = "#fff" if abs(share) > 0.6 else "#222"
            parts.append(f"<td class='c{b}{adj}' style='background:rgb({r},{g},{bl});color:{ink}' "
                         f"title='{html.escape(layout.column_tokens[j])}: {shown}'>{mark}</td>")
        fin = layout.adjacent_value(t)
        parts.append(f"<td class='fin'>{'' if fin is None else f'{fin:.3g}'}</td></tr>")
    parts.append("</table>")
    return "".join(parts)


def matrix_to_html(layout: MatrixLayout) -> str:
    """A self-contained HTML page (no JavaScript) with the matrix heatmap of ``layout`` (:func:`matrix_layout`),
    its title and its legend."""
    return "\n".join([
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(layout.title)}</title>",
        _STYLE + "</head><body>",
        f"<h2>{html.escape(layout.title)}</h2>",
        matrix_table(layout),
        f"<p class='legend'>{html.escape(layout.legend())}</p>",
        "</body></html>",
    ])


def save_matrix_png(layout: MatrixLayout, path: str, dpi: int = 120) -> None:
    """The matrix heatmap of ``layout`` (:func:`matrix_layout`) as a PNG (matplotlib): the same colours, marks and
    legend as :func:`matrix_to_html`."""
    import matplotlib  # lazy: heavy optional dependency, only for PNGs

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(layout.row_labels), len(layout.columns)
    image = torch.full((max(n_rows, 1), max(n_cols, 1), 3), 255, dtype=torch.uint8)
    for t in range(n_rows):
        for j, share in enumerate(layout.shares[t]):
            if share is not None:
                image[t, j] = torch.tensor(cell_rgb(share), dtype=torch.uint8)
    width = min(40.0, max(7.0, 0.2 * n_cols + 3.5))
    height = min(40.0, max(3.5, 0.26 * n_rows + 3.2))
    fig, ax = plt.subplots(figsize=(width, height))
    ax.imshow(image.numpy(), aspect="auto", interpolation="nearest", extent=(-0.5, n_cols - 0.5, n_rows - 0.5, -0.5))
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels([tok if len(tok) <= 12 else tok[:11] + "…" for tok in layout.column_tokens], rotation=90,
                       fontsize=7, family="monospace")
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels([f"{lbl!r}" for lbl in layout.row_labels], fontsize=7, family="monospace")
    ax.tick_params(length=0)
    for j, label in layout.boundaries.items():
        ax.axvline(j - 0.5, color="#333", linewidth=1.6)
        ax.text(j - 0.4, -0.7, label, fontsize=7, fontweight="bold", va="bottom", ha="left")
    for t, j in enumerate(layout.adjacent):
        if j is not None:
            share = layout.shares[t][j] or 0.0
            ax.plot(j, t, marker="o", markersize=2.5, color="white" if abs(share) > 0.6 else "black")
    for t in range(n_rows):
        p, fin = layout.probability[t], layout.adjacent_value(t)
        ax.text(n_cols - 0.3, t, ("" if p is None else f"P={p:.2f}") + ("" if fin is None else f"  • {fin:.3g}"),
                fontsize=6.5, va="center", ha="left", family="monospace")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_title(layout.title, fontsize=10, loc="left", pad=22)
    fig.text(0.01, 0.005, layout.legend(), fontsize=6.5, wrap=True, va="bottom", ha="left")
    fig.tight_layout(rect=(0, 0.1, 0.93, 1))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _ansi(text: str, share: float) -> str:
    r, g, b = cell_rgb(share)
    ink = "255;255;255" if abs(share) > 0.6 else "0;0;0"
    return f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;{ink}m{text}\x1b[0m"


def matrix_to_text(layout: MatrixLayout, color: bool = True, top: int = 3) -> str:
    """The matrix for a terminal: one line per generated token with P(y_t) and the previous token's score (off the
    colour scale). With ``color``, the line shows the prompt and answer so far, each token on a 24-bit ANSI
    background in the colours of the HTML picture (the previous token in [brackets], ``|`` where a turn starts,
    ``||`` where the answer starts); without, it lists the row's ``top`` tokens other than the previous one, and
    the text holds no escape codes."""
    lines = [layout.title]
    if color:
        lines.append("(colour: red +, blue −, each row scaled without the [previous token]; its score after •)")
    else:
        lines.append(f"(top {top} tokens of each row other than the previous token; its score after •)")
    answer = next((j for j, c in enumerate(layout.columns) if c >= layout.n_prompt), None)
    for t, label in enumerate(layout.row_labels):
        p, fin = layout.probability[t], layout.adjacent_value(t)
        head = f"{t + 1:>3} {label!r:<14} " + ("" if p is None else f"P={p:.2f} ")
        tail = "" if fin is None else f"  • {fin:.3g}"
        if color:
            pieces = []
            for j, (share, tok) in enumerate(zip(layout.shares[t], layout.column_tokens)):
                if share is None:
                    break
                if j in layout.boundaries and j > 0:
                    pieces.append("||" if j == answer else "|")
                pieces.append(_ansi(f"[{tok}]" if layout.adjacent[t] == j else tok, share))
            lines.append(head + "│ " + "".join(pieces) + tail)
        else:
            scored = [(v, j) for j, v in enumerate(layout.values[t]) if v is not None and j != layout.adjacent[t]]
            best = sorted(scored, key=lambda x: -x[0])[:top]
            listed = ", ".join(f"{layout.column_tokens[j]!r} {v:.3g}" for v, j in best)
            lines.append(head + "│ " + listed + tail)
    return "\n".join(lines)


class Generation(Protocol):
    """What the views read from a :class:`heat_module.generation_result.GenerationResult` (this module sits below
    it)."""

    tokens: list[str]
    matrix: torch.Tensor
    step_scores: dict[str, torch.Tensor]
    special: torch.Tensor | None
    spans: list[tuple[int, int, str]]
    method: str
    foil: str | None

    @property
    def n_prompt(self) -> int: ...


def generation_arguments(result: Generation, title: str | None = None) -> dict[str, Any]:
    """The arguments of :func:`matrix_layout` for a generation result (default title: "<method>: what each answer
    token was attributed to")."""
    n = int(result.n_prompt)
    labels = getattr(result, "generated_tokens", None)  # the row labels; also right after columns were merged
    return dict(tokens=list(result.tokens), matrix=result.matrix,
                row_labels=list(result.tokens[n:]) if labels is None else list(labels),
                step_probability=(result.step_scores or {}).get("probability"), special=result.special,
                spans=list(result.spans or []), n_prompt=n,
                title=title or f"{result.method}: what each answer token was attributed to", foil=result.foil)


def generation_to_html(result: Generation, title: str | None = None) -> str:
    """:func:`matrix_to_html` of a generation result."""
    return matrix_to_html(matrix_layout(**generation_arguments(result, title)))


def save_generation_png(result: Generation, path: str, title: str | None = None) -> None:
    """:func:`save_matrix_png` of a generation result."""
    save_matrix_png(matrix_layout(**generation_arguments(result, title)), path)


def generation_to_text(result: Generation, color: bool = True, title: str | None = None) -> str:
    """:func:`matrix_to_text` of a generation result."""
    return matrix_to_text(matrix_layout(**generation_arguments(result, title)), color=color)


class MatrixViews:
    """The picture methods of a generation result (mixed into
    :class:`heat_module.generation_result.GenerationResult`; ``self`` has the fields of :class:`Generation`)."""

    def to_html(self, title: str | None = None) -> str:
        """A self-contained HTML page with the matrix heatmap (:func:`matrix_to_html`)."""
        return generation_to_html(self, title)  # type: ignore[arg-type]

    def save_html(self, path: str, title: str | None = None) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_html(title))

    def save_png(self, path: str, title: str | None = None) -> None:
        """The matrix heatmap as a PNG (:func:`save_matrix_png`; needs matplotlib)."""
        save_generation_png(self, path, title)  # type: ignore[arg-type]

    def _repr_html_(self) -> str:
        """What Jupyter shows: the matrix table with its title and legend (the markup of :meth:`to_html`)."""
        return self.to_html()

    def to_text(self, color: bool = True, title: str | None = None) -> str:
        """The matrix for a terminal (:func:`matrix_to_text`): ANSI colours, or the top tokens per row."""
        return generation_to_text(self, color, title)  # type: ignore[arg-type]

    def show(self) -> None:
        """Display the HTML matrix in Jupyter (IPython running), else print the coloured terminal view."""
        display_or_print(self, self.to_text(color=True))
