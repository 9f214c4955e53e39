"""``heat eval``: the paper's evaluation, methods × datasets with the paper's metrics (resumable).

See :mod:`heat_module.evaluation`: the paper-table configuration of the evaluation pipeline. Data paths are the
``--<dataset>`` options (one per dataset of the table that has a file), or the files under ``$HEAT_DATA_DIR``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from heat_module.attribution.registry import available_methods
from heat_module.config import SINKS
from heat_module.evaluation.config import EvalConfig, default_baselines, parse_methods
from heat_module.evaluation.datasets import DATA_DIR_ENV, DATASETS
from heat_module.evaluation.runner import run
from heat_module.metrics.registry import metric_entries


def model_metrics() -> list[str]:
    """The metric registry's model-based metrics (kind ``"model"``): the choices of ``--metrics``."""
    return [name for name, entry in metric_entries().items() if entry.inputs == "model"]


def build_parser() -> argparse.ArgumentParser:
    """The ``heat eval`` options (``benchmarks/eval_paper.py`` adds its own defaults on top)."""
    p = argparse.ArgumentParser(prog="heat eval", description="Reproduce the paper's evaluation (resumable).")
    d = EvalConfig()
    p.add_argument("--model", default=d.model, help="'smollm2' (offline default), an HF folder or id")
    p.add_argument("--datasets", nargs="+", default=d.datasets, choices=[n for n, s in DATASETS.items() if s.file])
    for name, spec in DATASETS.items():
        if spec.file is not None:
            p.add_argument(f"--{name}", default=None,
                           help=f"{spec.title} file (default: ${DATA_DIR_ENV}/{spec.file})".replace("%", "%%"))
    p.add_argument("--limit", type=int, default=d.limit, help="examples per dataset")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--num-masks", type=int, default=d.num_masks)
    p.add_argument("--bootstrap", type=int, default=d.bootstrap)
    p.add_argument("--methods", nargs="*", default=None,
                   help="baselines as label or label=name:key=value,key=value, names from the method registry: "
                        + ", ".join(available_methods()) + " (default: the rows the registry's entries declare: "
                        + ", ".join(default_baselines()) + ")")
    p.add_argument("--metrics", nargs="+", default=d.metrics, choices=model_metrics(), metavar="METRIC",
                   help="model-based metrics of every row, from the metric registry: " + ", ".join(model_metrics())
                        + f" (default {' '.join(d.metrics)}); DSA / F1 wherever an example has gold tokens")
    p.add_argument("--no-heat", action="store_true")
    p.add_argument("--betas", nargs="+", type=float, default=d.betas)
    p.add_argument("--sweep-sinks", nargs="*", default=d.sweep_sinks, choices=SINKS)
    p.add_argument("--probes", type=int, default=d.probes)
    p.add_argument("--fisher", action="store_true", help="also report HEAT with curvature='fisher' (extra rows)")
    p.add_argument("--metric-batch-size", type=int, default=d.metric_batch_size)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out-dir", default=d.out_dir)
    p.add_argument("--report", default=None)
    p.add_argument("--machine", default=None, help="a description of the machine, written into the report")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--report-only", action="store_true",
                   help="compute nothing: write the report from the cached examples that are complete")
    return p


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The :class:`EvalConfig` of parsed ``heat eval`` options."""
    return EvalConfig(
        model=args.model, datasets=list(args.datasets),
        paths={name: getattr(args, name) for name, spec in DATASETS.items() if spec.file and getattr(args, name)},
        limit=args.limit, max_tokens=args.max_tokens, seed=args.seed,
        num_masks=args.num_masks, metrics=list(args.metrics), bootstrap=args.bootstrap,
        baselines=parse_methods(args.methods),
        heat=not args.no_heat, betas=list(args.betas), sweep_sinks=list(args.sweep_sinks), probes=args.probes,
        fisher=args.fisher, metric_batch_size=args.metric_batch_size, threads=args.threads, out_dir=args.out_dir,
        report=args.report, figures=not args.no_figures, progress=not args.no_progress, report_only=args.report_only,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``heat eval [--limit 20] [--out-dir DIR] ...`` (see :func:`build_parser`); resumable via the cache."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    report = run(cfg, command="heat eval " + shlex.join(argv), machine=args.machine)
    print(f"Report written to {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
