"""Reproduce the paper's evaluation (Tables 1, 2, 5, 7) on SmolLM2 with the code behind ``heat eval``.

Same options as ``heat eval`` (``heat_module.evaluation.build_parser``), with defaults for this repository: the
cache and figures under ``benchmarks/eval_smollm2/``, the report at ``benchmarks/RESULTS-eval.md``, one torch
thread (on a shared CPU, more threads are slower). Resumable: re-running skips finished (dataset, example, method)
results, and a larger ``--limit`` extends the run. Example::

    PYTHONPATH=. nohup .venv/bin/python benchmarks/eval_paper.py --limit 12 > benchmarks/eval_smollm2.log 2>&1 &
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

from heat_module.evaluation import build_parser, config_from_args, run

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    parser.prog = "benchmarks/eval_paper.py"
    parser.set_defaults(out_dir=str(HERE / "eval_smollm2"), report=str(HERE / "RESULTS-eval.md"), threads=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    report = run(cfg, command="PYTHONPATH=. .venv/bin/python benchmarks/eval_paper.py " + shlex.join(argv))
    print(f"Report written to {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
