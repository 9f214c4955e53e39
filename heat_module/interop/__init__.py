"""Export results to other tools: inseq's saved JSON (:mod:`heat_module.interop.inseq`) and pandas DataFrames
(:mod:`heat_module.interop.pandas`)."""

from heat_module.interop.inseq import inseq_document, save_inseq, save_inseq_generation
from heat_module.interop.pandas import generation_to_dataframe, results_to_dataframe

__all__ = ["inseq_document", "save_inseq", "save_inseq_generation", "results_to_dataframe", "generation_to_dataframe"]
