"""Networks: the functional batch norm and the models a run trains.

* :mod:`~jaxopt_lab.nn.batchnorm`: batch normalization as a pure function with its
  running statistics as explicit state.
* :mod:`~jaxopt_lab.nn.models`: :class:`Model` (pure ``init``/``apply``), the
  built-in ``linear``/``mlp``/``cnn1d``/``cnn2d``, and the adapters ``from_flax``
  (a ``flax.linen`` module) and ``from_nnx`` (a ``flax.nnx`` constructor).
"""

from jaxopt_lab.nn import batchnorm, models
from jaxopt_lab.nn.batchnorm import BatchNormParams, BatchNormState
from jaxopt_lab.nn.models import Model, cnn1d, cnn2d, from_flax, from_nnx, linear, mlp

__all__ = [
    "batchnorm",
    "models",
    "BatchNormParams",
    "BatchNormState",
    "Model",
    "linear",
    "mlp",
    "cnn1d",
    "cnn2d",
    "from_flax",
    "from_nnx",
]
