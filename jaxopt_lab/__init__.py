"""jaxopt_lab: a JAX toolkit for studying how deep-learning optimizers behave.

Optimizers are optax ``GradientTransformation``s, batch norm is a pure function
with explicit running statistics, and a grid of training runs (learning rate ×
batch size × seed × optimizer) is one compiled, vmapped, sharded program.
"""

from jaxopt_lab import (
    batchnorm,
    data,
    errors,
    measure,
    metrics,
    models,
    optimizers,
    plots,
    probes,
    problems,
    results,
    scaling,
    schedules,
    studies,
    sweep,
    train,
    transforms,
)
from jaxopt_lab.batchnorm import BatchNormParams, BatchNormState
from jaxopt_lab.data import Dataset, load
from jaxopt_lab.errors import InputError
from jaxopt_lab.metrics import (
    hessian_top_eigenvalue,
    noise_scale,
    noise_scale_two_batch,
    steps_to_target,
)
from jaxopt_lab.models import Model, cnn1d, from_flax, from_nnx, linear, mlp
from jaxopt_lab.optimizers import Optimizer
from jaxopt_lab.scaling import reduce_loss, scale_learning_rate
from jaxopt_lab.sweep import Grid, SweepResult
from jaxopt_lab.train import History, Target, TrainSpec, TrainState
from jaxopt_lab.transforms import (
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

__version__ = "0.1.0"


def clear_caches() -> None:
    """Free what sweeps and runs keep between calls: datasets on the devices, compiled
    programs (jaxopt_lab's and JAX's own caches, ``jax.clear_caches``). The next sweep
    loads and compiles again, to the same numbers."""
    import jax

    train.clear_caches()
    sweep.clear_caches()
    jax.clear_caches()


__all__ = [
    "clear_caches",
    # modules
    "batchnorm",
    "data",
    "errors",
    "measure",
    "metrics",
    "models",
    "optimizers",
    "plots",
    "probes",
    "problems",
    "results",
    "scaling",
    "schedules",
    "studies",
    "sweep",
    "train",
    "transforms",
    # optimizers
    "sgd",
    "momentum",
    "rmsprop",
    "adam",
    "OPTIMIZERS",
    "scale_by_momentum",
    "scale_by_rms",
    "scale_by_adam",
    "scale_by_learning_rate",
    "ScaleByMomentumState",
    "ScaleByRmsState",
    "ScaleByCenteredRmsState",
    "ScaleByAdamState",
    "ScaleByLearningRateState",
    # batch size and batch norm
    "reduce_loss",
    "scale_learning_rate",
    "BatchNormParams",
    "BatchNormState",
    # data and models
    "Dataset",
    "InputError",
    "load",
    "Model",
    "linear",
    "mlp",
    "cnn1d",
    "from_flax",
    "from_nnx",
    # runs and sweeps
    "Optimizer",
    "TrainSpec",
    "Target",
    "TrainState",
    "History",
    "Grid",
    "SweepResult",
    # measurements
    "noise_scale",
    "noise_scale_two_batch",
    "hessian_top_eigenvalue",
    "steps_to_target",
]
