"""The result type every attribution method returns (HEAT and the baselines alike)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


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
        cost: forward passes, HVPs, gradients and wall time per component.
        extra: method-specific extras (e.g. target ids of a sentence, window leakage).
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
    cost: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
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
        values, index = torch.topk(self.scores.float(), k)
        return [(int(i), self.tokens[int(i)], float(v)) for v, i in zip(values, index)]

    def normalized(self) -> torch.Tensor:
        """(n,) scores clipped at 0 and normalised to sum to one (uniform if all are 0)."""
        s = self.scores.float().clamp_min(0)
        total = s.sum()
        return s / total if total > 0 else torch.full_like(s, 1.0 / max(len(s), 1))

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (tensors become lists of floats; NaN/inf become None)."""

        def conv(t: torch.Tensor | None) -> list | None:
            if t is None:
                return None
            return [None if not math.isfinite(x) else x for x in t.detach().float().cpu().tolist()]

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
            "cost": self.cost,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict) -> AttributionResult:
        """Inverse of :meth:`to_dict`."""

        def conv(v: list | None) -> torch.Tensor | None:
            if v is None:
                return None
            return torch.tensor([float("nan") if x is None else x for x in v], dtype=torch.float32)

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
            cost=data.get("cost", {}),
            extra=data.get("extra", {}),
        )

    def to_html(self, title: str | None = None) -> str:
        """A self-contained HTML heatmap of the scores (see :mod:`heat_module.viz`)."""
        from heat_module.viz import result_to_html

        return result_to_html(self, title=title)

    def save_html(self, path: str, title: str | None = None) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_html(title=title))

    def save_png(self, path: str, title: str | None = None) -> None:
        """A PNG heatmap in the style of the paper's Figures 4–6 (see :mod:`heat_module.viz`)."""
        from heat_module.viz import save_png

        save_png(self, path, title=title)
