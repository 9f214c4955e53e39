"""The metrics of the "is HEAT worth choosing?" configurations (:mod:`heat_module.evaluation.choice`).

- :class:`ChoiceScorer` (the first study): on the benchmarks Soft-NC / Soft-NS as ReAGent defines them and on ranks
  (``scores_transform="rank"``: correctness apart from concentration), each over ``len(seeds)`` mask seeds (one mask
  per seed), and ABPC (area between the deletion and insertion curves of P(y), rank-based); on the sets with gold
  tokens (kind ``"alignment"``) DSA and F1 of the top-|gold| tokens.
- :class:`ContextScorer` (the study over the context): every metric over the context (``exclude_last=1``: the final
  token never perturbed nor ranked): Soft-NC / Soft-NS per seed, ABPC with deletion, and on the generated benchmark
  the evidence recalls (:data:`EVIDENCE_METRICS`); DSA and F1 on the alignment sets.

The metric keys are the metric registry's names (``soft_nc``, ``abpc``, ``dsa``, ...) with a suffix for a variant
(``_rank``, ``_seeds``, ``_deletion``). A :class:`RowCacheForward` runs each distinct perturbed row of an example once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from heat_module.evaluation.datasets import EvalExample, dataset
from heat_module.evaluation.pipeline import Scorer
from heat_module.lm.forward import make_forward_fn
from heat_module.metrics.functional import abpc, dsa, f1_alignment, soft_faithfulness

#: the evidence benchmark's recalls (top-k, final token left out): of the evidence, of the evidence with the query
#: sentence left out of the ranking, of the answer word's tokens inside the evidence
EVIDENCE_METRICS = ("recall_evidence", "recall_evidence_noquery", "recall_answer")


class RowCacheForward:
    """``forward_fn`` that computes each distinct (embedding row, mask row) once until :meth:`clear`: the metrics'
    reference rows (the original, the context zeroed) recur for every row and seed of an example, and the rows of all
    methods of one example go through one call per chunk.

    Example:
        >>> import torch
        >>> from heat_module.evaluation.choice_metrics import RowCacheForward
        >>> calls = []
        >>> forward = RowCacheForward(None, fn=lambda x, m: calls.append(len(x)) or x.sum(-1))
        >>> x = torch.ones(2, 3, 2)
        >>> _ = forward(x, torch.tensor([[1, 1, 1], [1, 1, 1]])), forward(x, torch.tensor([[1, 1, 1], [0, 1, 1]]))
        >>> calls  # one distinct row, then the one new row
        [1, 1]
    """

    def __init__(self, model: nn.Module | None, fn: Any = None) -> None:
        self.fn = fn if fn is not None else make_forward_fn(model)
        self.memo: dict[bytes, torch.Tensor] = {}

    def clear(self) -> None:
        self.memo = {}

    def __call__(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        keys = [x[i].detach().cpu().numpy().tobytes() + b"|" + (b"-" if mask is None else
                mask[i].detach().cpu().numpy().astype(np.int8).tobytes()) for i in range(x.shape[0])]
        todo = list(dict.fromkeys(k for k in keys if k not in self.memo))
        if todo:
            where = [keys.index(k) for k in todo]
            out = self.fn(x[where], None if mask is None else mask[where])
            self.memo.update(zip(todo, out))
        return torch.stack([self.memo[k] for k in keys])


def benchmark_metrics(forward: Any, scores: torch.Tensor, x: torch.Tensor, target: int, seeds: Sequence[int],
                  rank_seeds: Sequence[int], abpc_steps: int, batch_size: int) -> dict[str, Any]:
    """Soft-NC / Soft-NS (``none`` and ``rank``, per seed and their mean) and ABPC of (n,) scores on x (1, n, d)."""
    s = scores[None].float()
    out: dict[str, Any] = {}
    for transform, suffix, which in (("none", "", seeds), ("rank", "_rank", rank_seeds)):
        per: dict[str, list[float]] = {"nc": [], "ns": []}
        for seed in which:
            v = soft_faithfulness(s, x, None, forward, ("nc", "ns"), "reagent", 1, seed, batch_size, False,
                                  scores_transform=transform)
            per["nc"].append(float(v["soft_nc"]))
            per["ns"].append(float(v["soft_ns"]))
        for kind in ("nc", "ns"):
            out[f"soft_{kind}{suffix}"] = float(np.mean(per[kind]))
            out[f"soft_{kind}{suffix}_seeds"] = per[kind]
    out["abpc"] = float(abpc(s, x, None, torch.tensor([target], device=x.device), forward, steps=abpc_steps,
                             batch_size=batch_size))
    return out


def free_metrics(scores: torch.Tensor, example: EvalExample) -> dict[str, float]:
    """DSA and F1 of the top-|gold| tokens (examples with gold tokens)."""
    s = scores[None].float().cpu()
    return {"dsa": float(dsa(s, [example.gold], [example.distractor or []])),
            "f1": float(f1_alignment(s, [example.gold])["f1"])}


def context_metrics_batch(forward: Any, scores: torch.Tensor, x: torch.Tensor, example: EvalExample, target: int,
                          seeds: Sequence[int], abpc_steps: int, batch_size: int) -> list[dict[str, Any]]:
    """Over the context (``exclude_last=1``) for R score vectors (R, n) of one example x (1, n, d) at once:
    Soft-NC / Soft-NS per seed and their mean, ABPC with deletion; on the generated benchmark also the evidence
    recalls (:data:`EVIDENCE_METRICS`). The metrics draw their masks per example from its embeddings, so each row
    gets the draws it would get alone."""
    from heat_module.metrics.functional.abpc import abpc_values
    from heat_module.metrics.functional.evidence_recall import evidence_recall_values
    from heat_module.metrics.functional.soft_faithfulness import soft_faithfulness_values

    s = scores.float().to(x.device)
    r = s.shape[0]
    xs = x.expand(r, -1, -1)
    out: list[dict[str, Any]] = [{} for _ in range(r)]
    per: dict[str, list[torch.Tensor]] = {"nc": [], "ns": []}
    for seed in seeds:
        v = soft_faithfulness_values(s, xs, None, forward, kinds=("nc", "ns"), definition="reagent", num_masks=1,
                                     seed=seed, batch_size=batch_size, random_baseline=False, exclude_last=1)
        per["nc"].append(v["soft_nc"])
        per["ns"].append(v["soft_ns"])
    ab = abpc_values(s, xs, None, torch.full((r,), target, dtype=torch.long), forward, steps=abpc_steps,
                     batch_size=batch_size, exclude_last=1, perturbation="deletion")
    for i in range(r):
        for kind in ("nc", "ns"):
            values = [float(t[i]) for t in per[kind]]
            out[i][f"soft_{kind}"] = float(np.mean(values))
            out[i][f"soft_{kind}_seeds"] = values
        out[i]["abpc_deletion"] = float(ab[i])
    if dataset(example.dataset).kind == "evidence":
        c = s.detach().cpu()
        query = [example.metadata["query_tokens"]] * r
        gold = [example.gold] * r
        recalls = dict(zip(EVIDENCE_METRICS, (
            evidence_recall_values(c, gold, exclude_last=1),
            evidence_recall_values(c, gold, exclude_last=1, protected=query),
            evidence_recall_values(c, [example.metadata["answer_tokens"]] * r, exclude_last=1))))
        for i in range(r):
            out[i].update({k: float(v[i]) for k, v in recalls.items()})
    return out


class ChoiceScorer(Scorer):
    """The first study's metrics (see the module docstring).

    Example:
        >>> import torch
        >>> from heat_module.evaluation import EvalExample
        >>> from heat_module.evaluation.choice_metrics import ChoiceScorer
        >>> example = EvalExample("curated", "c0", [4, 29, 65], 38, gold=[1], distractor=[0])
        >>> ChoiceScorer(None).score(example, None, 38, torch.tensor([[0.1, 0.8, 0.1]]), [True])  # alignment set
        [{'dsa': 0.699999988079071, 'f1': 1.0}]
    """

    def __init__(self, model: nn.Module | None, seeds: Sequence[int] = (0, 1, 2), rank_seeds: Sequence[int] = (0,),
                 abpc_steps: int = 4, batch_size: int = 32) -> None:
        self.forward = RowCacheForward(model) if model is not None else None
        self.seeds, self.rank_seeds, self.abpc_steps, self.batch_size = seeds, rank_seeds, abpc_steps, batch_size

    def score(self, example: EvalExample, x: torch.Tensor, target: int, scores: torch.Tensor,
              model_metrics: Sequence[bool], names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        if dataset(example.dataset).kind != "benchmark":
            return [free_metrics(s, example) for s in scores]
        return [benchmark_metrics(self.forward, s, x, target, self.seeds, self.rank_seeds, self.abpc_steps,
                                  self.batch_size) for s in scores]

    def clear(self) -> None:
        if self.forward is not None:
            self.forward.clear()


class ContextScorer(ChoiceScorer):
    """The context study's metrics (see the module docstring): every row of an example in one batch.

    Example:
        >>> import torch
        >>> from heat_module.evaluation import EvalExample
        >>> from heat_module.evaluation.choice_metrics import ContextScorer
        >>> example = EvalExample("lambada", "p0", [4, 29, 65], 38, gold=[1])
        >>> ContextScorer(None).score(example, None, 38, torch.tensor([[0.1, 0.8, 0.1]]), [True])
        [{'dsa': 0.800000011920929, 'f1': 1.0}]
    """

    def score(self, example: EvalExample, x: torch.Tensor, target: int, scores: torch.Tensor,
              model_metrics: Sequence[bool], names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        if dataset(example.dataset).kind == "alignment":
            return [free_metrics(s, example) for s in scores]
        return context_metrics_batch(self.forward, scores, x, example, target, self.seeds, self.abpc_steps,
                                     self.batch_size)
