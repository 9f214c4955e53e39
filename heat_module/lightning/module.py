"""Lightning integration: :class:`HEATModule`, :class:`HEATPredictMixin` and the batch orchestration they share.

The module only orchestrates — batching in, results out, metrics updated; the math lives in
:mod:`heat_module.heat` (and in the baselines / metrics packages); methods are built by name through the one
registry, :mod:`heat_module.attribution.registry`.

Batches are the dicts of :mod:`heat_module.data.collate` (``input_ids`` and ``attention_mask`` (batch, n) left
padded, optional ``target_ids`` (batch,) with -1 = greedy, ``ids``, ``metadata``, ``gold_mask`` /
``distractor_mask`` (batch, n) and ``has_gold`` (batch,)). ``predict_step`` returns **one item per example that
was attributed, in batch order**: an :class:`~heat_module.AttributionResult` whose ``extra["id"]`` is the example's
id (and ``extra["metadata"]`` its metadata, when the batch has some), or — only with ``skip_bad_examples=True`` —
an :class:`ExampleError` for an example that failed. Examples whose id a resumable callback (the
:class:`~heat_module.AttributionWriter`) lists in ``done_ids`` are left out before any compute.

HEAT differentiates through the model, so it needs autograd: run it under ``Trainer(inference_mode=False)``;
``predict_step`` / ``test_step`` turn grad mode on themselves and raise a clear error under inference mode.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics.aggregation import SumMetric

from heat_module.attribution.registry import build
from heat_module.config import HEATConfig
from heat_module.hashing import stable_hash
from heat_module.lm.forward import check_left_padding, embed, make_forward_fn
from heat_module.lm.loading import load_model
from heat_module.lm.offload import is_dispatched
from heat_module.metrics.registry import INPUTS, available_metrics, default_metrics, metric_entry
from heat_module.result import AttributionResult

INFERENCE_MODE_ERROR = (
    "Expected autograd to be available (HEAT differentiates through the model), got torch.inference_mode enabled: "
    "use Trainer(inference_mode=False) (in a LightningCLI config: `trainer: {inference_mode: false}`)"
)


@dataclass
class ExampleError:
    """An example that failed under ``skip_bad_examples=True`` (the writer puts it in the errors shard)."""

    id: str | None
    error: str
    error_type: str
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "error": self.error, "error_type": self.error_type, "metadata": self.metadata}


def get_attributor(method: str, model: nn.Module, tokenizer: Any, config: HEATConfig | None,
                   **options: Any) -> Any:
    """The attributor of ``method`` from the one registry (:func:`heat_module.attribution.registry.build`): HEAT
    takes ``config``, a baseline its ``options``. Raises ``ValueError`` naming the known methods.

    Under Lightning the per-example progress bars of HEAT are off in auto mode (``config.progress=None``):
    ``trainer.predict`` shows its own bar; ``progress=True`` still shows them (``leave=False``, below it)."""
    attributor = build(method, model, tokenizer, config, **options)
    if hasattr(attributor, "show_progress"):
        attributor.show_progress = False
    return attributor


# ---------------------------------------------------------------------------------------------- orchestration
def check_grad_mode() -> None:
    """Raise the documented error when autograd is unavailable (``torch.inference_mode``)."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(INFERENCE_MODE_ERROR)


def _run_attributor(attributor: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    target_ids: torch.Tensor) -> list[AttributionResult]:
    if hasattr(attributor, "attribute_batch"):
        return list(attributor.attribute_batch(input_ids, attention_mask, target_ids))
    out = []
    for b in range(input_ids.shape[0]):
        target = int(target_ids[b])
        out.append(attributor.attribute(input_ids[b, attention_mask[b].bool()], None if target < 0 else target))
    return out


def _note(error: Exception, message: str) -> None:
    if hasattr(error, "add_note"):  # Python >= 3.11
        error.add_note(message)


