"""Fixtures of the evaluation tests: small data files in the shared files' formats, and a config that uses them."""

from __future__ import annotations

import json

import pytest

from heat_module.evaluation import EvalConfig, parse_methods

CURATED = [
    {"id": f"c{k}", "narrative_segment": narrative, "sciq_support_segment": support,
     "question": "why ?", "answer": answer, "target_first_answer_token": answer,
     "input_text": f"{narrative} <s> {support} <s> Question: why ?",
     "important_words": words, "important_word_indices_in_sciq_support": indices}
    for k, (narrative, support, answer, words, indices) in enumerate([
        ("the dog ran in the park .", "the plant made light under the sun .", "plant", ["plant", "light"], [1, 3]),
        ("she lost her hat in the wind .", "water and light made the tree green .", "tree", ["water", "tree"], [0, 6]),
        ("he read a book .", "the sun gave light to the leaves .", "sun", ["sun", "leaves"], [1, 6]),
    ])
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    prompt = "the cat sat on the hat . ( the dog ran in the park ) . i saw the"
    tokens = prompt.split(" ")
    start, end = tokens.index("("), tokens.index(")")
    rows = [{"id": k, "prompt": p, "target_text": " cat", "input_text": [t if i == 0 else " " + t for i, t in
                                                                          enumerate(p.split(" "))],
             "distractor_start": start, "distractor_end": end}
            for k, p in enumerate([prompt, prompt.replace("i saw", "we saw"), prompt.replace("cat sat", "dog sat")])]
    (root / "longra_a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "longra_b.jsonl").write_text(json.dumps(rows[0]) + "\n")  # a duplicate across files
    (root / "tellmewhy.txt").write_text("the cat was happy . why was the cat\nhe ate the bread . why did he eat\n"
                                        "she read a book . why\n")
    (root / "wikibio.txt").write_text("paris is the capital of\nthe river is cold and\nthe old house\n")
    (root / "curated.json").write_text(json.dumps({"examples": CURATED}))
    return root


def make_config(files, out_dir, **kw) -> EvalConfig:
    paths = {"longra": str(files / "longra_*.jsonl"), "tellmewhy": str(files / "tellmewhy.txt"),
             "wikibio": str(files / "wikibio.txt"), "curated": str(files / "curated.json")}
    defaults = dict(model="tiny", paths=paths, limit=2, num_masks=2,
                    bootstrap=50, out_dir=str(out_dir), progress=False, betas=[0.0, 0.5, 1.0],
                    sweep_sinks=["first"], baselines=parse_methods(["attention_rollout", "gradient_norm", "random",
                                                                     "ig=integrated_gradients:steps=4"]))
    defaults.update(kw)
    return EvalConfig(**defaults)


@pytest.fixture
def config_factory():
    """``make_config(files, out_dir, **overrides)``: the test run's settings over the fixture files."""
    return make_config
