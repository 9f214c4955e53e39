"""The result of attributing a generated answer: :class:`GenerationResult`, a T × (n + T) matrix.

Row t is the next-token attribution of generated token y_t over the n prompt tokens and y_1..y_{t-1} (what the
method's ``attribute(prefix_t, target=y_t)`` returns); columns at and beyond n + t are NaN (the empty causal
triangle). Each row also carries its step scores: P(y_t), the rank of y_t in the next-token distribution (0 = the
argmax) and that distribution's entropy in nats. Chat-template and other special tokens are flagged in ``special``
and turns are labelled ``spans``; the sentence-level aggregation of eq. 23–24 (:meth:`GenerationResult.sentence`)
reads its rows.

Saved with :meth:`GenerationResult.save` as one safetensors file: the tensors (matrix, ids, flags, step scores, the
kept per-step components) as tensors and everything else (tokens, spans, method, options, extras) as JSON in the
file's metadata; nothing is pickled, and :meth:`GenerationResult.load` gives back equal tensors and fields.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from heat_module.result import AttributionResult, Cost
from heat_module.viz_matrix import MatrixViews
from heat_module.words import LEVELS, REDUCES, sentence_groups, span_groups, token_offsets, word_groups

STEP_SCORES: tuple[str, ...] = ("probability", "rank", "entropy")
_COMPONENTS = ("scores", "transition", "curvature", "information", "first_order")
_FORMAT = "heat-generation-result/1"


@dataclass
class GenerationResult(MatrixViews):
    """Attribution of every generated token to the prompt and the answer so far.

    Pictures (from :class:`heat_module.viz_matrix.MatrixViews`): ``to_html``, ``save_html``, ``save_png``,
    ``_repr_html_`` (Jupyter), ``to_text(color=True)`` (terminal) and ``show()`` — a matrix heatmap with P(y_t)
    beside each row, the causal triangle blank, turn boundaries marked and special tokens hidden.

    Attributes:
        prompt_ids: (n,) the prompt's token ids.
        generated_ids: (T,) the generated (or given) answer's token ids.
        tokens: the n + T column labels (prompt tokens then answer tokens; merged pieces after :meth:`aggregate`).
        matrix: (T, columns) row t = the attribution of y_t; NaN where column >= n + t (the causal triangle).
        step_scores: ``"probability"`` P(y_t), ``"rank"`` (0 = argmax), ``"entropy"`` (nats), each (T,).
        special: (columns,) bool, True for chat-template / special tokens (left out of normalisation by default).
        spans: turn spans ``(start, end, label)`` over the columns; empty for plain text.
        method: the attribution method's name.
        options: the method's options / config.
        foil: the contrast token of a contrastive explanation, else None.
        rows: the per-step :class:`AttributionResult` (with components) when kept, else None.
        extra: ``cost`` (summed :class:`Cost` dict), ``prompt_columns`` and ``groups`` after :meth:`aggregate`, ...

    Example:
        >>> from heat_module import HEAT
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> heat = HEAT(tiny_model("llama"), tiny_tokenizer())
        >>> answer = heat.attribute_generation("the cat sat on the", max_new_tokens=3)  # any method's, alike
        >>> answer.matrix.shape, len(answer.tokens)  # T rows over the n + T columns, NaN above the causal diagonal
        (torch.Size([3, 8]), 8)
        >>> sorted(answer.step_scores)
        ['entropy', 'probability', 'rank']
    """

    prompt_ids: torch.Tensor
    generated_ids: torch.Tensor
    tokens: list[str]
    matrix: torch.Tensor
    step_scores: dict[str, torch.Tensor] = field(default_factory=dict)
    special: torch.Tensor | None = None
    spans: list[tuple[int, int, str]] = field(default_factory=list)
    method: str = "heat"
    options: dict = field(default_factory=dict)
    foil: str | None = None
    rows: list[AttributionResult] | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prompt_ids = torch.as_tensor(self.prompt_ids, dtype=torch.long).flatten()
        self.generated_ids = torch.as_tensor(self.generated_ids, dtype=torch.long).flatten()
        t, columns = self.T, len(self.tokens)
        if self.matrix.dim() != 2 or tuple(self.matrix.shape) != (t, columns):
            raise ValueError(f"Expected matrix of shape ({t}, {columns}) (generated tokens, columns), "
                             f"got {tuple(self.matrix.shape)}")
        if self.special is None:
            self.special = torch.zeros(columns, dtype=torch.bool)
        if tuple(self.special.shape) != (columns,):
            raise ValueError(f"Expected special of shape ({columns},), got {tuple(self.special.shape)}")
        for name, value in self.step_scores.items():
            if tuple(value.shape) != (t,):
                raise ValueError(f"Expected step score {name!r} of shape ({t},), got {tuple(value.shape)}")
        if self.rows is not None and len(self.rows) != t:
            raise ValueError(f"Expected {t} rows (one per generated token), got {len(self.rows)}")
        self.spans = [(int(a), int(b), str(label)) for a, b, label in self.spans]

    # ------------------------------------------------------------------ shape
    @property
    def n_prompt(self) -> int:
        """The number of prompt columns (n, or the merged prompt groups after :meth:`aggregate`)."""
        return int(self.extra.get("prompt_columns", self.prompt_ids.numel()))

    @property
    def T(self) -> int:  # noqa: N802 - the paper's symbol
        """The number of generated tokens (rows)."""
        return int(self.generated_ids.numel())

    @property
    def generated_tokens(self) -> list[str]:
        """The T row labels (the generated tokens)."""
        return list(self.extra.get("generated_tokens", self.tokens[self.prompt_ids.numel():]))

    @property
    def cost(self) -> Cost:
        """What all rows spent together."""
        return Cost.from_dict(self.extra.get("cost"))

    def __len__(self) -> int:
        return self.T

    # ------------------------------------------------------------------ rows
    def row(self, t: int) -> AttributionResult:
        """Row t as an :class:`AttributionResult` over its columns (prompt and y_1..y_{t-1}): the kept per-step
        result when there is one, else built from the matrix."""
        if not -self.T <= t < self.T:
            raise IndexError(f"Expected a step in [0, {self.T}), got {t}")
        t = t % self.T
        if self.rows is not None and "groups" not in self.extra:
            return self.rows[t]
        values = self.matrix[t]
        k = int((~torch.isnan(values)).sum())
        columns_ids = self.column_ids()
        return AttributionResult(
            tokens=list(self.tokens[:k]),
            token_ids=columns_ids[:k].clone(),
            target=self.generated_tokens[t],
            target_id=int(self.generated_ids[t]),
            scores=values[:k].clone(),
            method=self.method,
            config=dict(self.options),
            extra={"step": t, **({"foil": self.foil} if self.foil is not None else {})},
        )

    def column_ids(self) -> torch.Tensor:
        """(columns,) the token id of each column (a merged group's first id)."""
        ids = torch.cat([self.prompt_ids, self.generated_ids])
        groups = self.extra.get("groups")
        return ids if groups is None else ids[[g[0] for g in groups]]

    def normalized(self, keep_special: bool | None = None) -> torch.Tensor:
        """(T, columns) each row clipped at 0 and normalised to sum to one over its columns; special columns are
        set to 0 and left out of the sum unless ``keep_special`` (default: ``extra["keep_special"]``, the option the
        result was made with, else False); the causal triangle stays NaN."""
        if keep_special is None:
            keep_special = bool(self.extra.get("keep_special", False))
        m = self.matrix.float().clamp_min(0)
        if not keep_special:
            m = m.masked_fill(self.special[None, :], 0.0)
        total = torch.nansum(m, dim=1, keepdim=True)
        return torch.where(total > 0, m / total.clamp_min(torch.finfo(m.dtype).tiny), m)

    def sentence(self, how: str = "mean", spans: Sequence[tuple[int, int]] | None = None,
                 target_spans: Sequence[tuple[int, int]] | None = None) -> AttributionResult:
        """Sentence-level attribution over the prompt (eq. 23 ``"mean"``, ``"max"``, ``"sum"``; eq. 24 with
        ``spans``); see :func:`heat_module.sentence_level.sentence_from_generation`."""
        from heat_module.sentence_level import sentence_from_generation  # lazy: it aggregates this class

        return sentence_from_generation(self, how, spans, target_spans)

    # ------------------------------------------------------------------ aggregation
    def aggregate(self, level: str | Sequence[tuple[int, int]] = "words", reduce: str = "sum",
                  tokenizer: object | None = None) -> GenerationResult:
        """Merge columns into words, sentences, turns or given token spans (rows unchanged).

        Args:
            level: ``"words"`` / ``"sentences"`` (grouped separately in the prompt and in the answer, the rule of
                :mod:`heat_module.words`), ``"turns"`` (the turn spans; uncovered tokens stay alone), or token
                spans ``[(a, b), ...]`` over the columns.
            reduce: ``"sum"`` | ``"max"`` | ``"mean"`` over a group's columns that are not NaN in that row (a
                group wholly beyond the row's prefix stays NaN).
            tokenizer: passed to :func:`heat_module.words.token_offsets`.
        Returns:
            A new result over the groups; ``extra["groups"]`` holds each group's column indices,
            ``extra["prompt_columns"]`` the number of prompt groups; ``special`` is True where every member is.
        """
        if "groups" in self.extra:
            raise ValueError("Expected a token-level result to aggregate, got one already aggregated")
        if reduce not in REDUCES:
            raise ValueError(f"Expected reduce to be one of {list(REDUCES)}, got {reduce!r}")
        n, total = self.prompt_ids.numel(), len(self.tokens)
        ids = torch.cat([self.prompt_ids, self.generated_ids]).tolist()
        if isinstance(level, str) and level in LEVELS:
            finder = word_groups if level == "words" else sentence_groups
            groups = []
            for a, b in ((0, n), (n, total)):
                if a == b:
                    continue
                text, offsets = token_offsets(self.tokens[a:b], ids[a:b], tokenizer)
                groups += [[a + i for i in g] for g in finder(text, offsets) if g]
        elif isinstance(level, str) and level == "turns":
            groups = span_groups(total, [(a, b) for a, b, _ in self.spans])
        elif isinstance(level, str):
            raise ValueError(f"Expected level to be one of {list(LEVELS) + ['turns']} or token spans, got {level!r}")
        else:
            groups = span_groups(total, [(int(a), int(b)) for a, b in level])
        groups = [list(g) for g in groups if g]
        if any(g[0] < n <= g[-1] for g in groups):
            raise ValueError("Expected every group to lie in the prompt or in the answer, got one across both")
        labels = {(a, b): label for a, b, label in self.spans}
        pieces = []
        for g in groups:
            label = labels.get((g[0], g[-1] + 1)) if level == "turns" else None
            pieces.append(label if label is not None else "".join(self.tokens[i] for i in g))
        matrix = torch.stack([reduce_nan(self.matrix[:, g], reduce) for g in groups], dim=1)
        special = torch.tensor([bool(self.special[g].all()) for g in groups], dtype=torch.bool)
        index = {i: k for k, g in enumerate(groups) for i in g}
        spans = [(index[a], index[b - 1] + 1, label) for a, b, label in self.spans]
        extra = {**self.extra, "groups": groups, "prompt_columns": sum(1 for g in groups if g[0] < n),
                 "generated_tokens": self.generated_tokens, "level": level if isinstance(level, str) else "spans",
                 "reduce": reduce}
        return GenerationResult(self.prompt_ids.clone(), self.generated_ids.clone(), pieces, matrix,
                                {k: v.clone() for k, v in self.step_scores.items()}, special, spans, self.method,
                                dict(self.options), self.foil, None, extra)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """A JSON-serialisable dict (tensors as lists; NaN as None); :meth:`from_dict` inverts it (float values
        pass through Python floats, so float32 tensors come back exactly)."""

        def conv(x: torch.Tensor) -> list:
            values = x.detach().cpu().tolist()
            if x.is_floating_point():
                return _nan_to_none(values)
            return values

        return {
            "format": _FORMAT,
            "prompt_ids": conv(self.prompt_ids),
            "generated_ids": conv(self.generated_ids),
            "tokens": list(self.tokens),
            "matrix": conv(self.matrix),
            "matrix_dtype": str(self.matrix.dtype).removeprefix("torch."),
            "step_scores": {k: conv(v) for k, v in self.step_scores.items()},
            "step_dtypes": {k: str(v.dtype).removeprefix("torch.") for k, v in self.step_scores.items()},
            "special": [bool(s) for s in self.special.tolist()],
            "spans": [list(s) for s in self.spans],
            "method": self.method,
            "options": self.options,
            "foil": self.foil,
            "rows": None if self.rows is None else [r.to_dict() for r in self.rows],
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict) -> GenerationResult:
        """Inverse of :meth:`to_dict`."""
        if data.get("format") != _FORMAT:
            raise ValueError(f"Expected a dict with format {_FORMAT!r}, got {data.get('format')!r}")

        def conv(v: list, dtype: str) -> torch.Tensor:
            return torch.tensor(_none_to_nan(v), dtype=getattr(torch, dtype))

        tokens = list(data["tokens"])
        matrix = conv(data["matrix"], data["matrix_dtype"]).reshape(len(data["generated_ids"]), len(tokens))
        return cls(
            prompt_ids=torch.tensor(data["prompt_ids"], dtype=torch.long),
            generated_ids=torch.tensor(data["generated_ids"], dtype=torch.long),
            tokens=tokens,
            matrix=matrix,
            step_scores={k: conv(v, data["step_dtypes"][k]) for k, v in data["step_scores"].items()},
            special=torch.tensor(data["special"], dtype=torch.bool),
            spans=[tuple(s) for s in data["spans"]],
            method=data["method"],
            options=data["options"],
            foil=data["foil"],
            rows=None if data["rows"] is None else [AttributionResult.from_dict(r) for r in data["rows"]],
            extra=data["extra"],
        )

    def save(self, path: str | Path) -> None:
        """Write one safetensors file: tensors as tensors, the rest as JSON metadata (no pickle)."""
        from safetensors.torch import save_file

        tensors = {"prompt_ids": self.prompt_ids, "generated_ids": self.generated_ids, "matrix": self.matrix,
                   "special": self.special}
        tensors.update({f"step_scores.{k}": v for k, v in self.step_scores.items()})
        rows_meta = None
        if self.rows is not None:
            rows_meta = []
            for t, r in enumerate(self.rows):
                meta = r.to_dict()
                for name in (*_COMPONENTS, "token_ids"):
                    value = getattr(r, name)
                    meta[name] = None if value is None else True
                    if value is not None:
                        tensors[f"rows.{t}.{name}"] = value
                rows_meta.append(meta)
        meta = {k: v for k, v in self.to_dict().items()
                if k not in ("prompt_ids", "generated_ids", "matrix", "special", "step_scores", "rows")}
        meta["rows"] = rows_meta
        meta["step_names"] = list(self.step_scores)
        tensors = {k: v.detach().cpu().clone() for k, v in tensors.items()}  # clone: rows may share storage
        save_file(tensors, str(path), metadata={"format": _FORMAT, "json": json.dumps(meta, allow_nan=True)})

    @classmethod
    def load(cls, path: str | Path) -> GenerationResult:
        """Read what :meth:`save` wrote (equal tensors, tokens, spans, options, rows)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != _FORMAT:
                raise ValueError(f"Expected a {_FORMAT!r} safetensors file, got format {metadata.get('format')!r}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
        meta = json.loads(metadata["json"])
        rows = None
        if meta["rows"] is not None:
            rows = []
            for t, data in enumerate(meta["rows"]):
                fields = {name: tensors.get(f"rows.{t}.{name}") for name in (*_COMPONENTS, "token_ids")}
                rows.append(AttributionResult(
                    tokens=list(data["tokens"]), target=data["target"], target_id=int(data["target_id"]),
                    method=data["method"], config=data["config"], cost=Cost.from_dict(data["cost"]),
                    extra=data["extra"], **fields))
        return cls(
            prompt_ids=tensors["prompt_ids"], generated_ids=tensors["generated_ids"], tokens=list(meta["tokens"]),
            matrix=tensors["matrix"], step_scores={k: tensors[f"step_scores.{k}"] for k in meta["step_names"]},
            special=tensors["special"], spans=[tuple(s) for s in meta["spans"]], method=meta["method"],
            options=meta["options"], foil=meta["foil"], rows=rows, extra=meta["extra"])

    # ------------------------------------------------------------------ exchange
    def to_inseq(self, path: str | Path, info: dict[str, Any] | None = None) -> None:
        """Write inseq's saved JSON (one decoder-only sequence, every step; see
        :func:`heat_module.interop.inseq.save_inseq_generation`)."""
        from heat_module.interop.inseq import save_inseq_generation  # lazy: interop is an optional leaf

        save_inseq_generation([self], path, info)

    def to_dataframe(self):
        """The long table: one row per (step, column) inside the causal prefix (see
        :func:`heat_module.interop.pandas.generation_to_dataframe`); needs pandas."""
        from heat_module.interop.pandas import generation_to_dataframe  # lazy: pandas is optional

        return generation_to_dataframe(self)


def reduce_nan(values: torch.Tensor, reduce: str) -> torch.Tensor:
    """(T, k) -> (T,) ``reduce`` over the non-NaN entries of each row; NaN where a row has none."""
    finite = ~torch.isnan(values)
    filled = values.nan_to_num(0.0)
    count = finite.sum(1)
    if reduce == "sum":
        out = filled.sum(1)
    elif reduce == "mean":
        out = filled.sum(1) / count.clamp_min(1)
    else:
        out = values.masked_fill(~finite, -math.inf).max(1).values
    return out.masked_fill(count == 0, math.nan)


def _nan_to_none(values: Any) -> Any:
    if isinstance(values, list):
        return [_nan_to_none(v) for v in values]
    return None if isinstance(values, float) and not math.isfinite(values) else values


def _none_to_nan(values: Any) -> Any:
    if isinstance(values, list):
        return [_none_to_nan(v) for v in values]
    return math.nan if values is None else values
