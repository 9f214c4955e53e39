"""Evidence recall on the generated benchmark whose evidence is known (heat_module.data.evidence), for registry methods.

Builds the seeded items, keeps those SmolLM2 answers right (greedy next tokens = the answer) until ``--limit`` are
kept, attributes the answer's first token with every method and reports, per method, the mean over items with a
percentile bootstrap 95 % interval of

- ``recall_evidence``: top-k recall of the evidence tokens (k = their number) among the context tokens, the final
  token left out of the ranking (``EvidenceRecall(exclude_last=1)``);
- ``recall_evidence_noquery``: the same with the whole final query sentence left out of the ranking (the query
  repeats the key of a key-value item, so a method that points at it is not pointing at the evidence);
- ``recall_answer``: top-k recall of the answer word's tokens inside the evidence;

and the paired difference to each trivial baseline that the registry has (``last_token``, ``recency``,
``position_prior``) and to constant scores (``chance``: ties broken in expectation, no model). Raw rows go to
``benchmarks/eval_evidence/`` (git-ignored); the Markdown table is printed and written there as ``table.md``.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/eval_evidence.py --limit 40 --methods attnlrp occlusion
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_METHODS = ["heat", "attnlrp", "gated:attnlrp", "occlusion"]
TRIVIAL = ["last_token", "recency", "position_prior"]
METHOD_OPTIONS = {"occlusion": {"measure": "kl"}, "gated:occlusion": {"method_options": {"measure": "kl"}}}
METRICS = ("recall_evidence", "recall_evidence_noquery", "recall_answer")


def build_methods(names: list[str], model, tokenizer, log) -> dict:
    """``{name: method}`` for each name the registry can build; trivial baselines only where registered."""
    from heat_module.attribution.registry import available_methods, build

    known = set(available_methods())
    out = {}
    for name in names:
        base = name.split(":", 1)[-1] if name.startswith("gated:") else name
        if base not in known:
            log(f"skipped {name}: not in the registry")
            continue
        try:
            out[name] = build(name, model, tokenizer, **METHOD_OPTIONS.get(name, {}))
        except Exception as e:  # noqa: BLE001 - a baseline that needs fitting first is reported, not fatal
            log(f"skipped {name}: {type(e).__name__}: {e}")
    return out


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


def table(rows: list[dict], order: list[str], resamples: int, seed: int) -> str:
    from heat_module.evaluation.stats import bootstrap_ci

    by: dict[str, dict[str, dict]] = {}
    seconds: dict[str, list[float]] = {}
    for r in rows:
        by.setdefault(r["method"], {})[r["id"]] = r["metrics"]
        seconds.setdefault(r["method"], []).append(r["seconds"])
    ids = sorted(set.intersection(*(set(v) for v in by.values()))) if by else []
    lines = [f"{len(ids)} items (every method scored on each)", "",
             "| method | " + " | ".join(METRICS) + " | s / item |", "|---" * (len(METRICS) + 2) + "|"]
    for m in order:
        if m not in by:
            continue
        cells = [fmt(bootstrap_ci([by[m][i][k] for i in ids], resamples, seed)) for k in METRICS]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {sum(seconds[m]) / len(seconds[m]):.2f} |")
    kinds = sorted({r["kind"] for r in rows})
    kind_of = {r["id"]: r["kind"] for r in rows}
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="benchmarks/eval_evidence.py", description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=40, help="items to keep (answered right by the model)")
    p.add_argument("--generate", type=int, default=800, help="items generated at most (the filter stops early)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, help="registry names (trivial baselines are "
                   "added when registered)")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default=str(HERE / "eval_evidence"))
    p.add_argument("--summarize", action="store_true", help="only print the table of the rows already written "
                   "(rows.jsonl is appended to after every item, so an interrupted run can be summarised)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    if args.summarize:
        rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines() if line.strip()]
        order = ["chance"] + list(dict.fromkeys(r["method"] for r in rows if r["method"] != "chance"))
        print(table(rows, order, args.bootstrap, args.seed))
        return 0

    import heat_module as hm
    from heat_module.data.evidence import generate_evidence_items, keep_answered, to_example

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    out.mkdir(parents=True, exist_ok=True)
    model, tok = hm.load_model(args.model)
    model.eval()
    t0 = time.perf_counter()
    kept, tried = [], Counter()
    passed = Counter()
    for item in generate_evidence_items(args.generate, seed=args.seed):
        if len(kept) >= args.limit:
            break
        tried[item.kind] += 1
        if keep_answered([item], model, tok):
            kept.append(item)
            passed[item.kind] += 1
    filter_line = ", ".join(f"{k} {passed[k]}/{tried[k]}" for k in tried)
    log(f"kept {len(kept)} items in {time.perf_counter() - t0:.0f} s (answered right / tried: {filter_line})")
    examples = [to_example(item, tok) for item in kept]

    names = list(args.methods) + [t for t in TRIVIAL if t not in args.methods]
    methods = build_methods(names, model, tok, log)
    rows = []
    with open(out / "rows.jsonl", "w") as f:
        for ex in examples:
            item_rows = [{"id": ex.id, "kind": ex.metadata["kind"], "method": "chance", "seconds": 0.0,
                          "metrics": item_metrics(torch.zeros(len(ex.input_ids)), ex)}]
            for name, method in methods.items():
                t = time.perf_counter()
                res = method.attribute(torch.tensor(ex.input_ids), target=ex.target_id)
                sec = time.perf_counter() - t
                item_rows.append({"id": ex.id, "kind": ex.metadata["kind"], "method": name, "seconds": sec,
                                  "metrics": item_metrics(res.scores, ex)})
            for r in item_rows:
                f.write(json.dumps(r) + "\n")
            f.flush()
            rows += item_rows
            log(f"{ex.id}: done")
    text = (f"Filter (answered right / tried, by kind): {filter_line}\n\n"
            + table(rows, ["chance"] + [n for n in names if n in methods], args.bootstrap, args.seed))
    (out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
