"""Export results to other tools: inseq's saved JSON (:mod:`heat_module.interop.inseq`) and pandas DataFrames
(:mod:`heat_module.interop.pandas`)."""

from heat_module.interop.inseq import inseq_document, save_inseq
from heat_module.interop.pandas import results_to_dataframe

__all__ = ["inseq_document", "save_inseq", "results_to_dataframe"]
