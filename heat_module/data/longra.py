"""LongRA (long-range agreement, ReAGent's analogy benchmark) as JSON lines.

Schema (``shared/data/reagent/derived/longra_<model>.jsonl``; see ``shared/data/reagent/SOURCE.md``): one object per
line with ``prompt`` (an analogy template with a "(...)." distractor sentence) and ``target_text`` (the analogy
word, with its leading space, e.g. ``" Athens"``); optional ``id``, ``category``, and ``input_text`` (the prompt
as the original model's token strings) with ``distractor_start`` / ``distractor_end`` (inclusive token indices
into ``input_text``). Blank lines are ignored.

Mapping to *this* tokenizer: the context is ``prompt`` encoded with the tokenizer's defaults; the target is
``target_text`` encoded alone without special tokens and must be a single token — examples where it is not are
dropped and their number is reported (a warning), since LongRA targets are single tokens by construction of the
original model only. The distractor character span is rebuilt from ``input_text`` (when its concatenation equals
``prompt``) and mapped to this tokenizer's tokens by character offsets (fast tokenizers only); it lands in the
batch's ``distractor_mask``. LongRA has no gold rationale, so DSA/F1 are not computed on it.

The instances were filtered so that the original model's greedy prediction is the target; with another model
the target may not be its prediction (HEAT still attributes the given target).
"""

from __future__ import annotations

import os

from lightning.pytorch.utilities import rank_zero_warn

from heat_module.data.base import DataError, HEATDataModule, parse_json_line, read_text, resolve_path
from heat_module.data.collate import Example, char_spans_to_tokens


class LongRADataModule(HEATDataModule):
    """LongRA JSON lines (module docstring).

    Args:
        path: the ``.jsonl`` file.
        tokenizer, batch_size, limit, num_workers, skip_bad_examples: see :class:`HEATDataModule`.

    After ``setup``, ``num_dropped`` holds how many examples were dropped for a multi-token target.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        tokenizer: object = "smollm2",
        batch_size: int = 4,
        limit: int | None = None,
        num_workers: int = 0,
        skip_bad_examples: bool = False,
    ) -> None:
        super().__init__(tokenizer, batch_size, limit, num_workers, skip_bad_examples)
        self.path = path
        self.num_dropped = 0

    def load_examples(self) -> list[Example]:
        path = resolve_path(self.path)
        examples: list[Example] = []
        dropped = total = 0
        for k, line in enumerate(read_text(path).split("\n")):
            if not line.strip():
                continue
            where = f"{path}:{k + 1}"
            row = parse_json_line(line, where)
            if not isinstance(row, dict):
                raise DataError(f"{where}: Expected a JSON object, got {type(row).__name__}")
            missing = [key for key in ("prompt", "target_text") if not isinstance(row.get(key), str)]
            if missing:
                raise DataError(f"{where}: Expected string fields 'prompt' and 'target_text', got keys {sorted(row)}")
            total += 1
            prompt, target = row["prompt"], row["target_text"]
            if not prompt.strip():
                self.bad_example(where, "Expected a non-empty prompt, got an empty string")
                continue
            t_ids = list(self.tokenizer(target, add_special_tokens=False)["input_ids"])
            if len(t_ids) != 1:
                dropped += 1
                continue
            enc = self.tokenizer(prompt, return_offsets_mapping=bool(getattr(self.tokenizer, "is_fast", False)))
            distractor = None
            span = _distractor_span(row, prompt)
            if span is not None and "offset_mapping" in enc:
                distractor = char_spans_to_tokens(enc["offset_mapping"], [span]) or None
            meta = {"source": where, "target_text": target}
            if "category" in row:
                meta["category"] = row["category"]
            examples.append(Example(id=str(row.get("id", k)), input_ids=list(enc["input_ids"]), target_id=int(t_ids[0]),
                                    distractor=distractor, metadata=meta))
        self.num_dropped = dropped
        if dropped:
            rank_zero_warn(f"LongRA {path}: dropped {dropped} of {total} examples whose target_text is not a single "
                           f"token for this tokenizer ({total - dropped} kept)")
        return examples


def _distractor_span(row: dict, prompt: str) -> tuple[int, int] | None:
    """Character span of the distractor sentence, from the original tokenisation in the row (or ``None``)."""
    tokens, start, end = row.get("input_text"), row.get("distractor_start"), row.get("distractor_end")
    if not isinstance(tokens, list) or not isinstance(start, int) or not isinstance(end, int):
        return None
    if "".join(map(str, tokens)) != prompt or not 0 <= start <= end < len(tokens):
        return None
    begin = len("".join(tokens[:start]))
    return begin, begin + len("".join(tokens[start:end + 1]))
