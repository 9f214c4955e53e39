"""Selecting examples: a larger limit extends a run (prefix-stable), the length cap; loading merges LongRA files."""

from __future__ import annotations

from heat_module.evaluation.datasets import EvalExample, load_dataset, select_examples
from heat_module.testing import tiny_tokenizer


def test_selection_is_prefix_stable():
    examples = [EvalExample("d", str(k), [1] * (3 + k % 5), -1) for k in range(30)]
    small, large = select_examples(examples, 5, 6, seed=0), select_examples(examples, 10, 6, seed=0)
    assert [e.id for e in large[:5]] == [e.id for e in small]
    assert all(len(e.input_ids) <= 6 for e in large)


def test_longra_files_are_merged_and_deduplicated(files, tmp_path, config_factory):
    cfg = config_factory(files, tmp_path)
    examples = load_dataset("longra", cfg.data_path("longra"), tiny_tokenizer())
    assert len(examples) == 3  # longra_b.jsonl repeats an example of longra_a.jsonl
    assert all(e.id.startswith("longra_a:") and e.distractor for e in examples)
