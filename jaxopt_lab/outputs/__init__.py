"""The output folder of a sweep: its files, resume, checkpoints inside a chunk, and plots.

* :mod:`~jaxopt_lab.outputs.folder`: ``results.parquet``, ``summary.csv``,
  ``sweep.toml`` and the chunk files, and what else a folder may hold;
* :mod:`~jaxopt_lab.outputs.schema`: ``sweep.toml``, the definition of a sweep;
* :mod:`~jaxopt_lab.outputs.atomic`: atomic file writes;
* :mod:`~jaxopt_lab.outputs.checkpoints`: orbax checkpoints of a running chunk.
* :mod:`~jaxopt_lab.outputs.plots`: heatmaps and curves of a table.
"""