def attribute_padded_batch(
    attributor: Any,
    batch: dict[str, Any],
    skip_bad_examples: bool = False,
    done_ids: set[str] | None = None,
) -> list[AttributionResult | ExampleError]:
    """Attribute every example of a left-padded batch dict (one result per example not in ``done_ids``).

    Args:
        attributor: a :class:`~heat_module.HEAT` (or anything with ``attribute_batch`` / ``attribute``, e.g. an
            :class:`~heat_module.attribution.base.Attributor`).
        batch: ``input_ids`` (batch, n), optional ``attention_mask`` (batch, n), ``target_ids`` (batch,) (-1 =
            greedy), ``ids`` (batch,) and ``metadata`` (batch,).
        skip_bad_examples: on a failure, retry the examples one by one and return an :class:`ExampleError` for
            each one that fails; otherwise the error propagates (with the batch's ids noted).
        done_ids: ids to leave out before any compute (resume).
    Returns:
        Results in batch order; ``result.extra["id"]`` / ``["metadata"]`` come from the batch.
    """
    if not isinstance(batch, dict) or "input_ids" not in batch:
        got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise TypeError(f"Expected a batch dict with 'input_ids' (and 'attention_mask', 'target_ids', 'ids'), "
                        f"got {got}")
    input_ids = batch["input_ids"]
    if input_ids.dim() != 2:
        raise ValueError(f"Expected input_ids of shape (batch, n), got {tuple(input_ids.shape)}")
    size = input_ids.shape[0]
    mask = batch.get("attention_mask")
    mask = torch.ones_like(input_ids) if mask is None else mask
    check_left_padding(mask)
    targets = batch.get("target_ids")
    targets = torch.full((size,), -1, dtype=torch.long) if targets is None else torch.as_tensor(targets).long()
    ids = batch.get("ids")
    metadata = batch.get("metadata")
    for name, value in (("ids", ids), ("metadata", metadata), ("target_ids", targets)):
        if value is not None and len(value) != size:
            raise ValueError(f"Expected {name} of length {size} (the batch size), got {len(value)}")
    keep = [b for b in range(size) if not done_ids or ids is None or str(ids[b]) not in done_ids]
    if not keep:
        return []
    rows = torch.tensor(keep, device=input_ids.device)
    sub_ids, sub_mask, sub_targets = input_ids[rows], mask[rows], targets.to(input_ids.device)[rows]
    real_cols = sub_mask.bool().any(0).nonzero()
    if len(real_cols):  # drop columns that are padding in every kept example
        first = int(real_cols[0])
        sub_ids, sub_mask = sub_ids[:, first:], sub_mask[:, first:]

    def attach(item: AttributionResult | ExampleError, b: int) -> AttributionResult | ExampleError:
        ex_id = None if ids is None else str(ids[b])
        meta = {} if metadata is None else dict(metadata[b] or {})
        if isinstance(item, ExampleError):
            item.id, item.metadata = ex_id, meta
            return item
        if ex_id is not None:
            item.extra["id"] = ex_id
        if meta:
            item.extra["metadata"] = meta
        return item

    with torch.enable_grad():
        try:
            results = _run_attributor(attributor, sub_ids, sub_mask, sub_targets)
        except Exception as error:
            if not skip_bad_examples:
                _note(error, f"while attributing the batch with ids {[None if ids is None else ids[b] for b in keep]}"
                             " (HEATModule(skip_bad_examples=True) puts failing examples into the errors shard)")
                raise
            results = []
            for k in range(len(keep)):
                real = sub_mask[k].bool()
                try:
                    results.extend(_run_attributor(attributor, sub_ids[k:k + 1, real], sub_mask[k:k + 1, real],
                                                   sub_targets[k:k + 1]))
                except Exception as e:  # one bad example: record it, carry on
                    results.append(ExampleError(None, str(e), type(e).__name__))
    if len(results) != len(keep):
        raise RuntimeError(f"Expected one result per example ({len(keep)}), got {len(results)}")
    return [attach(item, b) for item, b in zip(results, keep)]


