"""The result type every attribution method returns (HEAT and the baselines alike), and its :class:`Cost`."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from heat_module.lm.forward import score_dtype
from heat_module.viz import ResultsTable, display_or_print, result_to_html, result_to_text, save_png
from heat_module.words import LEVELS, reduce_groups, sentence_groups, span_groups, token_offsets, word_groups

_COUNTERS = ("forward_passes", "forward_equivalents", "hvps", "gradients")


@dataclass
class Cost:
    """What one attribution spent (the cost model is :mod:`heat_module.heat.cost`).

    Attributes:
        forward_passes: forward passes of the model (any length).
        forward_equivalents: compute in units of one forward pass over the full context (FE).
        hvps: Hessian-vector products.
        gradients: input-gradient backward passes.
        seconds: wall time per component (``transition``, ``curvature``, ``information``, ...).
        details: estimator-specific entries (``fisher_k``, ``fisher_mass``, ``lowrank_k``, ``curvature_layers``).

    Serialised by :meth:`to_dict` as one flat dict (the counters, ``seconds``, then the details), the format of
    ``AttributionResult.to_dict()["cost"]``; a cost that counted nothing serialises as ``{}`` (the baselines).
    Read access by key (``cost["hvps"]``, ``cost.get("fisher_k")``) looks at that flat dict.

    Example:
        >>> from heat_module import Cost
        >>> cost = Cost(forward_passes=3, forward_equivalents=3.0)
        >>> cost.add(Cost(gradients=1, forward_equivalents=2.0)).forward_equivalents
        5.0
    """

    forward_passes: int = 0
    forward_equivalents: float = 0.0
    hvps: int = 0
    gradients: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, other: Cost, scale: float = 1.0) -> Cost:
        """Accumulate ``other`` in place and return self: counts and seconds (per key) summed,
        ``forward_equivalents`` × ``scale`` (e.g. a window's FE are in units of its own length), numeric details
        summed, other details kept from the first cost that had them."""
        self.forward_passes += other.forward_passes
        self.forward_equivalents += other.forward_equivalents * scale
        self.hvps += other.hvps
        self.gradients += other.gradients
        for name, t in other.seconds.items():
            self.seconds[name] = self.seconds.get(name, 0.0) + float(t)
        for key, value in other.details.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.details[key] = self.details.get(key, 0) + value
            else:
                self.details.setdefault(key, value)
        return self

    def is_empty(self) -> bool:
        """True when nothing was counted."""
        return not (any(getattr(self, k) for k in _COUNTERS) or self.seconds or self.details)

    def to_dict(self) -> dict:
        """The flat JSON form (``{}`` for an empty cost)."""
        if self.is_empty():
            return {}
        return {**{k: getattr(self, k) for k in _COUNTERS}, "seconds": dict(self.seconds), **self.details}

    @classmethod
    def from_dict(cls, data: dict | Cost | None) -> Cost:
        """Inverse of :meth:`to_dict` (a :class:`Cost` is returned as is)."""
        if isinstance(data, Cost):
            return data
        data = dict(data or {})
        counters = {k: data.pop(k) for k in _COUNTERS if k in data}
        seconds = dict(data.pop("seconds", {}) or {})
        return cls(**counters, seconds=seconds, details=data)

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())


@dataclass
class AttributionResult:
    """Token-level attribution of one next-token prediction (or of a target sentence, eq. 23–24).

    Attributes:
        tokens: the n context tokens as strings.
        token_ids: (n,) the context token ids.
        target: the target token as a string (several targets are joined for sentence-level results).
        target_id: the target token id (the first one for sentence-level results).
        scores: (n,) Attr_i (eq. 5) — raw, not normalised.
        transition: (n,) the gate M (sums to one) or ``None`` for methods without it.
        curvature: (n,) S_i (eq. 3) or ``None``.
        information: (n,) I_i (eq. 4) or ``None``.
        first_order: (n,) ‖∇_{x_i} g‖₁ when α > 0, else ``None``.
        method: the method's name (``"heat"``, ``"integrated_gradients"``, ...).
        config: the configuration that produced it, as a dict.
        cost: forward passes, HVPs, gradients and wall time per component (:class:`Cost`).
        extra: method-specific extras (e.g. target ids of a sentence, window leakage).

    Example:
        >>> from heat_module import HEAT
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> res = HEAT(tiny_model("llama"), tiny_tokenizer()).attribute("the cat sat on the")
        >>> res.tokens, res.scores.shape, res.curvature is None  # the default config computes S (Fisher)
        (['the', 'cat', 'sat', 'on', 'the'], torch.Size([5]), False)
        >>> [token for _, token, _ in res.topk(2)]
        ['sat', 'on']
        >>> res.aggregate([(0, 2), (2, 5)]).tokens  # token spans merged (sum of their scores)
        ['thecat', 'satonthe']
    """

    tokens: list[str]
    token_ids: torch.Tensor
    target: str
    target_id: int
    scores: torch.Tensor
    transition: torch.Tensor | None = None
    curvature: torch.Tensor | None = None
    information: torch.Tensor | None = None
    first_order: torch.Tensor | None = None
    method: str = "heat"
    config: dict = field(default_factory=dict)
    cost: Cost = field(default_factory=Cost)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cost = Cost.from_dict(self.cost)
        n = len(self.tokens)
        for name in ("token_ids", "scores", "transition", "curvature", "information", "first_order"):
            value = getattr(self, name)
            if value is not None and value.shape != (n,):
                raise ValueError(f"Expected {name} of shape ({n},) to match {n} tokens, got {tuple(value.shape)}")

    def __len__(self) -> int:
        return len(self.tokens)

    def topk(self, k: int = 5) -> list[tuple[int, str, float]]:
        """The k highest-scoring tokens as ``(index, token, score)``, best first."""
        k = min(k, len(self.tokens))
        values, index = torch.topk(self.scores.to(score_dtype(self.scores.dtype)), k)
        return [(int(i), self.tokens[int(i)], float(v)) for v, i in zip(values, index)]

    def normalized(self) -> torch.Tensor:
        """(n,) scores clipped at 0 and normalised to sum to one (uniform if all are 0)."""
        s = self.scores.float().clamp_min(0)
        total = s.sum()
        return s / total if total > 0 else torch.full_like(s, 1.0 / max(len(s), 1))

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (tensors become lists of floats; NaN/inf become None; ``dtype`` is the scores'
        dtype, float64 for fp64 models and float32 otherwise, so :meth:`from_dict` gives back the same values)."""
        dtype = score_dtype(self.scores.dtype)

        def conv(t: torch.Tensor | None) -> list | None:
            if t is None:
                return None
            return [None if not math.isfinite(x) else x for x in t.detach().to(dtype).cpu().tolist()]

        return {
            "method": self.method,
            "tokens": list(self.tokens),
            "token_ids": [int(x) for x in self.token_ids.tolist()],
            "target": self.target,
            "target_id": int(self.target_id),
            "scores": conv(self.scores),
            "transition": conv(self.transition),
            "curvature": conv(self.curvature),
            "information": conv(self.information),
            "first_order": conv(self.first_order),
            "config": self.config,
            "cost": self.cost.to_dict(),
            "extra": self.extra,
            "dtype": str(dtype).removeprefix("torch."),
        }

    @classmethod
    def from_dict(cls, data: dict) -> AttributionResult:
        """Inverse of :meth:`to_dict`."""
        dtype = {"float32": torch.float32, "float64": torch.float64}[data.get("dtype", "float32")]

        def conv(v: list | None) -> torch.Tensor | None:
            if v is None:
                return None
            return torch.tensor([float("nan") if x is None else x for x in v], dtype=dtype)

        return cls(
            tokens=list(data["tokens"]),
            token_ids=torch.tensor(data["token_ids"], dtype=torch.long),
            target=data["target"],
            target_id=int(data["target_id"]),
            scores=conv(data["scores"]),
            transition=conv(data.get("transition")),
            curvature=conv(data.get("curvature")),
            information=conv(data.get("information")),
            first_order=conv(data.get("first_order")),
            method=data.get("method", "heat"),
            config=data.get("config", {}),
            cost=Cost.from_dict(data.get("cost")),
            extra=data.get("extra", {}),
        )

    def to_html(self, title: str | None = None) -> str:
        """A self-contained HTML heatmap of the scores (see :mod:`heat_module.viz`)."""
        return result_to_html(self, title=title)

    def save_html(self, path: str, title: str | None = None) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_html(title=title))

    def save_png(self, path: str, title: str | None = None) -> None:
        """A PNG heatmap in the style of the paper's Figures 4–6 (see :mod:`heat_module.viz`)."""
        save_png(self, path, title=title)

    def _repr_html_(self) -> str:
        """What Jupyter shows: the heatmap with the target and the top tokens (the markup of :meth:`to_html`)."""
        return self.to_html()

    def show(self) -> None:
        """Display the heatmap in Jupyter (IPython running), else print a plain-text table of the top tokens."""
        display_or_print(self, result_to_text(self))

    def aggregate(
        self,
        level: str | Sequence[tuple[int, int]] = "words",
        reduce: str = "sum",
        tokenizer: object | None = None,
    ) -> AttributionResult:
        """Merge the token scores into words, sentences or given token spans (the rule: :mod:`heat_module.words`).

        Args:
            level: ``"words"`` (maximal non-whitespace runs: as many as ``text.split()``), ``"sentences"``, or
                token spans ``[(a, b), ...]`` (tokens outside every span stay on their own).
            reduce: ``"sum"`` (default: a word's score is the total of its pieces), ``"max"`` or ``"mean"``.
            tokenizer: a fast tokenizer whose offsets place the tokens in the decoded text (default: the lengths
                of the token strings, right for byte-level BPE tokenizers whose pieces decode with their spaces;
                pass the tokenizer for word-level or SentencePiece tokenizers whose pieces decode without them).
        Returns:
            A new result over the groups: ``tokens`` the merged strings, ``token_ids`` each group's first id,
            ``scores`` and every component reduced the same way; ``extra["level"]``, ``extra["reduce"]`` and
            ``extra["groups"]`` (the token indices of each group) say how.
        """
        if isinstance(level, str):
            if level not in LEVELS:
                raise ValueError(f"Expected level to be one of {list(LEVELS)} or token spans, got {level!r}")
            text, offsets = token_offsets(self.tokens, self.token_ids.tolist(), tokenizer)
            groups = (word_groups if level == "words" else sentence_groups)(text, offsets)
            pieces = [text[offsets[g[0]][0]:offsets[g[-1]][1]] for g in groups]
            name = level
        else:
            groups = span_groups(len(self.tokens), level)
            pieces = ["".join(self.tokens[i] for i in g) for g in groups]
            name = "spans"
        groups = [g for g in groups if g]

        def red(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else reduce_groups(t.to(score_dtype(t.dtype)), groups, reduce)

        if len(pieces) != len(groups):
            pieces = ["".join(self.tokens[i] for i in g) for g in groups]
        return AttributionResult(
            tokens=pieces,
            token_ids=self.token_ids[[g[0] for g in groups]].clone(),
            target=self.target,
            target_id=self.target_id,
            scores=red(self.scores),
            transition=red(self.transition),
            curvature=red(self.curvature),
            information=red(self.information),
            first_order=red(self.first_order),
            method=self.method,
            config=dict(self.config),
            cost=self.cost,
            extra={**self.extra, "level": name, "reduce": reduce, "groups": groups},
        )

    def to_inseq(self, path: str) -> None:
        """Write inseq's saved JSON format (see :func:`heat_module.interop.inseq.save_inseq`)."""
        from heat_module.interop.inseq import save_inseq  # lazy: interop is an optional leaf

        save_inseq([self], path)

    def to_dataframe(self):
        """One row per context token (see :func:`heat_module.interop.pandas.results_to_dataframe`); needs pandas."""
        from heat_module.interop.pandas import results_to_dataframe  # lazy: pandas is optional

        return results_to_dataframe([self])


class ResultList(list):
    """A list of :class:`AttributionResult` (what :meth:`HEAT.attribute_batch` returns) that renders as one table
    in Jupyter and exports as a whole; otherwise a plain ``list``.

    Example:
        >>> from heat_module import HEAT
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> tok = tiny_tokenizer()
        >>> batch = tok(["the cat sat on the", "the dog ran"], return_tensors="pt", padding=True)
        >>> results = HEAT(tiny_model("llama"), tok).attribute_batch(batch["input_ids"], batch["attention_mask"])
        >>> type(results).__name__, [len(r) for r in results]
        ('ResultList', [5, 3])
    """

    def table(self, title: str | None = None) -> ResultsTable:
        return ResultsTable(self, title)

    def _repr_html_(self) -> str:
        return self.table().to_html()

    def show(self) -> None:
        """Display the table in Jupyter, else print one text table per result."""
        table = self.table()
        display_or_print(table, str(table))

    def to_inseq(self, path: str) -> None:
        from heat_module.interop.inseq import save_inseq  # lazy: interop is an optional leaf

        save_inseq(list(self), path)

    def to_dataframe(self):
        from heat_module.interop.pandas import results_to_dataframe  # lazy: pandas is optional

        return results_to_dataframe(list(self))
