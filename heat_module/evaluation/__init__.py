"""The paper's evaluation (Tables 1, 2, 5, 7; §5.1 DSA) reproduced on any model: ``heat eval`` / :func:`run`.

- :mod:`~heat_module.evaluation.config` — :class:`EvalConfig` (data paths from arguments or ``$HEAT_DATA_DIR``).
- :mod:`~heat_module.evaluation.datasets` — loading and selecting examples.
- :mod:`~heat_module.evaluation.variants` — the report's rows; HEAT recombined from one set of components.
- :mod:`~heat_module.evaluation.runner` — :class:`Evaluator` and :func:`run`.
- :mod:`~heat_module.evaluation.cache` — the resumable JSON-lines results.
- :mod:`~heat_module.evaluation.stats` — bootstrap intervals and the summary.
- :mod:`~heat_module.evaluation.report`, :mod:`~heat_module.evaluation.figures` — the markdown report, the PNGs.
- :mod:`~heat_module.evaluation.choice`, :mod:`~heat_module.evaluation.choice_report` — "is HEAT worth choosing?":
  HEAT's configurations against AttnLRP, occlusion-KL and the gate on cheap methods, with ABPC and the
  decision rule for the default (``benchmarks/eval_choice.py``).

The command line is :mod:`heat_module.cli.eval`.
"""

from heat_module.evaluation.cache import Cache
from heat_module.evaluation.config import DATASETS, EvalConfig, default_baselines, parse_methods
from heat_module.evaluation.datasets import EvalExample, load_dataset, select_examples
from heat_module.evaluation.report import write_report
from heat_module.evaluation.runner import Evaluator, run
from heat_module.evaluation.stats import Summary, bootstrap_ci, log_ratio_ci, summarize
from heat_module.evaluation.variants import Variant, variants

__all__ = [
    "DATASETS",
    "Cache",
    "EvalConfig",
    "EvalExample",
    "Evaluator",
    "Summary",
    "Variant",
    "bootstrap_ci",
    "default_baselines",
    "load_dataset",
    "log_ratio_ci",
    "parse_methods",
    "run",
    "select_examples",
    "summarize",
    "variants",
    "write_report",
]
