"""The output folder of a sweep: its files, resume, checkpoints inside a chunk, and plots.

* :mod:`~jaxopt_lab.outputs.results`: ``results.parquet``, ``summary.csv``,
  ``sweep.toml`` and the chunk files, written atomically; the tables' columns and
  summaries.
* :mod:`~jaxopt_lab.outputs.checkpoints`: orbax checkpoints of a running chunk.
* :mod:`~jaxopt_lab.outputs.plots`: heatmaps and curves of a table.
"""
