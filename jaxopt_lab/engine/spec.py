"""What a run is: the static spec, its hyperparameters, and what they build.

Everything that changes shapes or code lives in the frozen :class:`TrainSpec`;
everything that changes array values (learning rate, the optimizer's numeric
hyperparameters, weight decay, batch-norm momentum, and under the sweep's
``mask`` strategy the batch size) is a leaf of the ``hparams`` dict
(:func:`default_hparams`). From the two come the dataset and model
(:func:`load_dataset`, :func:`get_model`), the optimizer of a step
(:func:`make_optimizer`, with the schedule's learning rate :func:`learning_rate_at`)
and the per-example loss (:func:`per_example_loss`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_lab import data as data_lib
from jaxopt_lab.errors import InputError
from jaxopt_lab.measure import measurements as measure_lib
from jaxopt_lab.measure.targets import Target
from jaxopt_lab.nn import models as models_lib
from jaxopt_lab.optim import families as optimizers_lib
from jaxopt_lab.optim import scaling
from jaxopt_lab.optim import schedules as schedules_lib

__all__ = [
    "TrainSpec",
    "LOSSES",
    "PYTHON_PREFIX",
    "DIVERGE_FACTOR",
    "load_dataset",
    "get_model",
    "default_hparams",
    "check_optimizer_flags",
    "learning_rate_at",
    "make_optimizer",
    "omitted_when_zero",
    "per_example_loss",
    "check_model_fits",
    "optax_promotion",
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


def optax_promotion():
    # optax's transforms are written for JAX's standard dtype promotion (`decay**count`
    # mixes float32 and int32); the optimizer runs under it whatever the caller's setting.
    return jax.numpy_dtype_promotion("standard")


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


def per_example_loss(outputs, y, num_classes: int, loss="auto", label_smoothing=None) -> jax.Array:
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
