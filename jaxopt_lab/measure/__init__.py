"""Measurements: sharpness, gradient noise scale and the other instruments of a run.

* :mod:`~jaxopt_lab.measure.measurements`: :class:`Measurement` and the built-in
  instruments a sweep runs at its evaluation points (``measure=["sharpness",
  "noise_scale", ...]``); their names and classes are re-exported here.
* :mod:`~jaxopt_lab.measure.estimators`: the estimators on one state (power
  iteration and the Hessian's top eigenvalue, the gradient noise scale).
* :mod:`~jaxopt_lab.measure.targets`: :class:`Target`, a run's stop, and the first
  point at which a curve reaches one.
"""

from jaxopt_lab.measure import estimators, measurements, targets
from jaxopt_lab.measure.measurements import (
    MEASUREMENTS,
    BatchNormError,
    Context,
    Custom,
    GradNorm,
    Measurement,
    NoiseScale,
    ParamNorm,
    Sharpness,
    StepInfo,
    TrainSet,
    UpdateRatio,
    batch_indices,
    full_set_bn_statistics,
    resolve,
)
from jaxopt_lab.measure.targets import Target

__all__ = [
    "estimators",
    "measurements",
    "targets",
    "Target",
    "Context",
    "StepInfo",
    "Measurement",
    "Sharpness",
    "NoiseScale",
    "GradNorm",
    "ParamNorm",
    "UpdateRatio",
    "BatchNormError",
    "TrainSet",
    "Custom",
    "MEASUREMENTS",
    "resolve",
    "batch_indices",
    "full_set_bn_statistics",
]
