"""Evidence recall on the generated benchmark whose evidence is known (heat_module.data.evidence), for registry methods:
a configuration of the evaluation pipeline (``heat_module.evaluation.pipeline``) — the generated dataset of the
dataset table, the registry's methods as rows, the evidence recalls as metrics, the rows in the evaluation's cache.

The items are those of ``generate_evidence_items(seed=0)`` that SmolLM2 answers right (greedy next tokens = the
answer), the first ``--limit`` kept; each method attributes the answer's first token and is reported, per method, as
the mean over items with a percentile bootstrap 95 % interval of

- ``recall_evidence``: top-k recall of the evidence tokens (k = their number) among the context tokens, the final
  token left out of the ranking (``EvidenceRecall(exclude_last=1)``);
- ``recall_evidence_noquery``: the same with the whole final query sentence left out of the ranking (the query
  repeats the key of a key-value item, so a method that points at it is not pointing at the evidence);
- ``recall_answer``: top-k recall of the answer word's tokens inside the evidence;

and the paired difference to each trivial baseline that the registry has (``last_token``, ``recency``,
``position_prior``) and to constant scores (``chance``: ties broken in expectation, no model; each item's reference
record). The cache goes to ``benchmarks/eval_evidence/`` (git-ignored; resumable); the Markdown table is printed and
written there as ``table.md``.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/eval_evidence.py --limit 40 --methods attnlrp occlusion
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

import torch

from heat_module.evaluation.cache import Cache
from heat_module.evaluation.pipeline import Row, Scorer, Study, run_study, study_records

HERE = Path(__file__).resolve().parent
STUDY = "evidence"
DEFAULT_METHODS = ["heat", "attnlrp", "gated:attnlrp", "occlusion"]
TRIVIAL = ["last_token", "recency", "position_prior"]
METHOD_OPTIONS = {"occlusion": {"measure": "kl"}, "gated:occlusion": {"method_options": {"measure": "kl"}}}
METRICS = ("recall_evidence", "recall_evidence_noquery", "recall_answer")


def method_rows(names: list[str], model, tokenizer, log) -> list[Row]:
    """A row for each name the registry can build (built once here to check); trivial baselines only where
    registered."""
    from heat_module.attribution.registry import available_methods, build

    known = set(available_methods())
    out = []
    for name in names:
        base = name.split(":", 1)[-1] if name.startswith("gated:") else name
        if base not in known:
            log(f"skipped {name}: not in the registry")
            continue
        try:
            method = build(name, model, tokenizer, **METHOD_OPTIONS.get(name, {}))
        except Exception as e:  # noqa: BLE001 - a baseline that needs fitting first is reported, not fatal
            log(f"skipped {name}: {type(e).__name__}: {e}")
            continue
        if hasattr(method, "close"):
            method.close()
        out.append(Row(name, name, name, METHOD_OPTIONS.get(name, {})))
    return out


class EvidenceScorer(Scorer):
    """The evidence recalls of each row; the item's reference record holds constant scores' (``chance``)."""

    def score(self, example, x, target, scores, model_metrics, names=None):
        return [item_metrics(s, example) for s in scores]

    def reference(self, example, x, target, ids):
        return {"metrics": item_metrics(torch.zeros(len(example.input_ids)), example)}


def item_metrics(scores: torch.Tensor, ex) -> dict[str, float]:
    from heat_module.metrics.functional.evidence_recall import evidence_recall_values

    s = scores.detach().float().cpu()[None]
    query = ex.metadata["query_tokens"]
    return {
        "recall_evidence": float(evidence_recall_values(s, [ex.gold], exclude_last=1)[0]),
        "recall_evidence_noquery": float(evidence_recall_values(s, [ex.gold], exclude_last=1, protected=[query])[0]),
        "recall_answer": float(evidence_recall_values(s, [ex.metadata["answer_tokens"]], exclude_last=1)[0]),
    }


def fmt(ci: tuple[float, float, float]) -> str:
    est, lo, hi = ci
    if math.isnan(lo):
        return f"{est:.3f}"
    return f"{est:.3f} [{lo:.3f}, {hi:.3f}]"


def signed(ci: tuple[float, float, float]) -> str:
    est, lo, hi = ci
    return f"{est:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def table(records: list[dict], order: list[str], resamples: int, seed: int) -> str:
    """The Markdown tables of the study's cached rows (``chance``: the reference records)."""
    from heat_module.evaluation.stats import bootstrap_ci

    by: dict[str, dict[str, dict]] = {}
    seconds: dict[str, list[float]] = {}
    for r in records:
        if r.get("kind") not in ("row", "reference"):
            continue
        method = "chance" if r["kind"] == "reference" else r["row"]
        by.setdefault(method, {})[r["example"]] = r["metrics"]
        seconds.setdefault(method, []).append(r["seconds"] if r["kind"] == "row" else 0.0)
    ids = sorted(set.intersection(*(set(v) for v in by.values()))) if by else []
    lines = [f"{len(ids)} items (every method scored on each)", "",
             "| method | " + " | ".join(METRICS) + " | s / item |", "|---" * (len(METRICS) + 2) + "|"]
    for m in order:
        if m not in by:
            continue
        cells = [fmt(bootstrap_ci([by[m][i][k] for i in ids], resamples, seed)) for k in METRICS]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {sum(seconds[m]) / len(seconds[m]):.2f} |")
    kind_of = {i: i.rsplit("-", 1)[0] for i in ids}  # item ids are "<kind>-<index>"
    kinds = sorted(set(kind_of.values()))
    lines += ["", "recall_evidence by kind (items):", "",
              "| method | " + " | ".join(f"{k} ({sum(kind_of[i] == k for i in ids)})" for k in kinds) + " |",
              "|---" * (len(kinds) + 1) + "|"]
    for m in order:
        if m in by:
            cells = [fmt(bootstrap_ci([by[m][i]["recall_evidence"] for i in ids if kind_of[i] == k], resamples, seed))
                     for k in kinds]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    refs = [b for b in ["chance"] + TRIVIAL if b in by]
    for ref in refs:
        lines += ["", f"Paired difference method − {ref} (same items):", "",
                  "| method | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
        for m in order:
            if m in by and m != ref:
                cells = [signed(bootstrap_ci([by[m][i][k] - by[ref][i][k] for i in ids], resamples, seed))
                         for k in METRICS]
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def filter_line(records: list[dict]) -> str:
    """Answered right / tried, by kind: the generated items up to the last one kept (``<kind>-<index>`` ids)."""
    from heat_module.data.evidence import generate_evidence_items

    kept = {r["example"] for r in records if r.get("kind") == "reference"}
    if not kept:
        return ""
    last = max(int(i.rsplit("-", 1)[1]) for i in kept)
    tried = Counter(item.kind for item in generate_evidence_items(last + 1))
    passed = Counter(i.rsplit("-", 1)[0] for i in kept)
    return ", ".join(f"{k} {passed[k]}/{tried[k]}" for k in tried)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="benchmarks/eval_evidence.py", description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=40, help="items to keep (answered right by the model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, help="registry names (trivial baselines are "
                   "added when registered)")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default=str(HERE / "eval_evidence"))
    p.add_argument("--summarize", action="store_true", help="only print the table of the rows already cached (the "
                   "cache is appended to after every item, so an interrupted run can be summarised)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    cache = Cache(out / "cache.jsonl")
    names = list(args.methods) + [t for t in TRIVIAL if t not in args.methods]
    if args.summarize:
        records = study_records(cache, STUDY)
        order = ["chance"] + list(dict.fromkeys(r["row"] for r in records if r.get("kind") == "row"))
        print(table(records, order, args.bootstrap, args.seed))
        return 0

    import heat_module as hm

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    model, tok = hm.load_model(args.model)
    model.eval()
    rows = method_rows(names, model, tok, log)
    study = Study(STUDY, ["evidence"], rows, EvidenceScorer(), limits={"evidence": args.limit}, log=log)
    examples, _ = run_study(study, model, tok, cache)
    records = study_records(cache, STUDY, examples)
    text = (f"Filter (answered right / tried, by kind): {filter_line(records)}\n\n"
            + table(records, ["chance"] + [r.label for r in rows], args.bootstrap, args.seed))
    (out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
