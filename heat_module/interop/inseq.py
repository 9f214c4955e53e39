"""Write results in inseq's saved format (Sarti et al. 2023, https://arxiv.org/abs/2302.13942), so inseq's viewers
(``inseq.FeatureAttributionOutput.load(path).show()``) display HEAT, and our importer
(:func:`heat_module.baselines.inseq_import.load_inseq`) reads it back.

The format is what ``FeatureAttributionOutput.save(path)`` writes with its defaults (``use_primitives=False``:
``inseq/data/attribution.py`` and ``inseq/utils/serialization.py``): every object is
``{"__instance_type__": [module, class], "attributes": {...}}`` (the class's public fields, as
``TensorWrapper.to_dict`` gives them); arrays are ``{"__ndarray__": nested list, "dtype", "shape"[, "Corder"]}``
(``ndarray_compact=False``: plain lists); tokens are ``inseq.utils.typing.TokenWithId`` ``{"token", "id"}``; keys
are sorted. One result becomes one decoder-only sequence: ``target`` = the n context tokens followed by the target
token, ``source`` = the context, ``attr_pos_start`` = n, ``attr_pos_end`` = n + 1 and ``target_attributions`` of
shape (n + 1, 1): rows 0..n-1 the scores, row n NaN (inseq's convention for a token that cannot explain itself).
No model or tokenizer names are known here, so ``info`` holds the method and the texts only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch


class Exportable(Protocol):
    """What the exporter reads from an :class:`heat_module.result.AttributionResult`."""

    tokens: list[str]
    token_ids: torch.Tensor
    target: str
    target_id: int
    scores: torch.Tensor
    method: str


def _instance(module: str, name: str, attributes: dict) -> dict:
    return {"__instance_type__": [module, name], "attributes": attributes}


def _token(token: str, token_id: int) -> dict:
    return _instance("inseq.utils.typing", "TokenWithId", {"token": token, "id": int(token_id)})


def _array(rows: list[list[float]]) -> dict:
    """A 2-D float32 array as inseq's ``numpy_encode`` writes it with ``ndarray_compact=False``."""
    return {"__ndarray__": rows, "dtype": "float32", "shape": [len(rows), len(rows[0]) if rows else 0],
            "Corder": True}


def inseq_sequence(result: Exportable) -> dict:
    """One ``FeatureAttributionSequenceOutput`` (decoder-only: target-side attributions only)."""
    n = len(result.tokens)
    ids = [int(i) for i in result.token_ids.tolist()]
    context = [_token(t, i) for t, i in zip(result.tokens, ids)]
    rows = [[float(v) if math.isfinite(v) else float("nan")] for v in result.scores.detach().float().tolist()]
    rows.append([float("nan")])
    return _instance("inseq.data.attribution", "FeatureAttributionSequenceOutput", {
        "attr_pos_end": n + 1,
        "attr_pos_start": n,
        "sequence_scores": None,
        "source": context,
        "source_attributions": None,
        "step_scores": {},
        "target": context + [_token(result.target, result.target_id)],
        "target_attributions": _array(rows),
    })


def _document(methods: set[str], texts: dict[str, Any], sequences: list[dict], info: dict[str, Any] | None) -> dict:
    """The ``FeatureAttributionOutput`` object: inseq's info header (methods, input / generated texts, step score
    names), ``info`` over it, and the sequences."""
    names = sorted(methods)
    base = {
        "attribute_target": True,
        "attribution_method": names[0] if len(names) == 1 else ",".join(names),
        "exported_by": "heat_module.interop.inseq",
        **texts,
    }
    return _instance("inseq.data.attribution", "FeatureAttributionOutput", {
        "info": {**base, **(info or {})},
        "sequence_attributions": sequences,
        "step_attributions": None,
    })


def inseq_document(results: Sequence[Exportable], info: dict[str, Any] | None = None) -> dict:
    """The ``FeatureAttributionOutput`` JSON object of ``results`` (before serialisation).

    Example:
        >>> from heat_module import HEAT
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> heat = HEAT(tiny_model("llama"), tiny_tokenizer())
        >>> from heat_module.interop import inseq_document
        >>> doc = inseq_document([heat.attribute("the cat sat on the")])
        >>> len(doc["attributes"]["sequence_attributions"])
        1
    """
    if not results:
        raise ValueError("Expected at least one result to export, got none")
    texts = {"input_texts": ["".join(r.tokens) for r in results],
             "generated_texts": ["".join(r.tokens) + r.target for r in results], "step_scores": []}
    return _document({r.method for r in results}, texts, [inseq_sequence(r) for r in results], info)


