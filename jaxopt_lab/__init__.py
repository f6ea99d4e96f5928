"""jaxopt_lab: a JAX toolkit for studying how deep-learning optimizers behave.

Optimizers are optax ``GradientTransformation``s, batch norm is a pure function
with explicit running statistics, and a grid of training runs (learning rate ×
batch size × seed × optimizer) is one compiled, vmapped, sharded program.
"""

from jaxopt_lab import analysis, data, engine, errors, measure, nn, optim, outputs, toys
from jaxopt_lab.data import Dataset, load
from jaxopt_lab.engine.grid import Grid
from jaxopt_lab.engine.spec import TrainSpec
from jaxopt_lab.engine.sweep import SweepResult, sweep
from jaxopt_lab.engine.train import History, TrainState, train
from jaxopt_lab.errors import InputError
from jaxopt_lab.measure.estimators import (
    hessian_top_eigenvalue,
    noise_scale,
    noise_scale_two_batch,
)
from jaxopt_lab.measure.targets import Target, steps_to_target
from jaxopt_lab.nn.batchnorm import BatchNormParams, BatchNormState
from jaxopt_lab.nn.models import Model, cnn1d, from_flax, from_nnx, linear, mlp
from jaxopt_lab.optim.families import Optimizer
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

__version__ = "0.1.0"


def clear_caches() -> None:
    """Free what sweeps and runs keep between calls: datasets on the devices, compiled
    programs (jaxopt_lab's and JAX's own caches, ``jax.clear_caches``). The next sweep
    loads and compiles again, to the same numbers."""
    import jax

    from jaxopt_lab.engine import chunks as chunks_lib
    from jaxopt_lab.engine import train as train_lib

    train_lib.clear_caches()
    chunks_lib.clear_caches()
    jax.clear_caches()


__all__ = [
    "clear_caches",
    # runs and sweeps
    "train",
    "sweep",
    # packages
    "analysis",
    "data",
    "engine",
    "errors",
    "measure",
    "nn",
    "optim",
    "outputs",
    "toys",
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
    # run and sweep definitions
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
