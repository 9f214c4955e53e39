"""Is HEAT worth choosing? Run (or resume) the two "choice" configurations of the evaluation pipeline and write
their reports (``heat_module.evaluation.choice``; rows, metrics and rules there).

The context study (the rule in the README's "Choosing the default over the context", reported on top of
RESULTS-choice.md; caches in ``benchmarks/out/choice/``, git-ignored)::

    export HEAT_DATA_DIR=/path/to/shared/data OMP_NUM_THREADS=1
    PYTHONPATH=. python benchmarks/eval_choice.py --stage context --datasets longra tellmewhy wikibio evidence \
        --limits longra=25 evidence=30 --held-apart 10 --methods last_token recency --cache-name cache-rule.jsonl
    PYTHONPATH=. python benchmarks/eval_choice.py --stage context --datasets curated lambada \
        --limits curated=20 lambada=20 --methods last_token recency --cache-name cache-align.jsonl
    PYTHONPATH=. python benchmarks/eval_choice.py --stage context-report    # -> benchmarks/RESULTS-choice.md

The earlier study (Soft-NC/NS and ABPC over every token; its report is kept below the new one). Stages: ``cheap``
(every row but exact-S HEAT), ``exact`` (exact-S HEAT rows on the first ``--exact-limits`` examples), ``report`` (no
computation). Processes may split the seeded interleaved order with ``--start``/``--stop``, each with its own
``--cache-name`` (every ``cache*.jsonl`` of the folder is read)::

    B="--datasets longra tellmewhy wikibio --methods last_token recency"
    A="--datasets curated lambada --methods last_token recency"
    PYTHONPATH=. python benchmarks/eval_choice.py --stage cheap $B --limits longra=50 --cache-name cache-bench.jsonl
    PYTHONPATH=. python benchmarks/eval_choice.py --stage exact $B --limits longra=50 \
        --exact-limits longra=50 tellmewhy=20 wikibio=22 --cache-name cache-exact.jsonl
    PYTHONPATH=. python benchmarks/eval_choice.py --stage cheap $A --limits curated=50 --cache-name cache-align.jsonl
    PYTHONPATH=. python benchmarks/eval_choice.py --stage exact $A --limits curated=50 \
        --exact-limits curated=50 lambada=107 --cache-name cache-exact-align.jsonl
    PYTHONPATH=. python benchmarks/eval_choice.py --stage cheap --datasets lambada --max-tokens 256 \
        --methods last_token recency --cache-name cache-align5.jsonl   # the 6 LAMBADA passages over 96 tokens
    PYTHONPATH=. python benchmarks/eval_choice.py --stage report          # -> benchmarks/RESULTS-choice.md

``--methods`` names the registry's rows shown beside the study's own (default: every row the method registry
declares; the recorded runs had the two priors).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from heat_module.evaluation.choice import CHOICE_DATASETS, CONTEXT_DATASETS, ChoiceConfig, run_choice, run_context
from heat_module.evaluation.choice_report import write_choice_report
from heat_module.evaluation.config import parse_methods

HERE = Path(__file__).resolve().parent
CONTEXT_TITLE = "# Is HEAT worth choosing? Over the context"
SEPARATOR = "\n---\n\n"
CONTEXT_NOTES = """
## What ran

- Commit 672801e, 2026-12-05 17:23–18:29 UTC, a shared 2-core CPU (AMD EPYC, no GPU; load average 4–5 from other
  jobs), torch 2.13.0+cpu, 1 torch thread; SmolLM2-135M-Instruct, fp32; contexts ≤ 96 tokens. Commands in the module
  docstring of `benchmarks/eval_choice.py` (`--stage context`, then `--stage context-report`).
- **Rule datasets:** LongRA 25 (seeded order), TellMeWhy 20 (all), WikiBio 22 (all), generated evidence benchmark 30
  (the first 30 items of `generate_evidence_items(seed=0)` that SmolLM2 answers right; target = the answer's first
  token). Every row on every example. **Alignment (DSA, F1):** curated 14, annotated LAMBADA 13 (the run was stopped
  at 18:29; it ran at low priority beside the rule run, so its seconds are not comparable and the rule does not use
  them).