def attribute_generation_batch(
    attributor: Any,
    batch: dict[str, Any],
    skip_bad_examples: bool = False,
    done_ids: set[str] | None = None,
    options: dict[str, Any] | None = None,
) -> list[Any]:
    """Explain the answer of every generation request of a batch (one GenerationResult per request not in
    ``done_ids``), with ``attributor.attribute_generation`` (:mod:`heat_module.attribution.generation`).

    Args:
        attributor: any registry method (an :class:`~heat_module.attribution.base.Attributor`).
        batch: ``{"requests", "ids", "metadata"}`` from :class:`~heat_module.lightning.datamodules.GenerationDataModule`
            (each request a :class:`~heat_module.data.generation_prompts.GenerationRequest`).
        skip_bad_examples: a failing request becomes an :class:`ExampleError` instead of stopping the run.
        done_ids: ids to leave out before any compute (resume).
        options: extra keyword arguments of ``attribute_generation`` (e.g. ``{"keep_special": True}``).
    Returns:
        Results in batch order; ``result.extra["id"]`` / ``["metadata"]`` come from the request.
    """
    if not isinstance(batch, dict) or "requests" not in batch:
        got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise TypeError(f"Expected a batch of generation requests (a dict with 'requests', from "
                        f"GenerationDataModule), got {got}")
    out: list[Any] = []
    for request in batch["requests"]:
        if done_ids and request.id in done_ids:
            continue
        steps = None if request.continuation is not None else request.max_new_tokens
        with torch.enable_grad():
            try:
                result = attributor.attribute_generation(request.prompt, messages=request.messages,
                                                         continuation=request.continuation, max_new_tokens=steps,
                                                         **(options or {}))
            except Exception as error:
                if not skip_bad_examples:
                    _note(error, f"while explaining the answer of request {request.id!r} (HEATModule("
                                 "skip_bad_examples=True) puts failing requests into the errors shard)")
                    raise
                out.append(ExampleError(request.id, str(error), type(error).__name__, dict(request.metadata)))
                continue
        result.extra["id"] = request.id
        result.extra["metadata"] = dict(request.metadata)
        out.append(result)
    return out


def collect_done_ids(trainer: Any) -> set[str]:
    """Union of ``done_ids`` of the trainer's callbacks (the :class:`~heat_module.AttributionWriter` on resume)."""
    done: set[str] = set()
    for callback in getattr(trainer, "callbacks", None) or []:
        ids = getattr(callback, "done_ids", None)
        if ids:
            done |= {str(i) for i in ids}
    return done


class HEATPredictMixin:
    """Add HEAT to the predict loop of your own LightningModule, without subclassing :class:`HEATModule`.

    Example:
        >>> import lightning.pytorch as L
        >>> from heat_module import HEATConfig, HEATPredictMixin
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> class MyLM(HEATPredictMixin, L.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.model, self.tokenizer = tiny_model("llama"), tiny_tokenizer()  # or load_model("smollm2")
        ...         self.heat_config = HEATConfig()  # Fisher S + exact I; preset("mi"): M·I
        ...     def predict_step(self, batch, batch_idx):
        ...         return self.heat_predict_step(batch, batch_idx)
        >>> batch = MyLM().heat_tokenizer()(["the cat sat on the"], return_tensors="pt")
        >>> result, = MyLM().predict_step(dict(batch, ids=["a"]), 0)
        >>> result.scores.shape
        torch.Size([5])

    Override :meth:`heat_model` / :meth:`heat_tokenizer` when your LM is not ``self.model`` /
    ``self.tokenizer``. Set ``heat_config`` (a :class:`~heat_module.HEATConfig`) and ``heat_skip_bad_examples``
    as attributes. The attributor is built on first use; it switches the model's attention implementation to
    HEAT's capturing one (SDPA outside captures, so the model's outputs are unchanged). Run the Trainer with
    ``inference_mode=False``.
    """

    heat_config: HEATConfig | None = None
    heat_skip_bad_examples: bool = False

    def heat_model(self) -> nn.Module:
        """The decoder-only LM to attribute (default ``self.model``)."""
        model = getattr(self, "model", None)
        if not isinstance(model, nn.Module):
            raise AttributeError(f"Expected self.model to be the LM (an nn.Module), got {type(model).__name__}; "
                                 "override heat_model()")
        return model

    def heat_tokenizer(self) -> Any:
        """The LM's tokenizer, or ``None`` (default ``self.tokenizer``); only used for token strings."""
        return getattr(self, "tokenizer", None)

    def heat_attributor(self) -> Any:
        """The (cached) attributor: a :class:`~heat_module.HEAT` over :meth:`heat_model`."""
        attributor = self.__dict__.get("_heat_attributor")
        if attributor is None:
            attributor = get_attributor("heat", self.heat_model(), self.heat_tokenizer(), self.heat_config)
            self.__dict__["_heat_attributor"] = attributor
        return attributor

    def heat_done_ids(self) -> set[str]:
        """Ids to skip: those of a resumable callback (e.g. the writer) of the attached trainer."""
        return collect_done_ids(getattr(self, "_trainer", None))

    def heat_predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> list[AttributionResult | ExampleError]:
        """HEAT on a left-padded batch dict: one result per example (see :func:`attribute_padded_batch`)."""
        check_grad_mode()
        return attribute_padded_batch(self.heat_attributor(), batch, self.heat_skip_bad_examples,
                                      self.heat_done_ids())


