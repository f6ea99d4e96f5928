"""Toy problems with known answers: quadratics, Rosenbrock, the noisy quadratic model, probes.

* :mod:`~jaxopt_lab.toys.problems`: closed-form objectives, a small loop of their
  own, and the noisy quadratic model with its exact expected-loss recurrence.
* :mod:`~jaxopt_lab.toys.probes`: batch-norm running statistics on a fixed
  population.
"""
