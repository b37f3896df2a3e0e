"""Study design from the study tags, and the bias warnings it implies.

An adaptive sampler (TPE, GP, CMA-ES) concentrates trials near the optimum of its own
objective, and a pruner stops trials early by one metric; both shape which trials exist,
so a disagreement rate from such studies is not a rate over the search space.
"""

from __future__ import annotations

import pandas as pd

ADAPTIVE = {"tpe", "gp", "cmaes"}


def design(studies: pd.DataFrame) -> dict:
    """Counts of sampler, pruner and objective over the analysed studies."""
    return {tag: {str(k): int(v) for k, v in studies[tag].value_counts().items()}
            for tag in ("sampler", "pruner", "objective") if tag in studies}


def bias_warnings(studies: pd.DataFrame, include_pruned: bool) -> list[str]:
    out = []
    adaptive = studies[studies["sampler"].isin(ADAPTIVE)]
    if len(adaptive):
        out.append(f"{len(adaptive)} of {len(studies)} studies used an adaptive sampler "
                   f"({', '.join(sorted(adaptive['sampler'].unique()))}); trials cluster where "
                   "the sampler's objective is good, which biases the disagreement rate. Use "
                   "--sampler random or qmc for an unbiased rate.")
    pruned = studies[~studies["pruner"].isin({"none", "unknown"})]
    if len(pruned):
        out.append(f"{len(pruned)} of {len(studies)} studies used a pruner "
                   f"({', '.join(sorted(pruned['pruner'].unique()))}); trials stopped early by one "
                   "metric never reach the epochs where the other might have won"
                   + ("." if include_pruned else ", and PRUNED trials are left out (--include-pruned)."))
    objectives = set(studies["objective"]) - {"unknown"}
    if adaptive.shape[0] and objectives:
        out.append(f"Sampler objectives: {', '.join(sorted(objectives))}; the rule the sampler "
                   "optimised is favoured by the trials it proposed.")
    if (studies["sampler"] == "unknown").any():
        out.append("Some studies have no study run or no sampler tag; their design is unknown.")
    return out
