"""Is HEAT worth choosing? Run (or resume) the comparison of issue 15 and write its report.

Data from ``--path dataset=FILE`` or ``$HEAT_DATA_DIR``. Stages: ``cheap`` (every row but exact-S HEAT), ``exact``
(exact-S HEAT rows on the first ``--exact-limits`` examples), ``report`` (no computation). The recorded run::

    export HEAT_DATA_DIR=/path/to/shared/data OMP_NUM_THREADS=1
    B="--datasets longra tellmewhy wikibio"; E="--exact-limits longra=50 tellmewhy=20 wikibio=22 --wait 3600"
    PYTHONPATH=. nohup python benchmarks/eval_choice.py --stage cheap $B --cache-name cache-bench.jsonl &
    PYTHONPATH=. nohup python benchmarks/eval_choice.py --stage cheap --datasets curated lambada \\
        --cache-name cache-align.jsonl &                                # paused after 29 examples
    PYTHONPATH=. nohup python benchmarks/eval_choice.py --stage exact $B $E --cache-name cache-exact.jsonl &
    # later, two more pairs on later parts of the same order:
    PYTHONPATH=. nohup python benchmarks/eval_choice.py --stage cheap $B --start 33 --cache-name cache-bench2.jsonl &
    PYTHONPATH=. nohup python benchmarks/eval_choice.py --stage exact $B $E --start 33 --cache-name cache-exact2.jsonl &
    PYTHONPATH=. nohup python benchmarks/eval_choice.py --stage cheap $B --start 27 --cache-name cache-bench3.jsonl &
    PYTHONPATH=. nohup python benchmarks/eval_choice.py --stage exact $B $E --start 27 --cache-name cache-exact3.jsonl &
    PYTHONPATH=. python benchmarks/eval_choice.py --stage report          # -> benchmarks/RESULTS-choice.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from heat_module.evaluation.choice import CHOICE_DATASETS, ChoiceConfig, run_choice
from heat_module.evaluation.choice_report import write_choice_report

HERE = Path(__file__).resolve().parent

NOTES = """
## What ran (recorded run, SmolLM2-135M-Instruct, fp32, 1 torch thread per process, 2-core CPU shared with ~6 agents)

- **Benchmarks (Soft-NC, Soft-NS, ABPC, rank-transformed Soft-NC/NS), all 11 rows:** LongRA 16, TellMeWhy 14,
  WikiBio 13 examples (AttnLRP / occlusion-KL / M·I have 1–2 more on TellMeWhy and WikiBio: the run was stopped
  mid-example). Examples are the first ones of a seeded random order with the datasets interleaved, processed by
  three pairs of processes (cheap stage `--start 0/27/33` + exact stage `--wait`), stopped after ~57 min.
- **Alignment (DSA, F1; no model metrics), 8 cheap rows:** curated 15, annotated LAMBADA 14 passages (the
  alignment process was paused at 16:02 to give the CPU to the benchmarks). Exact-S rows were **not** run on the
  alignment sets.
- **Not run:** the remaining examples (LongRA 34, TellMeWhy 6, WikiBio 9, curated 35, LAMBADA 93); Soft-NC/NS at a
  fixed entropy (`scores_transform="entropy"`, implemented and tested, not in the run); rank-transformed Soft-NC/NS
  with more than one mask seed; `gated:occlusion` with `measure="prob"` (M·I is the gate on occlusion-KL).
- Mask seeds: Soft-NC/NS use seeds 0, 1, 2 (one Bernoulli mask each); rank-transformed Soft-NC/NS seed 0; ABPC
  T = 4 (3 interior points, deterministic). Seconds are wall-clock on the contended CPU, measured for every
  component on every example; the ratios to AttnLRP are what the rule uses.

## Reading

1. **The rule could not be applied:** TellMeWhy (14) and WikiBio (13) fall short of the 15 examples every candidate
   needs, so `HEATConfig()` is unchanged. With the examples there are, the best mean rank is M·I (1.56), then
   Fisher-S HEAT with `normalize="sum"` (1.89); exact-S HEAT is not eligible whatever its metrics (50× AttnLRP's
   seconds, above the 20× bound); Fisher S costs 13.3× and M·I 8.8×.
