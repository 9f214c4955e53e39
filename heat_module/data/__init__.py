"""Lightning data modules for HEAT: tokenised, left-padded batches with gold annotations for the metrics.

- :class:`TextPromptsDataModule` — prompts from a list, a text file (one per line) or JSON lines.
- :class:`LongRADataModule` — ReAGent's LongRA JSON lines (single-token targets; distractor span).
- :class:`CuratedDataModule` — the NarrativeQA ⊕ SciQ curated set (gold = important support words,
  distractor = the narrative), and :func:`build_curated_examples` to make one from your own texts.

The batch dict they produce is documented in :mod:`heat_module.data.collate`.
"""

from heat_module.data.base import DataError, HEATDataModule, UnrepeatedShardSampler, resolve_path, resolve_tokenizer
from heat_module.data.build_curated import build_curated_examples, save_curated_dataset
from heat_module.data.collate import Example, LeftPadCollator, char_spans_to_tokens, continuation_ids
from heat_module.data.curated import CuratedDataModule, curated_example
from heat_module.data.longra import LongRADataModule
from heat_module.data.text_prompts import TextPromptsDataModule

__all__ = [
    "CuratedDataModule",
    "DataError",
    "Example",
    "HEATDataModule",
    "LeftPadCollator",
    "LongRADataModule",
    "TextPromptsDataModule",
    "UnrepeatedShardSampler",
    "build_curated_examples",
    "char_spans_to_tokens",
    "continuation_ids",
    "curated_example",
    "resolve_path",
    "resolve_tokenizer",
    "save_curated_dataset",
]
