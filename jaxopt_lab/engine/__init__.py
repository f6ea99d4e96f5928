"""The engine: training runs as pure functions, and grids of them as one compiled program.

* :mod:`~jaxopt_lab.engine.train`: ``TrainSpec`` (what is compiled) and the
  hyperparameters (what is traced), the training step, segments of steps between
  evaluation points, and ``train()``, one run.
* :mod:`~jaxopt_lab.engine.sweep`: ``Grid``, the plan of compiled groups and
  chunks, chunk execution sharded over the devices, and ``sweep()``.
* :mod:`~jaxopt_lab.engine.distributed`: several processes (``jax.distributed``).
* :mod:`~jaxopt_lab.engine.fingerprints`: the stable identity of a spec's Python
  objects, which names its compiled programs and its output folder.

``jaxopt_lab.train`` and ``jaxopt_lab.sweep`` are the two functions.
"""
