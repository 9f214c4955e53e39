"""Attribution metrics as torchmetrics classes; functional forms in :mod:`heat_module.metrics.functional`.

Definitions: docs/design.md, "Metrics". Model-based metrics take ``forward_fn =
heat_module.lm.forward.make_forward_fn(model)`` at construction, so they work with any model, and update with
``(scores (batch, n), inputs_embeds (batch, n, d), attention_mask (batch, n) | None, target_ids (batch,))``.
Scores may come from any method; padding positions are ignored.

- Soft-NC / Soft-NS with a random baseline and ln(method / random): ``SoftNC``, ``SoftNS``, ``SoftFaithfulness``
  (both at once; functional ``soft_nc``, ``soft_ns``, ``soft_faithfulness``). Higher is better.
- Soft-NC / Soft-NS on ranks or at a fixed entropy (``scores_transform="rank"|"entropy"``): correctness apart
  from concentration.
- AOPC comprehensiveness: ``AOPC`` (``aopc``). Higher is better.
- ABPC, the area between the deletion and insertion curves of P(y) (AttnLRP's faithfulness): ``ABPC`` (``abpc``).
  Higher is better; rank-based, so peaked scores gain nothing.
- Over the context: Soft-NC/NS, AOPC and ABPC take ``exclude_last=k`` (the final k tokens never perturbed nor
  ranked, scores renormalised over the rest) and ``protected`` positions in ``update``; AOPC and ABPC take
  ``perturbation="zero"|"deletion"`` (:mod:`heat_module.metrics.functional.context`). ``functional.
  position_controlled``: a method's per-example values minus the position prior's.
- DSA: ``DSA`` (``dsa``). Higher is better.
- Evidence recall: ``EvidenceRecall`` (``evidence_recall``): top-k recall of known evidence tokens among the
  context tokens (final token left out). Higher is better.
- F1 / Span-F1 alignment: ``F1Alignment`` (``f1_alignment``). Higher is better.
- Sensitivity under embedding noise: ``Sensitivity`` (``sensitivity``). Lower is better.
- Active/passive Spearman ρ: ``ActivePassiveRobustness`` (``active_passive_robustness``). Higher is better.

Every class declares its registry entry beside it (:func:`~heat_module.metrics.registry.register_metric`: name,
title, what it needs, its functional form); ``available_metrics()`` lists them and ``metric_entry(name)`` builds one.
"""

from heat_module.metrics import functional
from heat_module.metrics.abpc import ABPC
from heat_module.metrics.aopc import AOPC
from heat_module.metrics.dsa import DSA
from heat_module.metrics.evidence_recall import EvidenceRecall
from heat_module.metrics.f1_alignment import F1Alignment
from heat_module.metrics.registry import available_metrics, metric_entries, metric_entry, register_metric
from heat_module.metrics.sensitivity import Sensitivity
from heat_module.metrics.soft_faithfulness import SoftFaithfulness, SoftNC, SoftNS
from heat_module.metrics.spearman import ActivePassiveRobustness

__all__ = [
    "ABPC",
    "AOPC",
    "DSA",
    "EvidenceRecall",
    "ActivePassiveRobustness",
    "F1Alignment",
    "Sensitivity",
    "SoftFaithfulness",
    "SoftNC",
    "SoftNS",
    "available_metrics",
    "functional",
    "metric_entries",
    "metric_entry",
    "register_metric",
]