def save_inseq(results: Sequence[Exportable], path: str | Path, info: dict[str, Any] | None = None) -> None:
    """Write ``results`` as one inseq JSON file (``inseq.FeatureAttributionOutput.load(path)`` reads it).

    Args:
        results: attribution results (one inseq sequence each).
        path: the output file (``.json``).
        info: extra entries of inseq's ``info`` dict (e.g. ``model_name``).

    Example:
        >>> from heat_module import HEAT
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> heat = HEAT(tiny_model("llama"), tiny_tokenizer())
        >>> import json, tempfile
        >>> from heat_module.interop import save_inseq
        >>> path = tempfile.mkdtemp() + "/heat.json"
        >>> save_inseq([heat.attribute("the cat sat"), heat.attribute("the dog ran")], path)
        >>> with open(path) as f:
        ...     len(json.load(f)["attributes"]["sequence_attributions"])
        2
    """
    text = json.dumps(inseq_document(results, info), allow_nan=True, indent=4, sort_keys=True)
    Path(path).write_text(text, encoding="utf-8")


class ExportableGeneration(Protocol):
    """What the exporter reads from a :class:`heat_module.generation_result.GenerationResult`."""

    prompt_ids: torch.Tensor
    generated_ids: torch.Tensor
    tokens: list[str]
    matrix: torch.Tensor
    step_scores: dict[str, torch.Tensor]
    method: str


def _vector(values: list[float]) -> dict:
    """A 1-D float32 array as inseq's ``numpy_encode`` writes it."""
    return {"__ndarray__": values, "dtype": "float32", "shape": [len(values)], "Corder": True}


def inseq_generation_sequence(result: ExportableGeneration) -> dict:
    """One decoder-only ``FeatureAttributionSequenceOutput`` holding every step of a generation: ``source`` = the n
    prompt tokens, ``target`` = prompt then the T generated tokens, ``attr_pos_start`` = n, ``attr_pos_end`` = n + T,
    ``target_attributions`` of shape (n + T, T) with column t = matrix row t (NaN from position n + t on, inseq's
    convention for tokens that cannot explain y_t) and the step scores as (T,) arrays."""
    n, t = int(result.prompt_ids.numel()), int(result.generated_ids.numel())
    if len(result.tokens) != n + t:
        raise ValueError(f"Expected a token-level result with {n + t} columns to export, got {len(result.tokens)} "
                         "(export before aggregate())")
    ids = [int(i) for i in torch.cat([result.prompt_ids, result.generated_ids]).tolist()]
    tokens = [_token(tok, i) for tok, i in zip(result.tokens, ids)]
    columns = result.matrix.detach().double().T.tolist()
    rows = [[float(v) if math.isfinite(v) else float("nan") for v in row] for row in columns]
    return _instance("inseq.data.attribution", "FeatureAttributionSequenceOutput", {
        "attr_pos_end": n + t,
        "attr_pos_start": n,
        "sequence_scores": None,
        "source": tokens[:n],
        "source_attributions": None,
        "step_scores": {k: _vector([float(x) for x in v.double().tolist()]) for k, v in result.step_scores.items()},
        "target": tokens,
        "target_attributions": _array(rows),
    })


def save_inseq_generation(results: Sequence[ExportableGeneration], path: str | Path,
                          info: dict[str, Any] | None = None) -> None:
    """Write generation results as one inseq JSON file (one sequence each, every step; see
    :func:`inseq_generation_sequence`).

    Example:
        >>> import json, tempfile
        >>> from heat_module.attribution.registry import build
        >>> from heat_module.interop import save_inseq_generation
        >>> from heat_module.testing import tiny_model, tiny_tokenizer
        >>> occlusion = build("occlusion", tiny_model("llama"), tiny_tokenizer())  # any method, HEAT alike
        >>> path = tempfile.mkdtemp() + "/answer.json"
        >>> save_inseq_generation([occlusion.attribute_generation("the cat sat", max_new_tokens=2)], path)
        >>> with open(path) as f:  # one sequence per answer, with every step
        ...     len(json.load(f)["attributes"]["sequence_attributions"])
        1
    """
    if not results:
        raise ValueError("Expected at least one result to export, got none")
    texts = {"input_texts": ["".join(r.tokens[:r.prompt_ids.numel()]) for r in results],
             "generated_texts": ["".join(r.tokens) for r in results],
             "step_scores": sorted({k for r in results for k in r.step_scores})}
    document = _document({r.method for r in results}, texts, [inseq_generation_sequence(r) for r in results], info)
    Path(path).write_text(json.dumps(document, allow_nan=True, indent=4, sort_keys=True), encoding="utf-8")