2. **Default HEAT (eq. 5, exact S) is not more faithful than AttnLRP and costs ~50× more.** Paired differences
   (HEAT − AttnLRP): Soft-NC +0.070 [0.000, 0.144] LongRA, +0.075 [−0.019, 0.187] TellMeWhy, −0.148 [−0.303, −0.006]
   WikiBio; ABPC −0.045 [−0.068, −0.023] on TellMeWhy (AttnLRP better), the other two overlap 0.
3. **The gate is what helps on the soft metrics, on any method:** M·AttnLRP (1.6× AttnLRP's cost) and M·I beat
   default HEAT on Soft-NC and Soft-NS on all three benchmarks with intervals excluding 0 (e.g. TellMeWhy
   HEAT − M·AttnLRP: Soft-NC −0.544 [−0.670, −0.395]); M·AttnLRP has the best benchmark-mean Soft-NS (0.313).
4. **Normalising S and I makes β and γ matter:** `normalize="sum"` lifts exact HEAT's benchmark-mean Soft-NC from
   0.266 to 0.663 and Soft-NS from 0.152 to 0.247 (Fisher: 0.403 → 0.646, 0.182 → 0.244); `"rank"` flattens the
   scores and loses on Soft-NC (0.20).
5. **On the rank-based metrics everything serious ties.** ABPC (benchmark means) 0.095–0.134 for every non-random
   method, occlusion-KL highest (0.134); random 0.009. Soft-NC/NS on ranks barely separate methods at these context
   lengths (a linear ramp of ranks keeps every token with probability ≥ 1 − 2/n): values 0.01–0.15 with overlapping
   intervals everywhere. So the soft-metric gains of the gated rows come from concentration at least as much as from
   a better order.
6. **Alignment:** on the curated set only AttnLRP-based rows have clearly positive DSA (M·AttnLRP 0.091, AttnLRP
   0.047); I-based rows sit at 0 (F1 ≤ 0.06, below random's 0.18: the first answer token is improbable for
   SmolLM2, see RESULTS-eval.md). On annotated LAMBADA (human rationales) Fisher HEAT with `normalize="rank"` has
   the highest DSA (0.255) and M·AttnLRP the highest F1 (0.445); 14 passages give wide intervals.
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
    p.add_argument("--stage", choices=("cheap", "exact", "report"), default="cheap")
    p.add_argument("--datasets", nargs="+", default=list(CHOICE_DATASETS), choices=CHOICE_DATASETS)
    p.add_argument("--path", nargs="*", help="dataset=FILE (default: under $HEAT_DATA_DIR)")
    p.add_argument("--limits", nargs="*", default=["longra=50", "curated=50"], help="dataset=N (default: all)")
    p.add_argument("--exact-limits", nargs="*", default=[], help="dataset=N examples with exact S")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--abpc-steps", type=int, default=4)
    p.add_argument("--wait", type=float, default=0.0,
                   help="exact stage: seconds to wait per example for the cheap stage's components")
    p.add_argument("--start", type=int, default=0, help="skip the first START examples of the interleaved order")
    p.add_argument("--stop", type=int, default=None, help="end of this process's part of the order (exclusive)")
    p.add_argument("--no-notes", action="store_true", help="leave the recorded run's discussion out of the report")
    p.add_argument("--cache-name", default="cache.jsonl", help="this process's cache file (cache*.jsonl)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default=str(HERE / "eval_choice"))
    p.add_argument("--report", default=str(HERE / "RESULTS-choice.md"))
    args = p.parse_args(argv)
    cfg = ChoiceConfig(model=args.model, datasets=list(args.datasets), paths=_pairs(args.path),
                       limits=_pairs(args.limits), exact_limits=_pairs(args.exact_limits), max_tokens=args.max_tokens,
                       abpc_steps=args.abpc_steps, out_dir=args.out_dir, threads=args.threads,
                       cache_name=args.cache_name, wait_for_components=args.wait, start=args.start,
                       stop=args.stop)
    if args.stage != "report":
        run_choice(cfg, args.stage, log=lambda m: print(m, flush=True))
    else:
        path = write_choice_report(cfg, Path(args.report), command="benchmarks/eval_choice.py " + shlex.join(argv),
                                   notes="" if args.no_notes else NOTES)
        print(f"Report written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
