"""Is HEAT worth choosing? Run (or resume) the comparison of issue 15 and write its report.

Data from ``--path dataset=FILE`` or ``$HEAT_DATA_DIR``. Stages: ``cheap`` (every row but exact-S HEAT), ``exact``
(exact-S HEAT rows on the first ``--exact-limits`` examples), ``report`` (no computation). The recorded run::

    export HEAT_DATA_DIR=/path/to/shared/data OMP_NUM_THREADS=1
    PYTHONPATH=. nohup python benchmarks/eval_choice.py --stage cheap --datasets longra tellmewhy wikibio &
    PYTHONPATH=. nohup python benchmarks/eval_choice.py --stage cheap --datasets curated lambada &
    PYTHONPATH=. python benchmarks/eval_choice.py --stage exact --exact-limits longra=N tellmewhy=N wikibio=N
    PYTHONPATH=. python benchmarks/eval_choice.py --stage report
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from heat_module.evaluation.choice import CHOICE_DATASETS, ChoiceConfig, run_choice
from heat_module.evaluation.choice_report import write_choice_report

HERE = Path(__file__).resolve().parent


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
    p.add_argument("--cache-name", default="cache.jsonl", help="this process's cache file (cache*.jsonl)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default=str(HERE / "eval_choice"))
    p.add_argument("--report", default=str(HERE / "RESULTS-choice.md"))
    args = p.parse_args(argv)
    cfg = ChoiceConfig(model=args.model, datasets=list(args.datasets), paths=_pairs(args.path),
                       limits=_pairs(args.limits), exact_limits=_pairs(args.exact_limits), max_tokens=args.max_tokens,
                       abpc_steps=args.abpc_steps, out_dir=args.out_dir, threads=args.threads,
                       cache_name=args.cache_name, wait_for_components=args.wait, start=args.start)
    if args.stage != "report":
        run_choice(cfg, args.stage, log=lambda m: print(m, flush=True))
    else:
        path = write_choice_report(cfg, Path(args.report), command="benchmarks/eval_choice.py " + shlex.join(argv))
        print(f"Report written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
