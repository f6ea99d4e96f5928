"""Optimizers: optax transforms and aliases, optimizer families for sweeps, schedules, batch-size rules.

* :mod:`~jaxopt_lab.optim.transforms`: ``scale_by_momentum``, ``scale_by_rms``,
  ``scale_by_adam``, ``scale_by_learning_rate`` and the aliases ``sgd``,
  ``momentum``, ``rmsprop``, ``adam``, each equal to its optax counterpart.
* :mod:`~jaxopt_lab.optim.families`: :class:`Optimizer`, a factory with its traced
  and static hyperparameters, and ``REGISTRY``, the families a sweep knows by name.
* :mod:`~jaxopt_lab.optim.schedules`: learning-rate schedules as pure functions
  of traced parameters.
* :mod:`~jaxopt_lab.optim.scaling`: the loss reduction over a batch and the
  learning-rate rules for the batch size.
"""

from jaxopt_lab.optim import families, scaling, schedules, transforms
from jaxopt_lab.optim.families import REGISTRY, Optimizer
from jaxopt_lab.optim.scaling import reduce_loss, scale_learning_rate
from jaxopt_lab.optim.transforms import (
    OPTIMIZERS,
    ScaleByAdamState,
    ScaleByCenteredRmsState,
    ScaleByLearningRateState,
    ScaleByMomentumState,
    ScaleByRmsState,
    adam,
    momentum,
    rmsprop,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_momentum,
    scale_by_rms,
    sgd,
)

__all__ = [
    "families",
    "scaling",
    "schedules",
    "transforms",
    "Optimizer",
    "REGISTRY",
    "reduce_loss",
    "scale_learning_rate",
    "OPTIMIZERS",
    "ScaleByAdamState",
    "ScaleByCenteredRmsState",
    "ScaleByLearningRateState",
    "ScaleByMomentumState",
    "ScaleByRmsState",
    "adam",
    "momentum",
    "rmsprop",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_momentum",
    "scale_by_rms",
    "sgd",
]
