"""One training run as a pure function of (static spec, hyperparameters, key).

Everything that changes shapes or code lives in the frozen :class:`TrainSpec`;
everything that changes array values (learning rate, the optimizer's numeric
hyperparameters, weight decay, batch-norm momentum, and under the sweep's
``mask`` strategy the batch size) is a leaf of the ``hparams`` dict, so a sweep
is this same code under ``jax.vmap``.

The building blocks are shared by :func:`train` (one config, one jitted
program) and by :mod:`jaxopt_lab.engine.sweep` (a chunk of configs under ``vmap``, run
in segments so the host can report progress between them):

* :func:`init_state` builds a :class:`TrainState` from a key;
* :func:`run_segment` advances it by a traced number of steps, then evaluates.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_lab import data as data_lib
from jaxopt_lab.errors import InputError
from jaxopt_lab.measure import measurements as measure_lib
from jaxopt_lab.nn import models as models_lib
from jaxopt_lab.optim import families as optimizers_lib
from jaxopt_lab.optim import scaling
from jaxopt_lab.optim import schedules as schedules_lib

__all__ = [
    "TrainSpec",
    "Target",
    "TrainState",
    "History",
    "default_hparams",
    "make_optimizer",
    "learning_rate_at",
    "check_optimizer_flags",
    "init_state",
    "run_segment",
    "make_train",
    "train",
    "load_dataset",
    "get_model",
    "check_model_fits",
    "measurement_columns",
    "TARGET_METRICS",
    "eval_steps",
    "DIVERGE_FACTOR",
    "PYTHON_PREFIX",
    "LOSSES",
    "omitted_when_zero",
    "clear_caches",
]

_COMMON_HPARAMS = {"weight_decay": 0.0, "bn_momentum": 0.99, "label_smoothing": 0.0}
# The per-example losses by name; "auto" is cross-entropy for classes, squared error otherwise.
LOSSES = ("auto", "cross_entropy", "squared_error", "mse")
# How sweep.toml names a model or loss given as a Python object (its [objects] table holds
# the qualified name and fingerprint).
PYTHON_PREFIX = "python:"
# A config whose training loss passes this multiple of its first one has diverged
# (TrainSpec.diverge_above=None): Adam at lr 100 reaches 1e6 times it without ever
# overflowing, while a catapult spike of a config that recovers stays within 10x.
DIVERGE_FACTOR = 100.0


def _optax_promotion():
    # optax's transforms are written for JAX's standard dtype promotion (`decay**count`
    # mixes float32 and int32); the optimizer runs under it whatever the caller's setting.
    return jax.numpy_dtype_promotion("standard")


# The metrics a target can name besides the measurements' columns.
TARGET_METRICS = ("train_loss", "test_loss", "test_accuracy", "val_loss", "val_accuracy")


@dataclasses.dataclass(frozen=True)
class Target:
    """A value of a metric at which a config stops: ``Target("train_loss", 0.5)``.

    At each of a config's evaluation points the engine compares the metric with
    ``value``; at the first point where it is reached (``<=`` for ``mode="min"``,
    ``>=`` for ``"max"``; a NaN never is) the config stops updating and its rows
    end, and the table's ``steps_to_target`` and ``examples_to_target`` hold that
    point (NaN for a config that never reached it). A chunk whose configs have all
    reached their targets, diverged or finished ends there.

    Attributes:
      metric: ``train_loss``, ``test_loss``, ``test_accuracy``, ``val_loss``,
        ``val_accuracy`` or a column of the spec's measurements.
      value: the target value.
      mode: ``"min"`` or ``"max"``; default ``"max"`` for an accuracy, else ``"min"``.
      interpolate: report ``steps_to_target`` (and examples) interpolated linearly
        in the metric between the point before and the point where it was reached,
        instead of that point.
    """

    metric: str
    value: float
    mode: str | None = None
    interpolate: bool = False

    def __post_init__(self):
        if not isinstance(self.metric, str) or not self.metric:
            raise InputError(f"target metric {self.metric!r} is invalid: expected a column name")
        value = self.value
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.number))
            or not np.isfinite(value)
        ):
            raise InputError(f"target {self.metric}={value!r} is invalid: expected a finite number")
        object.__setattr__(self, "value", float(value))
        mode = self.mode if self.mode is not None else ("max" if "accuracy" in self.metric else "min")
        if mode not in ("min", "max"):
            raise InputError(f"target mode={self.mode!r} is invalid: expected 'min' or 'max'")
        object.__setattr__(self, "mode", mode)
        if not isinstance(self.interpolate, (bool, np.bool_)):
            raise InputError(f"target interpolate={self.interpolate!r} is invalid: expected true or false")
        object.__setattr__(self, "interpolate", bool(self.interpolate))

    @classmethod
    def from_value(cls, value) -> Target | None:
        """A Target from ``None``, a Target, ``{"metric": ..., "value": ..., ...}`` (as
        ``sweep.toml`` writes it) or ``{metric: value}``."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, Mapping) and "metric" in value:
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - fields)
            if unknown:
                raise InputError(
                    f"target key {unknown[0]!r} is invalid: expected {', '.join(map(repr, sorted(fields)))}"
                )
            return cls(**value)
        if isinstance(value, Mapping) and len(value) == 1:
            ((metric, target),) = value.items()
            return cls(metric, target)
        raise InputError(
            f"target={value!r} is invalid: expected one metric and its value, e.g. {{'train_loss': 0.5}}, "
            "or a jaxopt_lab.engine.train.Target"
        )


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """Everything about a run that changes shapes or compiled code.

    Attributes:
      dataset: a name understood by :func:`jaxopt_lab.data.load`, or a
        :class:`jaxopt_lab.data.Dataset` of your own arrays (``data.from_arrays``),
        which the engine keys by identity and ``sweep.toml`` records by fingerprint.
      dataset_options: ``(name, value)`` pairs forwarded to ``data.load``.
      model: a name from ``models.MODELS`` or a :class:`jaxopt_lab.nn.models.Model`.
      model_options: ``(name, value)`` pairs forwarded to ``models.create``.
      optimizer: a name from ``optimizers.REGISTRY`` or a :class:`jaxopt_lab.Optimizer`.
      optimizer_flags: keyword-only flags of that alias, e.g. ``(("nesterov", True),)``.
      batch_size: examples per step.
      steps: number of optimizer steps.
      eval_every: steps between evaluation points (the last point is ``steps``).
      eval_growth: ``None``, or points spaced geometrically from ``eval_every`` by at
        most this factor (> 1; :func:`eval_steps`).
      reduction: ``"mean"`` or ``"sum"`` of the per-example losses.
      lr_rule: how the learning rate moves with batch size: ``"none"``,
        ``"linear"`` or ``"sqrt"`` relative to ``base_batch_size``.
      base_batch_size: the batch size at which the learning rate is the given one.
      schedule: a name from ``schedules.SCHEDULES``: the learning rate at step ``t``
        is ``schedule(t, peak_lr=learning_rate, ...)``, with its parameters
        (``warmup_steps``, ``decay_steps``, ``final_lr_fraction``, ...) traced
        hyperparameters; ``decay_steps`` and ``transition_steps`` default to the
        config's own number of steps.
      loss: the per-example loss: ``"auto"`` (cross-entropy for a classification
        dataset, ``"squared_error"`` otherwise), ``"cross_entropy"`` (with the
        traced ``label_smoothing`` hyperparameter), ``"squared_error"``
        (``0.5 * |outputs - targets|**2``), ``"mse"`` (the mean of the squares over
        the outputs), or a callable ``loss(outputs, targets) -> per-example losses``.
        The test loss is the same loss without label smoothing.
      measure: measurements taken at every evaluation point, each adding columns
        (:mod:`jaxopt_lab.measure`): built-in names (``"sharpness"``,
        ``"noise_scale"``, ...), :class:`~jaxopt_lab.measure.Measurement` objects, or
        functions ``fn(params, model_state, batch) -> dict[str, scalar]``.
      measure_batch_size: examples of the measurement batch, the same training
        examples at every point (all of them when the set is smaller).
      target: a :class:`Target` (or ``{metric: value}``): a config stops at the
        first evaluation point where the metric reaches the value.
      diverge_above: a training-loss ceiling: a config whose loss passes it has
        diverged (frozen, its metrics NaN), as one whose loss is not finite.
        ``None`` (the default) puts it at ``DIVERGE_FACTOR`` (100) times the
        config's first training loss; ``math.inf`` flags only non-finite losses.
    """

    dataset: Any = "mnist1d"
    dataset_options: tuple[tuple[str, Any], ...] = ()
    model: Any = "mlp"
    model_options: tuple[tuple[str, Any], ...] = ()
    optimizer: Any = "adam"
    optimizer_flags: tuple[tuple[str, Any], ...] = ()
    batch_size: int = 32
    steps: int = 1000
    eval_every: int = 100
    eval_growth: float | None = None
    reduction: str = "mean"
    lr_rule: str = "none"
    base_batch_size: int = 32
    diverge_above: float | None = None
    loss: Any = "auto"
    schedule: str = "constant"
    measure: tuple = ()
    measure_batch_size: int = 1024
    target: Any = None

    def __post_init__(self):
        optimizers_lib.resolve(self.optimizer)  # a registry name or an Optimizer
        if isinstance(self.dataset, data_lib.Dataset):
            object.__setattr__(self, "dataset", data_lib.DatasetRef(self.dataset))
        elif isinstance(self.dataset, str) and self.dataset.startswith("arrays:"):
            raise InputError(
                f"dataset={self.dataset!r} came from arrays given in Python (data.from_arrays): run this "
                "sweep from Python with the same arrays, as TrainSpec(dataset=...)"
            )
        elif not isinstance(self.dataset, (str, data_lib.DatasetRef)):
            raise InputError(
                f"dataset={self.dataset!r} is invalid: expected a name (mnist1d, digits, mnist5k, "
                "regression, npz:PATH) or a jaxopt_lab.data.Dataset (data.from_arrays)"
            )
        for name in ("model", "loss"):
            value = getattr(self, name)
            if isinstance(value, str) and value.startswith(PYTHON_PREFIX):
                raise InputError(
                    f"{name}={value!r} was given as a Python object: run this sweep from Python with "
                    f"the same object, as TrainSpec({name}=...)"
                )
        if isinstance(self.model, str) and self.model not in models_lib.MODELS:
            raise InputError(
                f"model={self.model!r} is invalid: expected one of {', '.join(map(repr, models_lib.MODELS))}"
            )
        if self.reduction not in scaling.REDUCTIONS:
            raise InputError(
                f"reduction={self.reduction!r} is invalid: expected one of "
                f"{', '.join(map(repr, scaling.REDUCTIONS))}"
            )
        if self.lr_rule not in scaling.LR_RULES:
            raise InputError(
                f"lr_rule={self.lr_rule!r} is invalid: expected one of "
                f"{', '.join(map(repr, scaling.LR_RULES))}"
            )
        for name in ("batch_size", "steps", "eval_every", "base_batch_size", "measure_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value < 2**31:
                raise InputError(
                    f"{name}={value!r} is invalid: expected a positive integer below 2**31 "
                    "(steps and sizes are int32 in the compiled program)"
                )
        schedules_lib.params_of(self.schedule)  # a known name
        if not (callable(self.loss) or self.loss in LOSSES):
            raise InputError(
                f"loss={self.loss!r} is invalid: expected one of {', '.join(map(repr, LOSSES))} or a "
                "callable loss(outputs, targets) -> per-example losses"
            )
        growth = self.eval_growth
        if growth is not None and (
            isinstance(growth, bool)
            or not isinstance(growth, (int, float, np.number))
            or not 1 < growth < math.inf
        ):
            raise InputError(
                f"eval_growth={growth!r} is invalid: expected a number > 1 (geometric points) or None"
            )
        value = self.diverge_above
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value > 0
        ):
            raise InputError(
                f"diverge_above={value!r} is invalid: expected a positive number (inf: only non-finite "
                "losses) or None (100 times the first training loss)"
            )
        measure = self.measure
        if isinstance(measure, Mapping):  # sweep.toml's [measure] table: name -> options
            measure = [measure_lib.resolve(k, v) for k, v in measure.items()]
        elif isinstance(measure, str) or callable(measure) or isinstance(measure, measure_lib.Measurement):
            measure = [measure]
        measure = tuple(measure_lib.resolve(m) for m in measure)
        labels = [m.label() for m in measure]
        repeated = sorted({n for n in labels if labels.count(n) > 1})
        if repeated:
            raise InputError(f"measure {repeated[0]!r} is given twice: expected each measurement once")
        object.__setattr__(self, "measure", measure)
        object.__setattr__(self, "target", Target.from_value(self.target))
        # Options arrive as dicts from users; keep them hashable and ordered.
        for name in ("dataset_options", "model_options", "optimizer_flags"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                value = tuple(sorted(value.items()))
            object.__setattr__(self, name, tuple((k, _freeze(v)) for k, v in value))


def _freeze(value):
    return tuple(value) if isinstance(value, list) else value


class TrainState(NamedTuple):
    """What one config carries from step to step.

    Attributes:
      params: model parameters.
      model_state: batch-norm running statistics (an empty pytree without batch norm).
      opt_state: the optimizer's state.
      data_key: the key that orders the training set, one permutation per epoch.
      perm: the current epoch's permutation of the training set.
      loss_sum: sum of the training losses since the last evaluation point.
      loss_ceiling: the training loss past which the config has diverged (NaN
        until the first step sets it from ``TrainSpec.diverge_above``).
      diverged: true once a training loss was not finite or passed the ceiling;
        the state is then frozen.
      measure: the carries of ``TrainSpec.measure``, one per measurement.
      reached: true once the config reached its ``TrainSpec.target``; the state is
        then frozen.
    """

    params: Any
    model_state: Any
    opt_state: Any
    data_key: jax.Array
    perm: jax.Array
    loss_sum: jax.Array
    loss_ceiling: jax.Array
    diverged: jax.Array
    measure: tuple
    reached: jax.Array


class History(NamedTuple):
    """Metrics per evaluation point (leading axis), as returned by :func:`train`."""

    step: jax.Array
    examples_seen: jax.Array
    train_loss: jax.Array
    test_loss: jax.Array
    test_accuracy: jax.Array
    diverged: jax.Array
    applied_lr: jax.Array  # the learning rate of the last step before the point
    val_loss: jax.Array  # on the dataset's validation set (NaN without one)
    val_accuracy: jax.Array
    measured: dict  # the columns of TrainSpec.measure, by name
    reached: jax.Array  # whether the target was reached at or before the point


class _Metrics(NamedTuple):
    train_loss: jax.Array
    test_loss: jax.Array
    test_accuracy: jax.Array
    diverged: jax.Array
    applied_lr: jax.Array
    val_loss: jax.Array
    val_accuracy: jax.Array
    measured: dict
    reached: jax.Array


@functools.lru_cache(maxsize=16)
def load_dataset(name, options: tuple = ()) -> data_lib.Dataset:
    """``data.load`` memoized per process, so a sweep loads its data once; a dataset given
    as arrays (a :class:`jaxopt_lab.data.DatasetRef`) is itself."""
    if isinstance(name, data_lib.DatasetRef):
        return name.dataset
    return data_lib.load(name, **dict(options))


def get_model(spec: TrainSpec, dataset: data_lib.Dataset) -> models_lib.Model:
    """The spec's model, sized for the dataset's outputs (the same object every call)."""
    if not isinstance(spec.model, str):
        return spec.model
    num_outputs = dataset.num_classes or int(dataset.y_train.shape[-1])
    return models_lib.create(spec.model, num_outputs, **dict(spec.model_options))


def default_hparams(optimizer, schedule: str = "constant", **overrides) -> dict[str, float | None]:
    """The dynamic hyperparameters of an optimizer family and a schedule, with their defaults.

    The family's traced ``hparams`` (:class:`jaxopt_lab.Optimizer`; a registry
    name or the object), then ``weight_decay`` (unless the family applies its
    own), ``bn_momentum``, ``label_smoothing`` and the schedule's parameters
    (``None``: the run's number of steps).

    Example:
      >>> default_hparams("adam")
      {'learning_rate': 0.001, 'b1': 0.9, 'b2': 0.999, 'eps': 1e-08, 'eps_root': 0.0, \
'weight_decay': 0.0, 'bn_momentum': 0.99, 'label_smoothing': 0.0}
    """
    family = optimizers_lib.resolve(optimizer)
    out = {**family.defaults, **{k: v for k, v in _COMMON_HPARAMS.items() if k not in family.defaults}}
    out.update({k: schedules_lib.PARAMS[k] for k in schedules_lib.params_of(schedule)})
    unknown = set(overrides) - set(out) - {"batch_size"}
    if unknown:
        raise InputError(
            f"hyperparameter {sorted(unknown)[0]!r} is invalid for optimizer={family.name!r} and "
            f"schedule={schedule!r}: expected one of {', '.join(map(repr, out))}"
        )
    out.update(overrides)
    return out


def check_optimizer_flags(optimizer, flags: Mapping[str, Any] | tuple) -> None:
    """Raise :class:`InputError` for a flag that ``optimizer``'s family does not take.

    The flags are the family's ``static`` keywords (``nesterov``, ``ema``,
    ``centered``, ``bias_correction``, ...); the message names the flag, the
    optimizer and the flags it takes.
    """
    optimizers_lib.resolve(optimizer).check_static(flags)


def learning_rate_at(spec: TrainSpec, hparams: Mapping[str, Any], batch_size, step) -> jax.Array:
    """The learning rate of step ``step`` (counted from 0, as optax's ``count``): the
    ``learning_rate`` entry rescaled for the batch size by ``spec.lr_rule``, then shaped
    by ``spec.schedule`` with the schedule's parameters from ``hparams``."""
    peak = scaling.scale_learning_rate(
        hparams["learning_rate"], batch_size, spec.base_batch_size, spec.lr_rule
    )
    if spec.schedule == "constant":
        return peak
    params = {k: hparams[k] for k in schedules_lib.params_of(spec.schedule)}
    return schedules_lib.SCHEDULES[spec.schedule](step, peak_lr=peak, **params)


def make_optimizer(
    spec: TrainSpec, hparams: Mapping[str, Any], batch_size, step=0
) -> optax.GradientTransformation:
    """The optimizer of ``spec.optimizer`` for step ``step``, built from (possibly traced)
    hyperparameters.

    Its learning rate is :func:`learning_rate_at` that step: the engine builds the
    transformation anew inside every step, so a schedule reaches any factory as a
    plain (traced) learning rate, and the optimizer's state does not depend on it
    (as ``optax.inject_hyperparams`` would, without its extra state). A family
    that applies weight decay itself (AdamW, ...) gets the ``weight_decay`` entry;
    for the others it is added to the gradient before the optimizer (coupled,
    L2-style: for Adam this is Adam with L2, not AdamW), and without a
    ``"weight_decay"`` entry in ``hparams`` (a sweep drops it when every config's
    is zero) it is left out of the program: ``g + 0 * w == g`` for finite ``w``,
    so the numbers are the same.
    """
    family = optimizers_lib.resolve(spec.optimizer)
    values = {k: hparams[k] for k in family.hparam_names if k in hparams}
    values["learning_rate"] = learning_rate_at(spec, hparams, batch_size, step)
    tx = family.build(values, dict(spec.optimizer_flags))
    if family.owns_weight_decay or "weight_decay" not in hparams:
        return tx  # its own decay, or known to be zero: skip a pass over the parameters
    return optax.chain(optax.add_decayed_weights(hparams["weight_decay"]), tx)


def omitted_when_zero(optimizer) -> tuple[str, ...]:
    """The hyperparameters a program leaves out when every config's is zero: the same
    numbers (``g + 0 * w == g``; no smoothing), one pass less. Weight decay stays when the
    family applies it itself."""
    family = optimizers_lib.resolve(optimizer)
    return ("label_smoothing",) if family.owns_weight_decay else ("weight_decay", "label_smoothing")


def _per_example_loss(outputs, y, num_classes: int, loss="auto", label_smoothing=None) -> jax.Array:
    """The spec's per-example loss; ``label_smoothing`` (traced) only for cross-entropy.

    Smoothed cross-entropy is ``(1 - a) * CE(y) + a * mean_k CE(k)``: the cross-entropy
    against ``optax.smooth_labels(one_hot(y), a)``, and exactly the plain one at ``a = 0``.
    """
    if loss == "auto":
        loss = "cross_entropy" if num_classes else "squared_error"
    if callable(loss):
        return loss(outputs, y)
    if loss == "cross_entropy":
        ce = optax.softmax_cross_entropy_with_integer_labels(outputs, y)
        if label_smoothing is None:
            return ce
        uniform = -jnp.mean(jax.nn.log_softmax(outputs, axis=-1), axis=-1)
        a = jnp.asarray(label_smoothing, ce.dtype)
        return (1 - a) * ce + a * uniform
    if loss == "mse":
        return jnp.mean(jnp.square(outputs - y), axis=-1)
    return 0.5 * jnp.sum(jnp.square(outputs - y), axis=-1)


def check_model_fits(spec: TrainSpec, dataset: data_lib.Dataset) -> None:
    """Raise :class:`InputError` when the spec's loss does not fit the dataset (cross-entropy
    without classes), the model's outputs do not fit the targets under it, or a callable
    loss does not return one loss per example; abstractly, on two training examples
    (``jax.eval_shape``), before anything runs."""
    if spec.loss == "cross_entropy" and not dataset.num_classes:
        raise InputError(
            f"loss='cross_entropy' is invalid for dataset={spec.dataset!r}: it has no classes; "
            "expected 'squared_error', 'mse' or a callable"
        )
    model = get_model(spec, dataset)
    x, y = dataset.x_train[:2], dataset.y_train[:2]
    params, state = jax.eval_shape(model.init, jax.random.key(0), x)
    outputs, _ = jax.eval_shape(lambda p, s: model.apply(p, s, x, train=False), params, state)
    loss = spec.loss
    if loss == "auto":
        loss = "cross_entropy" if dataset.num_classes else "squared_error"
    if loss == "cross_entropy":
        if outputs.ndim != 2 or outputs.shape[1] < dataset.num_classes:
            raise InputError(
                f"model outputs of shape {tuple(outputs.shape)} for 2 examples are invalid for "
                f"{dataset.num_classes} classes: expected (2, {dataset.num_classes}) logits"
            )
    elif not callable(loss) and outputs.shape != y.shape:
        raise InputError(
            f"model outputs of shape {tuple(outputs.shape)} for 2 examples are invalid for targets of "
            f"shape {tuple(y.shape)} under loss={loss!r}: expected the targets' shape"
        )
    if callable(loss):
        try:
            per_example = jax.eval_shape(loss, outputs, y)
        except Exception as err:  # the user's function: say where it failed, keep the cause
            raise InputError(
                f"loss={getattr(loss, '__name__', loss)!r} cannot take outputs of shape "
                f"{tuple(outputs.shape)} and targets of shape {tuple(y.shape)}: {type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}"
            ) from err
        if getattr(per_example, "shape", None) != (2,):
            raise InputError(
                f"loss={getattr(loss, '__name__', loss)!r} returned shape "
                f"{tuple(getattr(per_example, 'shape', ()))} for 2 examples: expected per-example "
                "losses of shape (2,)"
            )


def _steps_per_epoch(num_examples: int, batch_size):
    return num_examples // batch_size


def init_state(spec: TrainSpec, dataset: data_lib.Dataset, hparams, key: jax.Array) -> TrainState:
    """A fresh :class:`TrainState`: parameters from ``key``, batches from a key split off it.

    The same seed gives the same initialization and the same batch order for
    every learning rate, so a learning-rate sweep compares like with like.
    """
    model = get_model(spec, dataset)
    init_key, data_key = jax.random.split(key)
    params, model_state = model.init(init_key, dataset.x_train[:1])
    batch_size = hparams.get("batch_size", spec.batch_size)
    with _optax_promotion():
        opt_state = make_optimizer(spec, hparams, batch_size).init(params)
    num_examples = dataset.x_train.shape[0]
    return TrainState(
        params=params,
        model_state=model_state,
        opt_state=opt_state,
        data_key=data_key,
        perm=data_lib.epoch_permutation(data_key, 0, num_examples),
        loss_sum=jnp.zeros((), jnp.float32),
        loss_ceiling=jnp.asarray(jnp.nan if spec.diverge_above is None else spec.diverge_above, jnp.float32),
        diverged=jnp.zeros((), jnp.bool_),
        measure=tuple(m.init(params) for m in spec.measure),
        reached=jnp.zeros((), jnp.bool_),
    )


def _any(flag: jax.Array, axis_name) -> jax.Array:
    """Whether ``flag`` holds for any config along the mapped axis ``axis_name``.

    Under ``vmap(..., axis_name=axis_name)`` the ``psum`` makes this one unbatched
    boolean, so a ``lax.cond`` on it stays a real branch: taken when any config of
    the chunk needs it, skipped by all otherwise (a ``cond`` on a batched predicate
    becomes a ``select`` that runs both branches every step).
    """
    if axis_name is None:
        return flag
    return jax.lax.psum(flag.astype(jnp.int32), axis_name) > 0


def _train_step(
    spec,
    model,
    dataset,
    hparams,
    state: TrainState,
    step,
    stop_step,
    axis_name=None,
    freeze=True,
    batch_sharding=None,
) -> TrainState:
    """One optimizer step; a config that diverged or passed ``stop_step`` keeps its state.

    ``batch_sharding`` lays the batch's example axis out over devices (a sweep's ``data``
    mesh axis): the reductions over it (the loss, batch-norm statistics) stay the same
    code, and XLA's partitioner computes them over the whole batch.

    With ``freeze=False`` it does not: see :func:`run_segment`.
    """
    num_examples = dataset.x_train.shape[0]
    batch_size = hparams.get("batch_size", spec.batch_size)
    max_batch_size = spec.batch_size  # under the mask strategy, the group's largest
    spe = _steps_per_epoch(num_examples, batch_size)
    # The permutation's sort costs as much as several steps, so it runs only at an
    # epoch boundary. With a static batch size `step % spe` is not batched under vmap
    # and the cond is a real branch; under the mask strategy it is, and `_any` keeps
    # the branch real: it runs when some config of the chunk starts an epoch. The
    # others then redraw the permutation of their current epoch, which they hold.
    perm = jax.lax.cond(
        _any(step % spe == 0, axis_name),
        lambda: data_lib.epoch_permutation(state.data_key, step // spe, num_examples),
        lambda: state.perm,
    )
    offsets = jnp.arange(max_batch_size, dtype=jnp.int32)
    position = (step % spe) * batch_size
    idx = jnp.take(perm, (position + offsets) % num_examples)
    mask = None if "batch_size" not in hparams else offsets < batch_size
    xb, yb = dataset.x_train[idx], dataset.y_train[idx]
    if batch_sharding is not None:
        xb, yb = jax.lax.with_sharding_constraint((xb, yb), batch_sharding)
        mask = None if mask is None else jax.lax.with_sharding_constraint(mask, batch_sharding)

    def per_example_fn(params):
        outputs, new_model_state = model.apply(
            params,
            state.model_state,
            xb,
            train=True,
            mask=mask,
            bn_momentum=hparams["bn_momentum"],
        )
        per_example = _per_example_loss(
            outputs, yb, dataset.num_classes, spec.loss, hparams.get("label_smoothing")
        )
        return per_example, new_model_state

    def reduce(per_example):
        loss = scaling.reduce_loss(per_example, mask, spec.reduction)
        # The reported loss is always the mean, so curves compare across reductions.
        mean_loss = loss if spec.reduction == "mean" else scaling.reduce_loss(per_example, mask)
        return loss, mean_loss

    small_batch_size = batch_size // 2
    small_sq = jnp.full((), jnp.nan, jnp.float32)
    if any(m.uses_small_batch for m in spec.measure):
        # One forward pass, two backward passes: the batch's gradient, and the mean
        # gradient of its first B // 2 examples (through the same batch statistics).
        per_example, pullback, new_model_state = jax.vjp(per_example_fn, state.params, has_aux=True)
        weights, mean_loss = jax.grad(reduce, has_aux=True)(per_example)
        (grads,) = pullback(weights)
        small = (offsets < small_batch_size).astype(per_example.dtype)
        small = small / jnp.asarray(small_batch_size, per_example.dtype)
        (small_grads,) = pullback(small)
        small_sq = optax.tree.norm(small_grads, squared=True).astype(jnp.float32)
    else:

        def loss_fn(params):
            per_example, new_model_state = per_example_fn(params)
            loss, mean_loss = reduce(per_example)
            return loss, (new_model_state, mean_loss)

        grads, (new_model_state, mean_loss) = jax.grad(loss_fn, has_aux=True)(state.params)
    with _optax_promotion():
        tx = make_optimizer(spec, hparams, batch_size, step)
        updates, new_opt_state = tx.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    new_measure = state.measure
    if spec.measure:
        grad_sq = optax.tree.norm(grads, squared=True).astype(jnp.float32)
        if spec.reduction == "sum":  # the mean gradient's
            grad_sq = grad_sq / jnp.square(jnp.asarray(batch_size, grad_sq.dtype))
        info = measure_lib.StepInfo(
            state.params, updates, grad_sq, small_sq, jnp.asarray(batch_size), jnp.asarray(small_batch_size)
        )
        new_measure = tuple(m.step(c, info) for m, c in zip(spec.measure, state.measure, strict=True))

    active = (step < stop_step) & ~state.reached
    ceiling = state.loss_ceiling
    if spec.diverge_above is None:  # set by the first step: a multiple of its loss
        first = DIVERGE_FACTOR * jnp.abs(mean_loss)
        inf = jnp.full((), jnp.inf, ceiling.dtype)
        ceiling = jnp.where(jnp.isnan(ceiling) & active, jnp.where(first > 0, first, inf), ceiling)
    ok = jnp.isfinite(mean_loss) & (mean_loss <= ceiling)
    diverged = state.diverged | (active & ~ok)
    keep_old = diverged | ~active
    params, model_state, opt_state, measure = new = (new_params, new_model_state, new_opt_state, new_measure)
    if freeze:
        # A select, not a cond on `_any(keep_old)`: the select fuses into the optimizer's
        # own passes, while a cond's outputs cost a copy of every leaf (measured: no gain).
        old = (state.params, state.model_state, state.opt_state, state.measure)
        params, model_state, opt_state, measure = jax.tree.map(
            lambda n, o: jnp.where(keep_old, o, n), new, old
        )
    return TrainState(
        params=params,
        model_state=model_state,
        opt_state=opt_state,
        data_key=state.data_key,
        perm=perm,
        loss_sum=state.loss_sum + jnp.where(active, mean_loss, jnp.zeros_like(mean_loss)),
        loss_ceiling=ceiling,
        diverged=diverged,
        measure=measure,
        reached=state.reached,
    )


def _evaluate(spec, model, dataset, state: TrainState, x, y):
    """Loss (no label smoothing) and accuracy on all of ``(x, y)``, batch norm in evaluation
    mode; NaN for a set that is not there (``x is None``)."""
    nan = jnp.full((), jnp.nan, jnp.float32)
    if x is None:
        return nan, nan
    outputs, _ = model.apply(state.params, state.model_state, x, train=False)
    loss = jnp.mean(_per_example_loss(outputs, y, dataset.num_classes, spec.loss))
    if dataset.num_classes:
        return loss, jnp.mean((jnp.argmax(outputs, axis=-1) == y).astype(jnp.float32))
    return loss, nan


def run_segment(
    spec: TrainSpec,
    dataset: data_lib.Dataset,
    hparams,
    state: TrainState,
    start,
    num_steps,
    stop_step=None,
    axis_name=None,
    freeze=True,
    interval_start=None,
    reset=True,
    batch_sharding=None,
):
    """Advance ``state`` by ``num_steps`` steps from step ``start``, then evaluate.

    ``start`` and ``num_steps`` may be traced (the loop is a ``fori_loop``), so
    segments of any length share one compiled program. Steps at or past
    ``stop_step`` (a config's own budget inside a longer group) change nothing.
    ``axis_name`` names the config axis when this runs under
    ``vmap(..., axis_name=axis_name)``: under the mask strategy the epoch
    permutation then runs only in steps where some config of the chunk starts an
    epoch, instead of every step (the numbers are the same either way).

    ``freeze=False`` is a faster segment for a caller that can replay it: its
    steps do not select between the old and the new state of every leaf, so a
    config that diverges inside the segment is not frozen at its last finite
    state (its ``diverged`` flag is still set, and its state is garbage); configs
    diverged or finished before ``start`` get their entry state back at the end.
    Replay a segment in which a config diverged with ``freeze=True`` from the
    state it started from. The select is what an optimizer's update would
    otherwise need to compute twice: it costs up to a fifth of a small step on
    a CPU.

    ``interval_start`` and ``reset`` let a config's evaluation interval span
    several segments (a sweep's chunk stops at the union of its configs'
    evaluation points): ``train_loss`` is the mean over the active steps since
    ``interval_start`` (default ``start``), and ``loss_sum`` is cleared only where
    ``reset`` (default: always), at the config's own evaluation points.

    ``batch_sharding`` splits each batch's examples over devices (see ``_train_step``).

    Returns:
      ``(state, metrics)``: the new state with ``loss_sum`` reset, and
      ``_Metrics(train_loss, test_loss, test_accuracy, diverged, applied_lr, val_loss,
      val_accuracy)`` where
      ``train_loss`` is the mean training loss over the segment's active steps and
      ``applied_lr`` the learning rate of the config's last step in it. The losses
      and accuracies of a diverged config are NaN, as are the validation ones of a dataset
      without a validation set.
    """
    model = get_model(spec, dataset)
    stop_step = spec.steps if stop_step is None else stop_step

    def body(step, state):
        return _train_step(
            spec, model, dataset, hparams, state, step, stop_step, axis_name, freeze, batch_sharding
        )

    entry = state
    state = jax.lax.fori_loop(start, start + num_steps, body, state)
    if not freeze:
        frozen = entry.diverged | entry.reached | (start >= stop_step)
        state = state._replace(
            **{
                name: jax.tree.map(
                    lambda n, o: jnp.where(frozen, o, n), getattr(state, name), getattr(entry, name)
                )
                for name in ("params", "model_state", "opt_state", "measure")
            }
        )
    interval_start = start if interval_start is None else interval_start
    active_steps = jnp.clip(jnp.minimum(start + num_steps, stop_step) - interval_start, 1, None)
    train_loss = state.loss_sum / active_steps.astype(jnp.float32)
    test_loss, accuracy = _evaluate(spec, model, dataset, state, dataset.x_test, dataset.y_test)
    val_loss, val_accuracy = _evaluate(spec, model, dataset, state, dataset.x_val, dataset.y_val)
    nan = jnp.full((), jnp.nan, jnp.float32)
    last_step = jnp.maximum(jnp.minimum(start + num_steps, stop_step) - 1, 0)
    batch_size = hparams.get("batch_size", spec.batch_size)
    reset = jnp.asarray(reset)
    measured, carries = _measure(spec, model, dataset, hparams, state, start + num_steps)
    # A carry moves only at the config's own points, so that its chunk's other points
    # do not change its numbers (a warm start from an extra power iteration would).
    carries = jax.tree.map(lambda n, o: jnp.where(reset, n, o), carries, state.measure)
    metrics = _Metrics(
        train_loss=jnp.where(state.diverged, nan, train_loss),
        test_loss=jnp.where(state.diverged, nan, test_loss),
        test_accuracy=jnp.where(state.diverged, nan, accuracy),
        diverged=state.diverged,
        applied_lr=jnp.asarray(learning_rate_at(spec, hparams, batch_size, last_step), jnp.float32),
        val_loss=jnp.where(state.diverged, nan, val_loss),
        val_accuracy=jnp.where(state.diverged, nan, val_accuracy),
        measured={k: jnp.where(state.diverged, nan, v) for k, v in measured.items()},
        reached=state.reached,
    )
    reached = state.reached
    if spec.target is not None:
        value = {**metrics._asdict(), **metrics.measured}[spec.target.metric]
        target = jnp.asarray(spec.target.value, value.dtype)
        hit = (value <= target) if spec.target.mode == "min" else (value >= target)
        reached = reached | (reset & ~state.diverged & jnp.isfinite(value) & hit)
        metrics = metrics._replace(reached=reached)
    loss_sum = jnp.where(reset, jnp.zeros_like(state.loss_sum), state.loss_sum)
    return state._replace(loss_sum=loss_sum, measure=carries, reached=reached), metrics


def _measure(spec: TrainSpec, model, dataset, hparams, state: TrainState, step):
    """The spec's measurements at ``state``: ``(columns, carries)``."""
    if not spec.measure:
        return {}, state.measure
    idx = measure_lib.batch_indices(dataset.x_train.shape[0], spec.measure_batch_size)
    batch = (dataset.x_train[idx], dataset.y_train[idx])

    def loss(params, x, y):
        outputs, _ = model.apply(params, state.model_state, x, train=True, bn_momentum=hparams["bn_momentum"])
        per_example = _per_example_loss(
            outputs, y, dataset.num_classes, spec.loss, hparams.get("label_smoothing")
        )
        return jnp.mean(per_example)

    def example_loss(params, example):
        x, y = (a[None] for a in example)
        outputs, _ = model.apply(params, state.model_state, x, train=False)
        return _per_example_loss(outputs, y, dataset.num_classes, spec.loss, hparams.get("label_smoothing"))[
            0
        ]

    ctx = measure_lib.Context(
        params=state.params,
        model_state=state.model_state,
        opt_state=state.opt_state,
        batch=batch,
        dataset=dataset,
        model=model,
        loss=loss,
        example_loss=example_loss,
        evaluate=lambda x, y: _evaluate(spec, model, dataset, state, x, y),
        step=jnp.asarray(step, jnp.int32),
    )
    columns, carries = {}, []
    for m, carry in zip(spec.measure, state.measure, strict=True):
        values, carry = m(ctx, carry)
        columns.update({k: jnp.asarray(v).astype(jnp.float32) for k, v in values.items()})
        carries.append(carry)
    return columns, tuple(carries)


def measurement_columns(spec: TrainSpec, dataset: data_lib.Dataset) -> tuple[str, ...]:
    """The columns ``spec.measure`` adds, in order; raises :class:`InputError` for a
    measurement that cannot run on this spec and data, that returns something other
    than named real scalars, or whose column another measurement or the table has,
    and for a target naming a column the run does not have. Abstract: nothing runs."""
    from jaxopt_lab.analysis import tables as tables_lib

    for m in spec.measure:
        m.check(spec, dataset)
    hp = default_hparams(spec.optimizer, spec.schedule)
    hparams = _as_arrays({k: spec.steps if v is None else v for k, v in hp.items()})
    model = get_model(spec, dataset)
    taken = dict.fromkeys(tables_lib.METRIC_COLUMNS + tables_lib.TARGET_COLUMNS, "the results table")
    columns = []
    for m in spec.measure:
        one = dataclasses.replace(spec, measure=(m,))

        def run(key, one=one):
            state = init_state(one, dataset, hparams, key)
            return _measure(one, model, dataset, hparams, state, 0)[0]

        name = m.label()
        try:
            shapes = jax.eval_shape(run, jax.random.key(0))
        except InputError:
            raise
        except Exception as err:  # the user's function: say which, keep the cause
            raise InputError(
                f"measure {name!r} cannot run on this model and data: {type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}"
            ) from err
        for key, shape in shapes.items():
            if not isinstance(key, str) or not key:
                raise InputError(f"measure {name!r} returned the key {key!r}: expected column names")
            if shape.shape != ():
                raise InputError(
                    f"measure {name!r} returned {key!r} of shape {shape.shape}: expected a scalar"
                )
            if key in taken:
                raise InputError(f"measure {name!r} returns column {key!r}, which {taken[key]} has already")
            taken[key] = f"measure {name!r}"
            columns.append(key)
    if spec.target is not None:
        valid = [m for m in TARGET_METRICS if dataset.x_val is not None or not m.startswith("val_")]
        valid += columns
        if spec.target.metric not in valid:
            shown = ", ".join(map(repr, valid))
            raise InputError(f"target metric {spec.target.metric!r} is invalid: expected one of {shown}")
    return tuple(columns)


def eval_steps(steps: int, eval_every: int, growth: float | None = None) -> list[int]:
    """Evaluation points of a run: every ``eval_every`` steps, and always the last step.

    With ``growth``, geometric instead: from ``eval_every``, each point is
    ``max(previous + 1, floor(previous * growth))``, so a run is evaluated at
    steps spaced by at most that factor (a steps-to-target resolved to ``growth``
    relative), consecutively while ``previous * growth < previous + 1``.
    """
    if growth is None:
        points = list(range(eval_every, steps + 1, eval_every))
    else:
        points = [min(eval_every, steps)]
        while points[-1] < steps:
            points.append(min(steps, max(points[-1] + 1, math.floor(points[-1] * growth))))
    if not points or points[-1] != steps:
        points.append(steps)
    return points


def make_train(spec: TrainSpec, dataset: data_lib.Dataset):
    """A pure, jittable and vmappable ``train_fn(hparams, key) -> History`` for ``spec``.

    The loop over evaluation points is a ``lax.scan``; batch-norm statistics,
    optimizer moments and the data key are threaded through it.

    Example:
      >>> spec = TrainSpec(dataset="regression", model="linear", optimizer="sgd", steps=20)
      >>> dataset = load_dataset("regression")
      >>> lrs = jnp.array([0.01, 0.1])
      >>> hp = default_hparams("sgd")
      >>> fn = jax.vmap(lambda lr: make_train(spec, dataset)({**hp, "learning_rate": lr},
      ...                                                  jax.random.key(0)))
      >>> jax.jit(fn)(lrs).test_loss.shape
      (2, 1)
    """
    points = eval_steps(spec.steps, spec.eval_every, spec.eval_growth)
    starts = jnp.asarray([0] + points[:-1], jnp.int32)
    lengths = jnp.asarray(np.diff([0] + points), jnp.int32)

    def train_fn(hparams, key) -> History:
        hparams = _as_arrays(hparams)
        state = init_state(spec, dataset, hparams, key)

        def segment(state, start_and_length):
            start, length = start_and_length
            return run_segment(spec, dataset, hparams, state, start, length)

        _, metrics = jax.lax.scan(segment, state, (starts, lengths))
        batch_size = hparams.get("batch_size", spec.batch_size)
        step = jnp.asarray(points, jnp.int32)
        return History(
            step=step,
            examples_seen=step * batch_size,
            train_loss=metrics.train_loss,
            test_loss=metrics.test_loss,
            test_accuracy=metrics.test_accuracy,
            diverged=metrics.diverged,
            applied_lr=metrics.applied_lr,
            val_loss=metrics.val_loss,
            val_accuracy=metrics.val_accuracy,
            measured=metrics.measured,
            reached=metrics.reached,
        )

    return train_fn


def _as_arrays(hparams: Mapping[str, Any]) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v, jnp.int32 if k == "batch_size" else jnp.float32) for k, v in hparams.items()}


