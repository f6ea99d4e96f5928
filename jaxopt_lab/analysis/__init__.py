"""Analysis of sweep tables: grids of settings, slopes, rescaled gaps, critical batch sizes.

* :mod:`~jaxopt_lab.analysis.studies`: the named study functions of the
  experiments, on the engine's tables.
"""
