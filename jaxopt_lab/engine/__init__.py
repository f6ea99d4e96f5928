"""The engine: training runs as pure functions, and grids of them as one compiled program.

In the order a sweep goes through them:

* :mod:`~jaxopt_lab.engine.spec`: ``TrainSpec`` (what is compiled), the
  hyperparameters (what is traced), and what they build: dataset, model,
  optimizer, loss.
* :mod:`~jaxopt_lab.engine.grid`: ``Grid`` and ``plan``, its configs split into
  compiled groups.
* :mod:`~jaxopt_lab.engine.chunks`: a group's configs in chunks, one vmapped
  program sharded over the devices, run in segments between evaluation points.
* :mod:`~jaxopt_lab.engine.train`: the training step, a segment of steps, and
  ``train()``, one run.
* :mod:`~jaxopt_lab.engine.sweep`: ``sweep()``, which checks a request and drives
  the rest.
* :mod:`~jaxopt_lab.engine.distributed`: several processes (``jax.distributed``).

``jaxopt_lab.train`` and ``jaxopt_lab.sweep`` are the two functions.
"""