@functools.lru_cache(maxsize=64)
def _jitted_train(spec: TrainSpec):
    dataset = load_dataset(spec.dataset, spec.dataset_options)
    return jax.jit(make_train(spec, dataset))


def train(spec: TrainSpec, hparams: Mapping[str, Any] | None = None, key=0) -> History:
    """Run one config: a pure function of ``(spec, hparams, key)``.

    Args:
      spec: the static part of the run.
      hparams: dynamic hyperparameters; missing ones take
        :func:`default_hparams` of ``spec.optimizer``.
      key: a PRNG key or an integer seed.

    Returns:
      A :class:`History` with one entry per evaluation point.
    """
    check_optimizer_flags(spec.optimizer, spec.optimizer_flags)
    dataset = load_dataset(spec.dataset, spec.dataset_options)
    check_model_fits(spec, dataset)
    measurement_columns(spec, dataset)
    hp = default_hparams(spec.optimizer, spec.schedule, **dict(hparams or {}))
    schedules_lib.check_params({k: hp[k] for k in schedules_lib.params_of(spec.schedule)})
    hp.update({k: spec.steps for k, v in hp.items() if v is None})  # a decay that ends with the run
    for name in omitted_when_zero(spec.optimizer):  # as a sweep: the same numbers, less work
        if hp[name] == 0:
            del hp[name]
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(int(key))
    return _jitted_train(spec)(hp, key)


def clear_caches() -> None:
    """Forget this module's memoized datasets (device arrays) and compiled ``train`` programs."""
    load_dataset.cache_clear()
    _jitted_train.cache_clear()
