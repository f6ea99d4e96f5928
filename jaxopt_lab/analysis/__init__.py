"""Analysis of sweep tables: summaries, the best setting of each group, studies.

* :mod:`~jaxopt_lab.analysis.tables`: the results table's columns, its
  per-config :func:`summary`, and :func:`best_settings`, the one rule that picks
  the best setting of a group (mean over seeds, a diverged seed disqualifies,
  the edge of the grid flagged); :func:`best_learning_rates` applies it to a table.
* :mod:`~jaxopt_lab.analysis.critical_batch`: the critical batch size of steps to
  a target, fitted (McCandlish et al.) or model-free.
* :mod:`~jaxopt_lab.analysis.studies`: the named study functions of the
  experiments, on the engine's tables.
"""

from jaxopt_lab.analysis import critical_batch, studies, tables
from jaxopt_lab.analysis.tables import best_learning_rates, best_settings, summary

__all__ = ["critical_batch", "studies", "tables", "summary", "best_settings", "best_learning_rates"]
