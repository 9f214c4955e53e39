"""Read attributions saved by inseq (Sarti et al. 2023, "Inseq: An Interpretability Toolkit for Sequence Generation
Models", ACL demo, https://arxiv.org/abs/2302.13942) into :class:`AttributionResult`, so methods only inseq has
(ReAGent, Zhao & Shan 2024) can be scored by our metrics.

Format read: the JSON written by ``FeatureAttributionOutput.save(path)`` (``inseq/data/attribution.py``,
``inseq/utils/serialization.py``): objects are ``{"__instance_type__": [module, class], "attributes": {...}}``
(or bare dicts when saved with ``use_primitives=True``); arrays are ``{"__ndarray__": data, "dtype", "shape",
"Corder"}`` with ``data`` a nested list or a ``"b64:"`` / ``"b64.gz:"`` string of the raw buffer; tokens are
``TokenWithId`` objects ``{"token", "id"}``; the whole file may be gzipped (``compress=True``). For a decoder-only
model each sequence has ``target`` (prompt + generated tokens), ``attr_pos_start`` (the prompt length) and
``target_attributions`` of shape (len(target), generation steps[, granular dims]); step s explains
target[attr_pos_start + s] from the rows before it. Granular dims (e.g. the embedding dimension of raw gradients)
are reduced by the L2 norm (inseq's default aggregation) or a sum.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from heat_module.attribution.base import Attributor
from heat_module.attribution.registry import register_method
from heat_module.result import AttributionResult


def _decode_array(obj: dict) -> np.ndarray:
    data, dtype, shape = obj["__ndarray__"], obj.get("dtype", "float64"), tuple(obj.get("shape", ()))
    order = "C" if obj.get("Corder", True) else "F"
    if isinstance(data, str):
        header, _, payload = data.partition(":")
        raw = base64.standard_b64decode(payload)
        if header == "b64.gz":
            raw = gzip.decompress(raw)
        elif header != "b64":
            raise ValueError(f"Expected an inseq array string starting with 'b64:' or 'b64.gz:', got {header!r}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape, order=order).copy()
    return np.asarray(data, dtype=dtype).reshape(shape, order=order)


def _unwrap(obj: Any) -> Any:
    """Strip inseq's class wrappers and decode arrays, recursively."""
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return _decode_array(obj)
        if "__instance_type__" in obj:
            return _unwrap(obj.get("attributes", {}))
        return {k: _unwrap(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unwrap(v) for v in obj]
    return obj


def read_inseq_json(path: str | Path) -> dict:
    """The saved ``FeatureAttributionOutput`` as plain dicts/lists/ndarrays (gzip detected by magic bytes)."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    out = _unwrap(json.loads(raw.decode("utf-8")))
    if not isinstance(out, dict) or "sequence_attributions" not in out:
        raise ValueError(f"Expected an inseq FeatureAttributionOutput JSON with 'sequence_attributions', got {path}")
    return out


def _tokens(seq: list) -> tuple[list[str], list[int]]:
    toks, ids = [], []
    for t in seq:
        if isinstance(t, dict):
            toks.append(str(t.get("token", "")))
            ids.append(int(t.get("id", -1)))
        else:
            toks.append(str(t))
            ids.append(-1)
    return toks, ids


def load_inseq(path: str | Path, step: int = 0, reduce: str = "norm") -> list[AttributionResult]:
    """One :class:`AttributionResult` per saved sequence, explaining generation step ``step``.

    Args:
        path: a JSON (optionally gzipped) written by inseq's ``FeatureAttributionOutput.save``.
        step: which generated token to explain (0 = the first, i.e. the next token after the prompt).
        reduce: how granular dims are reduced: ``"norm"`` (L2, inseq's default) or ``"sum"``.
    Returns:
        Results with ``method`` = inseq's ``attribution_method`` (e.g. ``"reagent"``) and the context = the tokens
        before the explained one; ``token_ids`` are -1 where the file has no ids.
    """
    if reduce not in ("norm", "sum"):
        raise ValueError(f"Expected reduce to be 'norm' or 'sum', got {reduce!r}")
    data = read_inseq_json(path)
    info = data.get("info") or {}
    method = str(info.get("attribution_method", "inseq"))
    results = []
    for k, seq in enumerate(data["sequence_attributions"]):
        attr = seq.get("target_attributions")
        if attr is None:
            raise ValueError(
                f"Expected target_attributions (decoder-only model) in sequence {k} of {path}, got none "
                "(encoder-decoder source attributions are not supported)"
            )
        attr = np.asarray(attr, dtype=np.float64)
        if attr.ndim > 2:
            flat = attr.reshape(attr.shape[0], attr.shape[1], -1)
            attr = np.sqrt(np.nansum(flat**2, -1)) if reduce == "norm" else np.nansum(flat, -1)
        tokens, ids = _tokens(seq["target"])
        if attr.shape[0] == len(tokens) + 1:  # a BOS row inseq did not drop
            attr = attr[1:]
        if attr.shape[0] != len(tokens):
            raise ValueError(f"Expected {len(tokens)} attribution rows (one per target token) in sequence {k}, "
                             f"got {attr.shape[0]}")
        start = int(seq.get("attr_pos_start", 0))
        pos = start + step
        if not 0 <= step < attr.shape[1] or pos >= len(tokens) or pos < 1:
            raise ValueError(
                f"Expected step in [0, {attr.shape[1]}) with a token to explain in sequence {k}, got {step}"
            )
        scores = torch.tensor(np.nan_to_num(attr[:pos, step], nan=0.0), dtype=torch.float32)
        results.append(
            AttributionResult(
                tokens=tokens[:pos],
                token_ids=torch.tensor(ids[:pos], dtype=torch.long),
                target=tokens[pos],
                target_id=ids[pos],
                scores=scores,
                method=method,
                config={"source": str(path), "step": step, "reduce": reduce},
                extra={"inseq_info": {k2: v for k2, v in info.items() if isinstance(v, (str, int, float, bool))}},
            )
        )
    return results


@register_method("inseq", title="Scores saved by inseq", example_options=None)
class InseqScores(Attributor):
    """Scores precomputed by inseq (e.g. ReAGent, https://arxiv.org/abs/2402.00794), looked up by token ids.

    Options:
        path: one or more inseq JSON files (:func:`load_inseq`).
        step, reduce: as in :func:`load_inseq`.

    ``attribute`` returns the saved result whose context token ids equal the given ones (and whose target matches
    when a target is given); it raises ``KeyError`` when the files hold no such example.
    """

    batched = False

    def __init__(self, model: nn.Module, tokenizer: object | None = None, path: str | Sequence[str] | None = None,
                 step: int = 0, reduce: str = "norm", **options: Any) -> None:
        super().__init__(model, tokenizer, **options)
        if path is None:
            raise ValueError("Expected path to one or more inseq JSON files, got None")
        paths = [path] if isinstance(path, (str, Path)) else list(path)
        self.paths = [str(p) for p in paths]
        self.step, self.reduce = step, reduce
        self.index: dict[tuple[int, ...], list[AttributionResult]] = {}
        for p in self.paths:
            for res in load_inseq(p, step, reduce):
                self.index.setdefault(tuple(res.token_ids.tolist()), []).append(res)

    def options(self) -> dict:
        return {"path": self.paths, "step": self.step, "reduce": self.reduce}

    def attribute_batch(self, input_ids, attention_mask=None, target_ids=None) -> list[AttributionResult]:
        """The stored results for a left-padded batch (no model: the ids are looked up, not validated)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = []
        for row, want in self.unpadded(input_ids, attention_mask, target_ids):
            key = tuple(int(i) for i in row.tolist())
            found = self.index.get(key, [])
            if want is not None:
                found = [r for r in found if r.target_id == want]
            if not found:
                raise KeyError(f"Expected an inseq attribution for the context ids {list(key)[:12]}..., got none in "
                               f"{self.paths}")
            out.append(found[0])
        return out
