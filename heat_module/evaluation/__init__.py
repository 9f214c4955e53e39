"""The evaluation: ONE pipeline (datasets → methods → metrics → cached rows → report) and two configurations of it.

- :mod:`~heat_module.evaluation.datasets` — the one table of datasets; loading and selecting examples.
- :mod:`~heat_module.evaluation.cache` — the one resumable JSON-lines cache.
- :mod:`~heat_module.evaluation.pipeline` — :class:`Study` (datasets, rows, metrics, limits, seeds),
  :class:`Row` (a registry method called through its public ``attribute``; HEAT rows recombined from one
  attribution) and :func:`run_study`.
- The paper's tables (Tables 1, 2, 5, 7; §5.1 DSA) on any model, ``heat eval`` / :func:`run`:
  :mod:`~heat_module.evaluation.config` (:class:`EvalConfig`), :mod:`~heat_module.evaluation.variants` (its rows),
  :mod:`~heat_module.evaluation.runner` (its metrics and :func:`run`), :mod:`~heat_module.evaluation.stats`,
  :mod:`~heat_module.evaluation.report`, :mod:`~heat_module.evaluation.figures`.
- "Is HEAT worth choosing?": :mod:`~heat_module.evaluation.choice` (its rows, its decision rules and studies),
  :mod:`~heat_module.evaluation.choice_metrics` (its metrics), :mod:`~heat_module.evaluation.choice_report`
  (``benchmarks/eval_choice.py``).

The command line is :mod:`heat_module.cli.eval`.
"""

from heat_module.evaluation.cache import Cache
from heat_module.evaluation.config import EvalConfig, default_baselines, parse_methods
from heat_module.evaluation.datasets import DATASETS, EvalExample, dataset_names, load_dataset, select_examples
from heat_module.evaluation.pipeline import Row, Scorer, Study, run_study
from heat_module.evaluation.report import write_report
from heat_module.evaluation.runner import PaperScorer, paper_study, run
from heat_module.evaluation.stats import Summary, bootstrap_ci, log_ratio_ci, summarize
from heat_module.evaluation.variants import paper_rows

__all__ = [
    "DATASETS",
    "Cache",
    "EvalConfig",
    "EvalExample",
    "PaperScorer",
    "Row",
    "Scorer",
    "Study",
    "Summary",
    "bootstrap_ci",
    "dataset_names",
    "default_baselines",
    "load_dataset",
    "log_ratio_ci",
    "paper_rows",
    "paper_study",
    "parse_methods",
    "run",
    "run_study",
    "select_examples",
    "summarize",
    "write_report",
]