- **Held apart** (never evaluated): the 10 LongRA examples after the evaluated 25 and the 10 generated items after the
  evaluated 30; AttnLRP's scores on them fitted the recency rate (`fit_rate` over the context, rates < 1) and the
  position profile. The fit gave rate 0.99: AttnLRP's mass over the context is nearly flat beyond the last two
  tokens, so the fitted `recency` is almost uniform in its values and ranks by recency (on Soft-NC/NS it scores like
  `last_token`, which over the context is uniform).
- **Not run:** exact S (no time on this machine; the rule's candidates are those with Fisher S or without S);
  `gated:attnlrp` and occlusion-KL are computed from the cached components (M × AttnLRP; I of eq. 4 with the zero
  mask), not through their registry `attribute` (tested equal in the earlier study's tests); `last_token`, `recency`,
  `position_prior` and AttnLRP go through their public `attribute`.

## Reading

1. **The rule applies; every candidate is eligible, and it picks HEAT with Fisher S and `normalize="sum"`**
   (`HEATConfig.preset("fisher", normalize="sum")`, 15.6× AttnLRP): score 2.50, then M·I 3.12, M·AttnLRP 3.31,
   occlusion-KL 4.75, AttnLRP 4.94. Every candidate beats both trivial baselines on Soft-NC, deletion-ABPC and
   evidence recall; **none resolves a gain on Soft-NS over the context** (all intervals include 0).
2. **The winner's lead over M·I is small and mostly unresolved:** per dataset, Fisher-S-sum − M·I resolves only on
   evidence recall (+0.053 [+0.029, +0.079]) and, the other way, on LongRA Soft-NC (−0.035 [−0.077, −0.006]); every
   other cell includes 0. Ranks count order, not margin.
3. **AttnLRP finds the evidence best** (recall 0.537 vs 0.454 for the winner; −0.083 [−0.123, −0.040] for the
   winner) at 1/16 of its cost, but ranks low on Soft-NC over the context. The gate M lowers evidence recall on
   AttnLRP (0.537 → 0.452) and raises Soft-NC everywhere.
4. **Position explains part of every score:** over the context, `position_prior` reaches Soft-NC 0.096 and
   deletion-ABPC 0.070 with no model; the position-controlled scores (metric minus the prior's) of every real method
   stay above 0 on Soft-NC, deletion-ABPC and evidence recall, and are at most +0.022 on Soft-NS.
5. **Alignment (not in the rule; n = 13–14, thin):** on the curated set only AttnLRP-based rows find gold tokens
   (DSA M·AttnLRP 0.094, AttnLRP 0.052; F1 AttnLRP 0.201); on annotated LAMBADA the recency prior has the best F1
   (0.576, above every method: AttnLRP − recency −0.147 [−0.218, −0.067]), and rank-normalised HEAT the best DSA
   (0.261–0.263).
"""

NOTES = """
## What ran (SmolLM2-135M-Instruct, fp32, greedy targets, contexts ≤ 96 tokens, LAMBADA ≤ 110, 1 torch thread)

- **Benchmarks (Soft-NC, Soft-NS, ABPC, Soft-NC/NS on ranks), all 11 rows:** LongRA 50, TellMeWhy 20 (all),
  WikiBio 22 (all). **Alignment (DSA, F1), all 11 rows:** curated 50, annotated LAMBADA 107 (all; the 6 passages
  longer than the run's 96-token bound were added with `--datasets lambada --max-tokens 256`, 97–110 tokens).
- Two sittings on 2026-12-01 on this 2-core CPU: 16:00–16:57 with 6 processes beside other agents' jobs, then
  17:18–18:35 with 2–3 processes and nothing else; every example's components, metrics and seconds are cached in
  `benchmarks/eval_choice/cache*.jsonl` (the report reads them all). Seconds are wall-clock per component on each
  example, so methods are compared on the same example under the same load; the × AttnLRP ratios are what the rule
  uses. The commands are in the module docstring of `benchmarks/eval_choice.py` (processes split the seeded
  interleaved order with `--start`/`--stop`).
- Mask seeds: Soft-NC/NS use seeds 0, 1, 2 (one Bernoulli mask each); Soft-NC/NS on ranks seed 0; ABPC T = 4.
- **Not run:** Soft-NC/NS at a fixed entropy (`scores_transform="entropy"`, implemented and tested), ranks with more
  than one seed, `gated:occlusion` with `measure="prob"` (M·I is the gate on occlusion-KL).

## Reading

1. **The rule applies and picks M·I:** mean rank 1.22 of 9, then Fisher-S HEAT with `normalize="sum"` 1.78, eq. 5
   with Fisher S 3.33, with rank normalisation 3.67; the exact-S configurations cost 45× AttnLRP and are not
   eligible. `HEATConfig()` is now β = 0, γ = 1 (M·I; γ = 1 ranks exactly like the evaluated γ = 0.5 under every
   metric here, all scale-free); `HEATConfig.preset("exact")` is the old default, `"paper"` eq. 5 as the authors
   run it.
2. **Eq. 5 with exact S (the old default) is not more faithful than AttnLRP at 45× its cost:** HEAT − AttnLRP
   Soft-NC +0.049 [0.008, 0.090] LongRA, +0.071 [0.003, 0.153] TellMeWhy, −0.144 [−0.260, −0.027] WikiBio; Soft-NS
   within ±0.02 of 0 on LongRA and TellMeWhy, −0.150 [−0.218, −0.078] on WikiBio; ABPC −0.038 [−0.055, −0.018] on
   TellMeWhy, overlapping 0 elsewhere.
3. **Adding S does not pay.** M·I minus the best row with S (exact S, `normalize="sum"`): Soft-NC +0.144, +0.054,
   +0.093 (all intervals above 0), Soft-NS and ABPC ≥ 0 or overlapping 0 on every benchmark. Only Soft-NC on ranks
   resolves a gain from S (0.002–0.013 on LongRA and WikiBio, in a metric whose values are 0.01–0.08).
4. **The gate is what helps, on any method:** Soft-NC AttnLRP 0.273 → M·AttnLRP 0.684, occlusion-KL 0.368 → M·I
   0.742 (benchmark means). M·AttnLRP (1.6× AttnLRP) has the best mean Soft-NS (0.314) and beats M·I on WikiBio
   (M·I − M·AttnLRP: Soft-NC −0.066 [−0.127, −0.013], Soft-NS −0.090 [−0.164, −0.009]); M·I leads on LongRA (Soft-NC
   +0.113 [0.052, 0.180], Soft-NS +0.024 [0.004, 0.048]) and on TellMeWhy's Soft-NC (+0.125 [0.057, 0.204]).
5. **Normalising S and I makes β and γ matter:** `normalize="sum"` lifts eq. 5's Soft-NC 0.265 → 0.645 (exact S) and
   0.427 → 0.640 (Fisher S); `"rank"` flattens the scores and loses on the soft metrics (0.20).
6. **Rank-only metrics tie:** ABPC 0.087–0.128 for every non-random method (random 0.016), occlusion-KL highest;
   most paired ABPC intervals contain 0 (M·I − AttnLRP +0.029 [0.002, 0.065] on LongRA; occlusion-KL − M·I +0.045
   [0.023, 0.069] on TellMeWhy). Soft-NC/NS on ranks barely separate anything. Much of the soft-metric gain of the
   gated rows is concentration, not a better order.
7. **Alignment (not in the rule) is where S adds and M·I is weak:** curated — AttnLRP-based rows find the gold
   tokens best (DSA: M·AttnLRP 0.070, AttnLRP 0.053; F1: AttnLRP 0.204, the only row above random's 0.165); eq. 5
   with exact S follows (DSA 0.020, F1 0.113; minus M·I: +0.021 [0.011, 0.032], +0.104 [0.082, 0.127]); I-based rows
   sit at DSA ≈ 0 (the first answer token is improbable for SmolLM2, RESULTS-eval.md). Annotated LAMBADA (human
   rationales): rank-normalised HEAT has the best DSA (Fisher S 0.265, exact S 0.260), then occlusion-KL 0.238;
   eq. 5 with exact S (0.203) ties AttnLRP (0.197; +0.007 [−0.019, 0.032]) and beats M·I (+0.066 [0.037, 0.094]);
   the gate lowers DSA (I 0.238 → M·I 0.137; AttnLRP 0.197 → M·AttnLRP 0.118) and raises F1 (I 0.382 → 0.419,
   AttnLRP 0.377 → 0.425). Users who want agreement with human rationales should take
   `preset("fisher", normalize="rank")`, not the default.
"""


def _pairs(items: list[str] | None) -> dict:
    out = {}
    for item in items or []:
        k, _, v = item.partition("=")
        out[k] = int(v) if v.isdigit() else v
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="benchmarks/eval_choice.py", description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=("cheap", "exact", "report", "context", "context-report"), default="cheap")
    p.add_argument("--datasets", nargs="+", default=None, choices=CONTEXT_DATASETS,
                   help="default: every dataset of the stage (evidence: the context stages only)")
    p.add_argument("--held-apart", type=int, default=10, help="context: LongRA and generated examples held apart to "
                   "fit the priors")
    p.add_argument("--path", nargs="*", help="dataset=FILE (default: under $HEAT_DATA_DIR)")
    p.add_argument("--limits", nargs="*", default=["longra=50", "curated=50"], help="dataset=N (default: all)")
    p.add_argument("--exact-limits", nargs="*", default=[], help="dataset=N examples with exact S")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--abpc-steps", type=int, default=4)
    p.add_argument("--methods", nargs="*", default=None, help="the registry's rows beside the study's own, as "
                   "label or label=name:key=value (default: every row the method registry declares)")
    p.add_argument("--start", type=int, default=0, help="skip the first START examples of the interleaved order")
    p.add_argument("--stop", type=int, default=None, help="end of this process's part of the order (exclusive)")
    p.add_argument("--no-notes", action="store_true", help="leave the recorded run's discussion out of the report")
    p.add_argument("--cache-name", default="cache.jsonl", help="this process's cache file (cache*.jsonl)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default=str(HERE / "out" / "choice"), help="caches (git-ignored)")
    p.add_argument("--report", default=str(HERE / "RESULTS-choice.md"))
    args = p.parse_args(argv)
    context = args.stage.startswith("context")
    datasets = args.datasets or list(CONTEXT_DATASETS if context else CHOICE_DATASETS)
    cfg = ChoiceConfig(model=args.model, datasets=list(datasets), held_apart=args.held_apart, paths=_pairs(args.path),
                       limits=_pairs(args.limits), exact_limits=_pairs(args.exact_limits), max_tokens=args.max_tokens,
                       abpc_steps=args.abpc_steps, out_dir=args.out_dir, threads=args.threads,
                       cache_name=args.cache_name, start=args.start, stop=args.stop,
                       methods=None if args.methods is None else parse_methods(args.methods))
    if args.stage == "context":
        run_context(cfg, log=lambda m: print(m, flush=True))
    elif args.stage == "context-report":
        from heat_module.evaluation.choice_report import write_context_report

        report = Path(args.report)
        previous = report.read_text(encoding="utf-8") if report.exists() else ""
        if previous.startswith(CONTEXT_TITLE) and SEPARATOR in previous:  # the earlier reports below ours stay
            previous = previous.split(SEPARATOR, 1)[1]
        elif previous.startswith(CONTEXT_TITLE):
            previous = ""
        path = write_context_report(cfg, report, command="benchmarks/eval_choice.py " + shlex.join(argv),
                                    notes="" if args.no_notes else CONTEXT_NOTES, previous=previous)
        print(f"Report written to {path}")
    elif args.stage != "report":
        run_choice(cfg, args.stage, log=lambda m: print(m, flush=True))
    else:
        path = write_choice_report(cfg, Path(args.report), command="benchmarks/eval_choice.py " + shlex.join(argv),
                                   notes="" if args.no_notes else NOTES)
        print(f"Report written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