# ---------------------------------------------------------------------------------------------- metrics
#: the metric kinds (:data:`heat_module.metrics.registry.INPUTS`) whose ``update`` a data-module batch can feed
BATCH_INPUTS = ("model", "gold", "gold_distractor", "attribute_fn")


def build_test_metrics(names: Sequence[str], model: nn.Module, options: dict[str, dict] | None = None) -> nn.ModuleDict:
    """The torchmetrics objects of ``names`` (names or aliases of :func:`heat_module.metrics.available_metrics`).

    A model-based metric gets ``forward_fn = make_forward_fn(model)``; ``options[name]`` are extra constructor
    keyword arguments (e.g. ``{"soft_nc": {"num_masks": 4}}``; Sensitivity needs ``{"sensitivity": {"attribute_fn":
    f}}``, an attribution of noisy embeddings). A metric whose inputs a batch does not carry (active/passive
    robustness: two phrasings aligned token by token) is refused with the reason.
    """
    entries = {}
    for name in names:
        try:
            entry = metric_entry(name)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        if entry.inputs not in BATCH_INPUTS:
            raise ValueError(f"Expected metrics whose inputs a HEATModule batch carries ({list(BATCH_INPUTS)}), got "
                             f"{name!r} (it needs {entry.inputs!r}: {INPUTS[entry.inputs]}); compute it with "
                             f"{entry.cls.__name__} directly")
        entries[entry.name] = entry
    options = dict(options or {})
    known = set(available_metrics())
    stray = [k for k in options if k not in known]
    if stray:  # options of known but unchosen metrics are ignored, so a config can keep them
        raise ValueError(f"Expected metric_options keys from {sorted(known)}, got {stray}")
    forward_fn = make_forward_fn(model)
    out = nn.ModuleDict()
    for name, entry in entries.items():
        kwargs = dict(options.get(name, {}))
        out[name] = entry.build(forward_fn=forward_fn, attribute_fn=kwargs.pop("attribute_fn", None), **kwargs)
    return out


def _padded_scores(results: Sequence[AttributionResult], n: int, device: torch.device) -> torch.Tensor:
    """(batch, n) scores right-aligned into a left-padded layout (0 on padding)."""
    scores = torch.zeros(len(results), n, dtype=torch.float32, device=device)
    for b, r in enumerate(results):
        scores[b, n - len(r):] = r.scores.to(device=device, dtype=torch.float32)
    return scores


