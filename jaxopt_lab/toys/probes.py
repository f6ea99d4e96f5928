"""Probes of batch norm's running statistics, the library side of an experiment.

:func:`ema_running_statistics` feeds :func:`jaxopt_lab.nn.batchnorm.apply` (training
mode) minibatches drawn from a fixed population with frozen weights, for many
independent chains at once; :func:`ema_mean_spread` is the spread its running mean
should have, and :func:`ema_check` compares the two (and the ``(B - 1)/B`` of the
variance). :func:`batch_stats_accuracy` evaluates a model with each test batch's own
statistics. While training, the engine measures the running statistics against the
full set's (``measure=["bn_stats_error"]``, :mod:`jaxopt_lab.measure`, with
:func:`jaxopt_lab.measure.full_set_bn_statistics`).

References:
  Ioffe and Szegedy, *Batch Normalization: Accelerating Deep Network Training
  by Reducing Internal Covariate Shift*, ICML 2015 (arXiv:1502.03167).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab.errors import InputError
from jaxopt_lab.nn import batchnorm as bn
from jaxopt_lab.nn import models as models_lib

__all__ = [
    "EmaStatistics",
    "ema_running_statistics",
    "ema_mean_spread",
    "EmaCheck",
    "ema_check",
    "batch_stats_accuracy",
]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_positive_int(name: str, value) -> int:
    if not _is_int(value) or value < 1:
        raise InputError(f"{name}={value!r} is invalid: expected a positive integer")
    return int(value)


# ------------------------------------------------- running statistics, frozen


class EmaStatistics(NamedTuple):
    """Running statistics of independent chains, each of shape ``(num_chains, features)``.

    Attributes:
      state: the running statistics after the last step.
      time_average: the running statistics averaged over the states after
        steps ``burn_in + 1, ..., num_steps`` (1-based).
    """

    state: bn.BatchNormState
    time_average: bn.BatchNormState


def ema_running_statistics(
    population: jax.Array,
    key: jax.Array,
    *,
    batch_size: int,
    momentum: jax.typing.ArrayLike,
    num_steps: jax.typing.ArrayLike,
    burn_in: jax.typing.ArrayLike = 0,
    num_chains: int = 1,
) -> EmaStatistics:
    """Batch-norm running statistics fed minibatches of a fixed population, weights frozen.

    Each chain starts from ``batchnorm.init`` (mean 0, variance 1) and, at
    step ``t = 0, 1, ...``, updates its state with
    ``batchnorm.apply(..., train=True, momentum=momentum)`` on the rows
    ``population[jax.random.randint(jax.random.fold_in(chain_key, t), (batch_size,), 0, n)]``,
    drawn *with replacement*, where ``chain_key = jax.random.split(key, num_chains)[c]``.
    So::

      mean_{t+1} = m·mean_t + (1 - m)·x̄_B,      var_{t+1} = m·var_t + (1 - m)·s²_B

    with ``s²_B`` the biased (divide by ``B``) variance of the batch, as flax
    stores it. Sampling with replacement makes the batches i.i.d., so for a
    population of mean ``μ`` and (population, divide by ``n``) variance ``σ²``:
    ``E[x̄_B] = μ``, ``Var[x̄_B] = σ²/B`` and ``E[s²_B] = (B - 1)/B·σ²`` exactly;
    the stationary running mean has standard deviation :func:`ema_mean_spread`.

    Args:
      population: ``(n, features)`` array of rows to sample from.
      key: PRNG key.
      batch_size: rows per step, ``B``.
      momentum: the decay ``m`` of the running statistics (may be traced).
      num_steps: number of updates (may be traced: one compiled program serves all).
      burn_in: updates before the time average starts (may be traced), ``< num_steps``.
      num_chains: independent chains, each with its own batches.

    Returns:
      :class:`EmaStatistics` with leaves of shape ``(num_chains, features)``.

    References:
      Ioffe and Szegedy, 2015, Algorithm 1 (the batch statistics) and section 3.1.
    """
    population = jnp.asarray(population)
    if population.ndim != 2:
        raise InputError(f"population.shape={population.shape} is invalid: expected (examples, features)")
    batch_size = _check_positive_int("batch_size", batch_size)
    num_chains = _check_positive_int("num_chains", num_chains)
    if _is_int(num_steps) and _is_int(burn_in) and not 0 <= burn_in < num_steps:
        raise InputError(
            f"burn_in={burn_in!r}, num_steps={num_steps!r} is invalid: expected 0 <= burn_in < num_steps"
        )
    n, features = population.shape
    params, state0 = bn.init(features)
    num_steps = jnp.asarray(num_steps, jnp.int32)
    burn_in = jnp.asarray(burn_in, jnp.int32)

    def chain(chain_key):
        def step(t, carry):
            state, total = carry
            idx = jax.random.randint(jax.random.fold_in(chain_key, t), (batch_size,), 0, n)
            _, state = bn.apply(params, state, population[idx], train=True, momentum=momentum)
            weight = (t >= burn_in).astype(state.mean.dtype)
            total = jax.tree.map(lambda s, a: a + weight * s, state, total)
            return state, total

        zeros = jax.tree.map(jnp.zeros_like, state0)
        state, total = jax.lax.fori_loop(0, num_steps, step, (state0, zeros))
        count = (num_steps - burn_in).astype(state.mean.dtype)
        return EmaStatistics(state, jax.tree.map(lambda a: a / count, total))

    return jax.vmap(chain)(jax.random.split(key, num_chains))


def ema_mean_spread(momentum, sigma, batch_size):
    """Stationary standard deviation of a running mean fed i.i.d. batch means.

    With ``x̄_t`` i.i.d. of variance ``σ²/B``, the running mean
    ``Σ_k (1 - m) m^k x̄_{t-k}`` has variance ``(1 - m)² Σ_k m^{2k} σ²/B``, so::

      spread = sqrt((1 - m) / (1 + m)) · σ / sqrt(B)

    After ``t`` steps from a fixed start the variance is ``1 - m^{2t}`` times that.

    Args:
      momentum: the decay ``m``.
      sigma: the population standard deviation (array or scalar).
      batch_size: ``B``.

    Returns:
      The spread, with the shape of ``sigma``.
    """
    return np.sqrt((1 - momentum) / (1 + momentum)) * np.asarray(sigma) / np.sqrt(batch_size)


class EmaCheck(NamedTuple):
    """The two frozen-weight checks of :func:`ema_check`, as float64 NumPy arrays.

    Attributes:
      mean_steps: ``ceil(5 / (1 - m))``, the steps after which ``z`` is taken.
      z: ``(num_chains, features)``, ``(running mean - μ) / ema_mean_spread(m, σ, B)``.
      var_ratio: ``(num_chains,)``, each chain's running variance averaged over
        ``window`` steps after a ``ceil(10 / (1 - m))``-step burn-in, divided by
        ``σ²`` and averaged over the features.
    """

    mean_steps: int
    z: np.ndarray
    var_ratio: np.ndarray


def ema_check(
    population: jax.Array,
    key: jax.Array,
    *,
    batch_size: int,
    momentum: float,
    num_chains: int,
    window: int,
) -> EmaCheck:
    """Running statistics of a frozen population against the EMA's predictions.

    Two runs of :func:`ema_running_statistics` with keys ``jax.random.split(key)``:

    * ``ceil(5/(1-m))`` steps, after which the initial running mean 0 weighs
      ``m^{5/(1-m)} ≈ e^{-5}``: ``z`` should be close to standard normal
      (up to that start-up bias, ``e^{-5}·|μ|``, in units of the spread);
    * ``ceil(10/(1-m)) + window`` steps, the running variance averaged over
      the last ``window``: ``var_ratio`` should be ``(B - 1)/B``.

    ``μ`` and ``σ²`` are the population's mean and (divide by ``n``) variance,
    computed in float64. Not jittable (the step counts depend on ``momentum``).

    Args:
      population: ``(n, features)`` rows, drawn with replacement.
      key: PRNG key.
      batch_size: ``B``.
      momentum: ``m``, a Python float in ``(0, 1)``.
      num_chains: independent chains.
      window: steps the running variance is averaged over.

    Returns:
      An :class:`EmaCheck`.
    """
    if not isinstance(momentum, (float, int, np.floating)) or not 0 < momentum < 1:
        raise InputError(f"momentum={momentum!r} is invalid: expected a float in (0, 1)")
    window = _check_positive_int("window", window)
    pop64 = np.asarray(population, np.float64)
    mu, var = pop64.mean(0), pop64.var(0)
    # The rounding guard keeps 5/(1-0.9) = 50.000000000000014 at 50 steps.
    mean_steps, burn_in = (math.ceil(k / (1 - momentum) - 1e-9) for k in (5, 10))
    key_mean, key_var = jax.random.split(key)
    run = _jitted_ema()
    kwargs = dict(batch_size=batch_size, momentum=momentum, num_chains=num_chains)
    mean = np.asarray(run(population, key_mean, num_steps=mean_steps, **kwargs).state.mean, np.float64)
    avg = run(population, key_var, num_steps=burn_in + window, burn_in=burn_in, **kwargs).time_average
    z = (mean - mu) / ema_mean_spread(momentum, np.sqrt(var), batch_size)
    return EmaCheck(mean_steps, z, (np.asarray(avg.var, np.float64) / var).mean(axis=1))


@functools.cache
def _jitted_ema():
    return jax.jit(ema_running_statistics, static_argnames=("batch_size", "num_chains"))


# ------------------------------------------------ running statistics, training


def batch_stats_accuracy(
    model: models_lib.Model, params, state, x: jax.Array, y: jax.Array, batch_size: int
) -> jax.Array:
    """Accuracy with batch norm in training mode on consecutive batches, the state left alone.

    The test set is cut into consecutive batches of ``batch_size`` rows; each
    batch is normalized with its own mean and biased variance (the last,
    shorter batch with the statistics of its valid rows, by a mask), and the
    updated running statistics are discarded.

    Args:
      model: a classifier :class:`~jaxopt_lab.nn.models.Model`.
      params, state: its parameters and batch-norm state.
      x: inputs ``(n, ...)``.
      y: integer labels ``(n,)``.
      batch_size: rows per batch.

    Returns:
      The fraction of correct argmax predictions, a float32 scalar.
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    n = x.shape[0]
    num_batches = -(-n // batch_size)
    pad = num_batches * batch_size - n
    xs = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)).reshape((num_batches, batch_size) + x.shape[1:])
    valid = (jnp.arange(num_batches * batch_size) < n).reshape(num_batches, batch_size)

    def one(args):
        xb, mb = args
        logits, _ = model.apply(params, state, xb, train=True, mask=mb)
        return jnp.argmax(logits, axis=-1)

    preds = jax.lax.map(one, (xs, valid)).reshape(-1)[:n]
    return jnp.mean((preds == y).astype(jnp.float32))
