"""Analysis of how often minimal validation loss and maximal validation accuracy disagree.

Computing (pure pandas/scipy/statsmodels) lives in `sources`, `picks`, `intervals`,
`ranks`, `cost`, `size`, `explain`, `boundary`, `design`, `compare`, `summary` and
`plotdata` (what each figure shows); drawing lives only in `figures`; writing only in `report`.
"""

from analysis.errors import AnalysisInputError

__all__ = ["AnalysisInputError"]