# ---------------------------------------------------------------------------------------------- the module
class HEATModule(HEATPredictMixin, pl.LightningModule):
    """A LightningModule that runs HEAT (or a baseline) on data-module batches.

    Args:
        model: ``"smollm2"`` (offline default), an HF folder / id, an ``nn.Module``, or a ``(model, tokenizer)``
            pair (see :func:`heat_module.load_model`). Its parameters are frozen (``requires_grad=False``).
        tokenizer: the tokenizer for a built model (optional; loaded with a name).
        config: HEAT's configuration (default ``HEATConfig()``: eq. 5 with the Fisher S, the exact I and
            ``normalize="sum"``; ``HEATConfig.preset("mi")`` for M·I, ``"exact"`` for the exact Hessian term S).
        method: a name of the method registry (:func:`heat_module.attribution.registry.available_methods`):
            ``"heat"`` or a baseline.
        skip_bad_examples: a failing example becomes an :class:`ExampleError` (written to the errors shard by the
            writer, left out of the metrics) instead of stopping the run.
        metrics: which test metrics ``test_step`` updates, by registry name (:func:`heat_module.metrics.
            available_metrics`; default :func:`heat_module.metrics.registry.default_metrics`: Soft-NC, Soft-NS, AOPC,
            ABPC, DSA, F1); DSA and F1 only on examples with gold tokens (``has_gold``).
        metric_options: extra constructor arguments per metric, e.g. ``{"soft_nc": {"num_masks": 4}}``.
        method_options: extra arguments of a baseline's factory.
        generate: ``predict_step`` explains generated answers: batches of generation requests
            (:class:`~heat_module.lightning.datamodules.GenerationDataModule`) in, one
            :class:`~heat_module.GenerationResult` per request out (the per-step attribution matrix).
        generation_options: extra keyword arguments of ``attribute_generation`` (e.g. ``{"keep_special": True}``).

    Attributes:
        model, tokenizer, config, heat (the attributor: a :class:`~heat_module.HEAT` for ``method="heat"``).

    ``predict_step`` returns a list per batch (module docstring); ``trainer.predict`` thus returns a list of
    lists — or use the :class:`~heat_module.AttributionWriter` with ``return_predictions=False``.
    ``test_step`` attributes the batch and updates the metrics; ``on_test_epoch_end`` logs ``test/<metric>`` and
    ``test/num_examples`` (synchronised over processes by torchmetrics).

    Example:
        >>> import lightning.pytorch as L
        >>> from heat_module import HEATModule
        >>> from heat_module.data import TextPromptsDataModule
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> module = HEATModule((tiny_model("llama"), tiny_tokenizer()), metrics=["dsa"])  # or HEATModule("smollm2")
        >>> data = TextPromptsDataModule(["the cat sat on the", "the dog ran"], tokenizer=tiny_tokenizer())
        >>> trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
        ...                     inference_mode=False)
        >>> [len(r.tokens) for batch in trainer.predict(module, datamodule=data) for r in batch]
        [5, 3]
    """

    def __init__(
        self,
        model: str | os.PathLike | nn.Module = "smollm2",
        tokenizer: Any = None,
        config: HEATConfig | None = None,
        method: str = "heat",
        skip_bad_examples: bool = False,
        metrics: list[str] | None = None,
        metric_options: dict[str, dict] | None = None,
        method_options: dict[str, Any] | None = None,
        generate: bool = False,
        generation_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        config = HEATConfig() if config is None else config
        if not isinstance(config, HEATConfig):
            raise TypeError(f"Expected config to be a HEATConfig, got {type(config).__name__}")
        ignore = ["tokenizer"] if isinstance(model, (str, os.PathLike)) else ["tokenizer", "model"]
        self.save_hyperparameters(ignore=ignore)
        lm, tok = load_model(model, tokenizer)
        for p in lm.parameters():
            p.requires_grad_(False)
        if is_dispatched(lm):  # accelerate placed it (offloaded weights live on meta): the Trainer must not move it
            self.__dict__["model"] = lm
        else:
            self.model = lm
        self.tokenizer = tok
        self.config = config
        self.method = method
        self.skip_bad_examples = skip_bad_examples
        self.heat_config = config
        self.heat_skip_bad_examples = skip_bad_examples
        self.heat = get_attributor(method, self.model, self.tokenizer, config, **(method_options or {}))
        self.__dict__["_heat_attributor"] = self.heat
        self.metric_names = tuple(default_metrics() if metrics is None else metrics)
        self.test_metrics = build_test_metrics(self.metric_names, self.model, metric_options)
        self.num_examples = SumMetric()
        self.generate = bool(generate)
        self.generation_options = dict(generation_options or {})
        if self.generation_options and not self.generate:
            raise ValueError(f"Expected generate=True with generation_options, got generate=False and "
                             f"{sorted(self.generation_options)}")

    def attribution_hash(self) -> str:
        """What the writer stores as ``config_hash``: ``config.hash()`` for HEAT, else a hash of the method and
        its options (so resuming in a directory written by another method or config skips nothing)."""
        if self.generate:  # a matrix per request is not the same prediction as one row
            return stable_hash({"generate": self.generation_options, "method": self.method,
                                "config": self.config.hash(), "options": self.hparams.get("method_options")})
        if self.method == "heat":
            return self.config.hash()
        return stable_hash({"method": self.method, "options": self.hparams.get("method_options")})

    def forward(self, batch: dict[str, Any]) -> list[AttributionResult | ExampleError]:
        return self.heat_predict_step(batch)

    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0,
                     dataloader_idx: int = 0) -> list[AttributionResult | ExampleError]:
        """One result per example not yet written (module docstring); with ``generate=True`` one
        GenerationResult per generation request (:func:`attribute_generation_batch`)."""
        if self.generate:
            check_grad_mode()
            return attribute_generation_batch(self.heat, batch, self.skip_bad_examples, self.heat_done_ids(),
                                              self.generation_options)
        if isinstance(batch, dict) and "requests" in batch:
            raise TypeError("Expected a batch of token ids, got generation requests: use HEATModule(generate=True) "
                            "with GenerationDataModule")
        return self.heat_predict_step(batch, batch_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int = 0, dataloader_idx: int = 0) -> None:
        """Attribute the batch and update the metrics (DSA / F1 only on rows with gold tokens)."""
        check_grad_mode()
        outputs = attribute_padded_batch(self.heat, batch, self.skip_bad_examples)
        rows = [b for b, item in enumerate(outputs) if isinstance(item, AttributionResult)]
        if not rows:
            return
        results = [outputs[b] for b in rows]
        index = torch.tensor(rows, device=batch["input_ids"].device)
        input_ids = batch["input_ids"][index]
        mask = batch.get("attention_mask")
        mask = torch.ones_like(input_ids) if mask is None else mask[index]
        scores = _padded_scores(results, input_ids.shape[1], input_ids.device)
        self.num_examples.update(torch.tensor(float(len(results)), device=self.device))
        if not len(self.test_metrics):
            return
        targets = torch.tensor([r.target_id for r in results], device=input_ids.device)
        gold = batch.get("gold_mask")
        has_gold = batch.get("has_gold")
        with torch.no_grad():
            embeds = embed(self.model, input_ids).detach()
            for name, metric in self.test_metrics.items():
                inputs = metric_entry(name).inputs
                if inputs == "model":
                    metric.update(scores, embeds, mask, targets)
                elif inputs == "attribute_fn":
                    metric.update(embeds, mask, targets)
                elif gold is not None and has_gold is not None and has_gold[index].bool().any():
                    g = has_gold[index].bool()
                    if inputs == "gold_distractor":
                        distractor = batch.get("distractor_mask")
                        distractor = torch.zeros_like(gold) if distractor is None else distractor
                        metric.update(scores[g], gold[index][g], distractor[index][g], mask[g])
                    else:
                        metric.update(scores[g], gold[index][g], mask[g])

    def on_test_epoch_end(self) -> None:
        """Log every metric (finite values only) as ``test/<name>``, then reset."""
        logged: dict[str, torch.Tensor] = {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
            for name, metric in [("num_examples", self.num_examples), *self.test_metrics.items()]:
                value = metric.compute()
                values = value if isinstance(value, dict) else {name: value}
                for key, v in values.items():
                    v = torch.as_tensor(v, dtype=torch.float32)
                    if torch.isfinite(v).all():
                        logged[f"test/{key}"] = v
                metric.reset()
        for key, v in logged.items():
            self.log(key, v, sync_dist=False)

    def configure_optimizers(self) -> None:
        return None
