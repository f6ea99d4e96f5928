"""Measurements taken inside a sweep, at every evaluation point of every config.

A measurement is a pure function of a config's state and data. The engine
computes it inside the same vmapped, sharded program as the training step, at
each of the config's evaluation points, and its values land as columns of the
results table. Give them as ``TrainSpec(measure=...)`` or ``sweep(..., measure=...)``:

* a built-in's name from :data:`MEASUREMENTS` (its defaults), or its object with
  options, e.g. ``Sharpness(num_iters=50)``;
* a function ``fn(params, model_state, batch) -> dict[str, scalar]`` of your own,
  where ``batch = (x, y)`` is the measurement batch.

The *measurement batch* is the same ``TrainSpec.measure_batch_size`` training
examples at every point and for every config (drawn once, without replacement,
by :func:`batch_indices`; the whole training set when it is smaller).

Built in:

* ``sharpness``: the top eigenvalue of the Hessian of the mean training loss on
  the measurement batch (batch norm in training mode, with that batch's
  statistics), by power iteration on Hessian-vector products. The first point
  iterates ``num_iters`` times from a fixed random vector; each later one starts
  from the previous point's vector and iterates ``num_warm_iters`` times.
* ``noise_scale``: the simple gradient noise scale ``B_simple = tr(Σ) / |G|²``
  (McCandlish et al., 2018) of the training set, whose examples the batches are
  drawn from (``G`` its mean gradient, ``Σ`` the covariance of its per-example
  gradients), twice. ``noise_scale`` from per-example gradients on the
  measurement batch (evaluation mode, so that an example's loss does not depend
  on the others'; exact when the batch is the whole set); ``noise_scale_running``
  from the training steps' own gradients: each step also takes the mean gradient
  of its batch's first ``b = B // 2`` examples (a second backward pass through
  the same forward pass), so that ``|G_b|²`` and ``|G_B|²`` give the two-batch
  estimates of ``|G|²`` and ``tr(Σ)`` of the paper's appendix A.1, each smoothed
  across steps by an exponential moving average (``ema_decay``) before their
  ratio is taken. Both carry the finite-population terms of batches drawn
  without replacement from the set.
* ``grad_norm``: ``|∇L|`` of the mean training loss on the measurement batch.
* ``param_norm``: ``|θ|``.
* ``update_ratio``: ``|Δθ| / |θ|`` of the last step before the point.
* ``bn_stats_error``: how far the batch-norm running statistics are from the
  statistics of the whole training set at the point's parameters
  (:func:`jaxopt_lab.nn.batchnorm.running_stats_error`, averaged over layers):
  ``bn_mean_error`` and ``bn_var_error``.
* ``train_set``: loss (``train_set_loss``) and accuracy (``train_set_accuracy``,
  classification only) on the whole training set in evaluation mode, where
  ``train_loss`` is the running mean of the steps' minibatch losses.

The learning rate each step applied is always in the table (``applied_lr``).

References:
  McCandlish, Kaplan, Amodei and the OpenAI Dota Team, *An Empirical Model of
  Large-Batch Training*, 2018 (arXiv:1812.06162).
  Cohen, Kaur, Li, Kolter and Talwalkar, *Gradient Descent on Neural Networks
  Typically Occurs at the Edge of Stability*, ICLR 2021 (arXiv:2103.00065).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxopt_lab.errors import InputError
from jaxopt_lab.fingerprints import qualified_name
from jaxopt_lab.measure import estimators as metrics_lib
from jaxopt_lab.nn import batchnorm as bn

__all__ = [
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


class Context(NamedTuple):
    """What a measurement sees at an evaluation point (one config; vmapped by the engine).

    Attributes:
      params, model_state, opt_state: the config's state after the point's step.
      batch: ``(x, y)``, the measurement batch.
      dataset: the config's :class:`~jaxopt_lab.data.Dataset` (its arrays).
      model: the :class:`~jaxopt_lab.nn.models.Model`.
      loss: ``loss(params, x, y) -> scalar``, the mean training loss on ``(x, y)``:
        training mode (batch norm with the statistics of ``x``, the state's
        update discarded), label smoothing included.
      example_loss: ``example_loss(params, example) -> scalar`` for one example
        ``(x_i, y_i)`` without a batch axis, in evaluation mode.
      evaluate: ``evaluate(x, y) -> (loss, accuracy)`` of the state in evaluation
        mode, without label smoothing (accuracy NaN without classes).
      step: the evaluation point's step.
    """

    params: Any
    model_state: Any
    opt_state: Any
    batch: tuple[jax.Array, jax.Array]
    dataset: Any
    model: Any
    loss: Callable
    example_loss: Callable
    evaluate: Callable
    step: jax.Array


class StepInfo(NamedTuple):
    """What a measurement's :meth:`Measurement.step` sees after each training step.

    Attributes:
      params: the parameters the step started from.
      updates: the step's updates (``new_params = params + updates``).
      grad_sq_norm: ``|G_B|²``, the squared norm of the batch's mean gradient
        (whatever the reduction).
      small_grad_sq_norm: ``|G_b|²`` of the mean gradient over the batch's first
        ``small_batch_size`` examples, when a measurement asks for it
        (``uses_small_batch``), else NaN.
      batch_size: ``B``; small_batch_size: ``b = B // 2``.
    """

    params: Any
    updates: Any
    grad_sq_norm: jax.Array
    small_grad_sq_norm: jax.Array
    batch_size: jax.Array
    small_batch_size: jax.Array


class Measurement:
    """A measurement at evaluation points: subclass it as a frozen dataclass.

    ``__call__(ctx, carry) -> (values, carry)`` returns a dict of scalars, one
    column each. ``init(params)`` gives the carry a config starts with (``()`` by
    default), ``step(carry, info)`` may update it after every training step, and
    ``check(spec, dataset)`` raises :class:`InputError` for a run it cannot measure.
    The engine updates a config's carry only at its own evaluation points and steps,
    so its numbers do not depend on the other configs of its chunk.
    """

    name: ClassVar[str] = ""
    uses_small_batch: ClassVar[bool] = False  # the steps compute |G_b|² for it

    def init(self, params) -> Any:
        del params
        return ()

    def step(self, carry, info: StepInfo) -> Any:
        del info
        return carry

    def __call__(self, ctx: Context, carry) -> tuple[dict[str, jax.Array], Any]:
        raise NotImplementedError

    def check(self, spec, dataset) -> None:
        del spec, dataset

    def label(self) -> str:
        """How messages and ``sweep.toml`` name it."""
        return self.name

    def options(self) -> dict[str, Any]:
        """Its options, as ``sweep.toml`` records them."""
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}


def _positive_int(owner: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{owner}({name}={value!r}) is invalid: expected a positive integer")


@dataclasses.dataclass(frozen=True)
class Sharpness(Measurement):
    """Top Hessian eigenvalue of the mean training loss on the measurement batch.

    Power iteration (:func:`jaxopt_lab.measure.estimators.power_iteration`) finds the
    eigenvalue of largest magnitude: the sharpness while no negative eigenvalue is
    larger in magnitude, as for the squared loss and cross-entropy near training.

    Attributes:
      num_iters: iterations at a config's first point, from a fixed random vector.
      num_warm_iters: iterations at each later point, from the previous point's vector.
    """

    num_iters: int = 20
    num_warm_iters: int = 5
    name: ClassVar[str] = "sharpness"

    def __post_init__(self):
        _positive_int("Sharpness", "num_iters", self.num_iters)
        _positive_int("Sharpness", "num_warm_iters", self.num_warm_iters)

    def init(self, params):
        flat, _ = ravel_pytree(params)
        v = jax.random.normal(jax.random.key(0), flat.shape, flat.dtype)
        return v / jnp.linalg.norm(v), jnp.zeros((), jnp.int32)

    def __call__(self, ctx, carry):
        v, count = carry
        flat, unravel = ravel_pytree(ctx.params)
        x, y = ctx.batch
        _, hvp = jax.linearize(jax.grad(lambda p: ctx.loss(unravel(p), x, y)), flat)
        iters = jnp.where(count == 0, self.num_iters, self.num_warm_iters)
        eigenvalue, v, _ = metrics_lib.power_iteration(hvp, v, iters)
        return {"sharpness": eigenvalue}, (v, count + 1)


@dataclasses.dataclass(frozen=True)
class NoiseScale(Measurement):
    """The simple gradient noise scale, from per-example gradients and from the steps.

    Attributes:
      chunk_size: examples whose per-example gradients are held at once.
      ema_decay: the exponential moving average of the two-batch estimates of
        ``|G|²`` and ``tr(Σ)`` over steps (``noise_scale_running`` is their ratio).
      per_example: also ``noise_scale`` from per-example gradients at every point,
        which costs a forward and backward pass per example of the measurement batch
        (experiments/PERF.md); ``False`` keeps only the running estimate.
    """

    chunk_size: int = 32
    ema_decay: float = 0.99
    per_example: bool = True
    name: ClassVar[str] = "noise_scale"
    uses_small_batch: ClassVar[bool] = True

    def __post_init__(self):
        _positive_int("NoiseScale", "chunk_size", self.chunk_size)
        if not isinstance(self.per_example, bool):
            raise InputError(
                f"NoiseScale(per_example={self.per_example!r}) is invalid: expected True or False"
            )
        if not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            raise InputError(
                f"NoiseScale(ema_decay={self.ema_decay!r}) is invalid: expected 0 <= ema_decay < 1"
            )

    def check(self, spec, dataset):
        if spec.batch_size < 2:
            raise InputError(
                f"measure 'noise_scale' is invalid for batch_size={spec.batch_size}: its running "
                "estimate splits each batch in two, expected batch_size >= 2"
            )
        if min(spec.measure_batch_size, dataset.x_train.shape[0]) < 2:
            raise InputError(
                f"measure 'noise_scale' is invalid for measure_batch_size={spec.measure_batch_size}: "
                "expected at least 2 examples to estimate a variance"
            )

    def init(self, params):
        zero = jnp.zeros((), jnp.float32)
        return zero, zero, zero  # EMAs of |G|² and tr(Σ), and of 1 (the weight so far)

    def step(self, carry, info):
        grad_sq, trace, weight = carry
        big, small = info.grad_sq_norm, info.small_grad_sq_norm
        b_big = info.batch_size.astype(big.dtype)
        b_small = info.small_batch_size.astype(big.dtype)
        estimate = metrics_lib.two_batch_estimate(small, big, b_small, b_big)
        d = jnp.asarray(self.ema_decay, big.dtype)
        return (
            d * grad_sq + (1 - d) * estimate.grad_sq_norm,
            d * trace + (1 - d) * estimate.trace_cov,
            d * weight + (1 - d),
        )

    def __call__(self, ctx, carry):
        x, y = ctx.batch
        n, total = x.shape[0], ctx.dataset.x_train.shape[0]
        grad_sq, trace, weight = carry
        # The steps' batches are drawn without replacement too: the two-batch estimates tend
        # to N/(N-1) tr(Σ) and |G|² - tr(Σ)/(N-1); undone here, where N is known. The EMAs'
        # bias corrections are one factor, which cancels in the ratio.
        running = (trace * (total - 1) / total) / (grad_sq + trace / total)
        running = jnp.where(weight > 0, running, jnp.nan)
        if not self.per_example:
            return {"noise_scale_running": running}, carry
        # The training set is the population the batches come from; the measurement batch
        # is n of its N examples, drawn without replacement (all of them when n = N).
        estimate = metrics_lib.noise_scale(
            ctx.example_loss, ctx.params, (x, y), chunk_size=min(self.chunk_size, n), population_size=total
        )
        return {"noise_scale": estimate.b_simple, "noise_scale_running": running}, carry


@dataclasses.dataclass(frozen=True)
class GradNorm(Measurement):
    """``|∇L|`` of the mean training loss on the measurement batch."""

    name: ClassVar[str] = "grad_norm"

    def __call__(self, ctx, carry):
        x, y = ctx.batch
        return {"grad_norm": optax.tree.norm(jax.grad(ctx.loss)(ctx.params, x, y))}, carry


@dataclasses.dataclass(frozen=True)
class ParamNorm(Measurement):
    """``|θ|``, the L2 norm of all parameters."""

    name: ClassVar[str] = "param_norm"

    def __call__(self, ctx, carry):
        return {"param_norm": optax.tree.norm(ctx.params)}, carry


@dataclasses.dataclass(frozen=True)
class UpdateRatio(Measurement):
    """``|Δθ| / |θ|`` of the last step before the point (``θ`` before that step)."""

    name: ClassVar[str] = "update_ratio"

    def init(self, params):
        return jnp.full((), jnp.nan, jnp.float32)

    def step(self, carry, info):
        return (optax.tree.norm(info.updates) / optax.tree.norm(info.params)).astype(jnp.float32)

    def __call__(self, ctx, carry):
        return {"update_ratio": carry}, carry


def full_set_bn_statistics(model, params, state, x: jax.Array):
    """Statistics of every batch-norm layer's input over the whole of ``x``, at ``params``.

    Runs the model itself in training mode on all of ``x`` with
    ``bn_momentum=0``, so each returned state is exactly the batch mean and
    biased variance of that layer's input over ``x`` (no copy of the model's
    structure to drift out of sync). For the first batch-norm layer these are
    the statistics of its input at ``params``; a deeper layer's input is that
    of the network whose earlier layers normalize with the full set's
    statistics (not the running ones).

    Args:
      model: a :class:`jaxopt_lab.nn.models.Model` of :mod:`jaxopt_lab.nn.models`.
      params: its parameters.
      state: its batch-norm state (only the structure is used).
      x: the whole dataset's inputs, e.g. ``dataset.x_train``.

    Returns:
      The model's state pytree, e.g. ``{"bn_0": BatchNormState(mean, var), ...}``.
    """
    _, stats = model.apply(params, state, x, train=True, bn_momentum=0.0)
    return stats


def _bn_layers(state) -> list:
    return [
        s
        for s in jax.tree.leaves(state, is_leaf=lambda n: isinstance(n, bn.BatchNormState))
        if isinstance(s, bn.BatchNormState)
    ]


@dataclasses.dataclass(frozen=True)
class BatchNormError(Measurement):
    """Running statistics against those of the whole training set at the point's parameters.

    :func:`jaxopt_lab.nn.batchnorm.running_stats_error` of each layer, averaged over
    layers: ``bn_mean_error`` (RMS over features of the mean's error in units of
    the set's standard deviation) and ``bn_var_error`` (RMS of the log variance ratio).

    Attributes:
      layer: the index of one batch-norm layer (in the model state's order) whose
        errors to report instead of the average over layers.
    """

    layer: int | None = None
    name: ClassVar[str] = "bn_stats_error"

    def __post_init__(self):
        layer = self.layer
        if layer is not None and (
            isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer < 0
        ):
            raise InputError(f"BatchNormError(layer={layer!r}) is invalid: expected None or an index >= 0")

    def check(self, spec, dataset):
        options = dict(spec.model_options)
        if not (isinstance(spec.model, str) and options.get("batchnorm")):
            raise InputError(
                f"measure 'bn_stats_error' is invalid for model={getattr(spec.model, 'name', spec.model)!r}"
                f"{'' if not isinstance(spec.model, str) else ' without batchnorm'}: expected a model of "
                "jaxopt_lab.nn.models with batchnorm=True (a flax module owns its momentum)"
            )

    def __call__(self, ctx, carry):
        full = full_set_bn_statistics(ctx.model, ctx.params, ctx.model_state, ctx.dataset.x_train)
        pairs = list(zip(_bn_layers(ctx.model_state), _bn_layers(full), strict=True))
        if self.layer is not None:
            if self.layer >= len(pairs):
                raise InputError(
                    f"BatchNormError(layer={self.layer}) is invalid: the model has {len(pairs)} "
                    f"batch-norm layers, expected an index below {len(pairs)}"
                )
            pairs = [pairs[self.layer]]
        errors = [bn.running_stats_error(r, f) for r, f in pairs]
        mean_error = jnp.mean(jnp.stack([jnp.mean(e[0]) for e in errors]))
        var_error = jnp.mean(jnp.stack([jnp.mean(e[1]) for e in errors]))
        return {"bn_mean_error": mean_error, "bn_var_error": var_error}, carry


@dataclasses.dataclass(frozen=True)
class TrainSet(Measurement):
    """Loss and accuracy on the whole training set, in evaluation mode."""

    name: ClassVar[str] = "train_set"

    def __call__(self, ctx, carry):
        loss, accuracy = ctx.evaluate(ctx.dataset.x_train, ctx.dataset.y_train)
        out = {"train_set_loss": loss}
        if ctx.dataset.num_classes:
            out["train_set_accuracy"] = accuracy
        return out, carry


@dataclasses.dataclass(frozen=True)
class Custom(Measurement):
    """A function of your own: ``fn(params, model_state, batch) -> dict[str, scalar]``,
    with ``batch = (x, y)`` the measurement batch; each key is a column."""

    fn: Callable

    def __call__(self, ctx, carry):
        values = self.fn(ctx.params, ctx.model_state, ctx.batch)
        if not isinstance(values, Mapping):
            raise InputError(
                f"measure {self.label()!r} returned {type(values).__name__}: expected a dict of "
                "scalars, one per column"
            )
        return dict(values), carry

    def label(self) -> str:
        return qualified_name(self.fn)

    def options(self):
        return {}


MEASUREMENTS: dict[str, type[Measurement]] = {
    cls.name: cls
    for cls in (Sharpness, NoiseScale, GradNorm, ParamNorm, UpdateRatio, BatchNormError, TrainSet)
}


def resolve(value, options: Mapping[str, Any] | None = None) -> Measurement:
    """A :class:`Measurement` from a built-in's name (with ``options``), a Measurement,
    or a function ``fn(params, model_state, batch) -> dict``."""
    if isinstance(value, Measurement):
        return value
    if isinstance(value, str):
        if value not in MEASUREMENTS:
            raise InputError(
                f"measure {value!r} is invalid: expected one of {', '.join(map(repr, MEASUREMENTS))} or "
                "a function (params, model_state, batch) -> dict"
            )
        try:
            return MEASUREMENTS[value](**dict(options or {}))
        except TypeError as err:
            fields = [f.name for f in dataclasses.fields(MEASUREMENTS[value])]
            raise InputError(
                f"measure {value!r} options {sorted(options or {})} are invalid: expected "
                f"{', '.join(map(repr, fields)) or 'none'} ({err})"
            ) from None
    if callable(value):
        return Custom(value)
    raise InputError(
        f"measure {value!r} is invalid: expected one of {', '.join(map(repr, MEASUREMENTS))}, a "
        "Measurement or a function (params, model_state, batch) -> dict"
    )


def batch_indices(num_examples: int, size: int) -> np.ndarray:
    """The training examples of the measurement batch: ``size`` of ``num_examples``, drawn
    once without replacement (NumPy seed 0) and sorted; all of them when ``size`` is not
    smaller."""
    if size >= num_examples:
        return np.arange(num_examples)
    return np.sort(np.random.default_rng(0).choice(num_examples, size, replace=False))
