"""Data for HEAT in plain Python: the readers of each dataset, the :class:`Example` record and left-padding collation.

- :mod:`~heat_module.data.text_prompts` — prompts from a list, a text file (one per line) or JSON lines.
- :mod:`~heat_module.data.longra` — ReAGent's LongRA JSON lines (single-token targets; distractor span).
- :mod:`~heat_module.data.curated` — the NarrativeQA ⊕ SciQ curated set (gold = important support words,
  distractor = the narrative), and :func:`build_curated_examples` to make one from your own texts.
- :mod:`~heat_module.data.lambada` — ReAGent's annotated LAMBADA (gold = the human rationale tokens).
- :mod:`~heat_module.data.generation_prompts` — prompts or chat conversations whose answer is explained token by
  token (JSON lines with optional continuations).

The batch dict the collator produces is documented in :mod:`heat_module.data.collate`. The Lightning data modules
(``HEATDataModule``, ``TextPromptsDataModule``, ``LongRADataModule``, ``CuratedDataModule``,
``GenerationDataModule``, ``UnrepeatedShardSampler``) live in :mod:`heat_module.lightning.datamodules`; they are
public here too (``from heat_module.data import CuratedDataModule``, the ``class_path`` of ``configs/*.yaml``)
through a lazy module attribute, so importing this package does not import Lightning.
"""

from __future__ import annotations

import importlib

from heat_module.data.build_curated import build_curated_examples, save_curated_dataset
from heat_module.data.collate import Example, LeftPadCollator, char_spans_to_tokens, continuation_ids
from heat_module.data.curated import curated_example, read_curated
from heat_module.data.generation_prompts import GenerationRequest, read_generation_requests
from heat_module.data.lambada import load_annotated_lambada
from heat_module.data.longra import read_longra
from heat_module.data.readers import DataError, read_texts, resolve_path, resolve_tokenizer
from heat_module.data.text_prompts import read_text_prompts

_LIGHTNING = ("CuratedDataModule", "GenerationDataModule", "HEATDataModule", "LongRADataModule",
              "TextPromptsDataModule", "UnrepeatedShardSampler")

__all__ = [
    "CuratedDataModule",
    "DataError",
    "Example",
    "GenerationDataModule",
    "GenerationRequest",
    "HEATDataModule",
    "LeftPadCollator",
    "LongRADataModule",
    "TextPromptsDataModule",
    "UnrepeatedShardSampler",
    "build_curated_examples",
    "char_spans_to_tokens",
    "continuation_ids",
    "curated_example",
    "load_annotated_lambada",
    "read_curated",
    "read_generation_requests",
    "read_longra",
    "read_text_prompts",
    "read_texts",
    "resolve_path",
    "resolve_tokenizer",
    "save_curated_dataset",
]


def __getattr__(name: str):
    if name in _LIGHTNING:  # lazy: the Lightning data modules import lightning (a heavy optional-at-import dep)
        return getattr(importlib.import_module("heat_module.lightning.datamodules"), name)
    raise AttributeError(f"module 'heat_module.data' has no attribute {name!r}")
