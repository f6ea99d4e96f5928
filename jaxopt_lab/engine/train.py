"""The training step, segments of steps between evaluation points, and one run.

A run is a pure function of (static :class:`~jaxopt_lab.engine.spec.TrainSpec`,
hyperparameters, key), so a sweep is this same code under ``jax.vmap``. The
building blocks are shared by :func:`train` (one config, one jitted program) and
by :mod:`jaxopt_lab.engine.chunks` (a chunk of configs under ``vmap``, run in
segments so the host can report progress between them):

* :func:`init_state` builds a :class:`TrainState` from a key;
* :func:`run_segment` advances it by a traced number of steps, then evaluates
  and measures (:mod:`jaxopt_lab.measure`).
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
from jaxopt_lab.engine.spec import (
    DIVERGE_FACTOR,
    LOSSES,
    PYTHON_PREFIX,
    TrainSpec,
    check_model_fits,
    check_optimizer_flags,
    default_hparams,
    get_model,
    learning_rate_at,
    load_dataset,
    make_optimizer,
    omitted_when_zero,
    optax_promotion,
    per_example_loss,
)
from jaxopt_lab.errors import InputError
from jaxopt_lab.measure import measurements as measure_lib
from jaxopt_lab.measure.targets import TARGET_METRICS, Target
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
    with optax_promotion():
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
        per_example = per_example_loss(
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
    with optax_promotion():
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
    loss = jnp.mean(per_example_loss(outputs, y, dataset.num_classes, spec.loss))
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
        per_example = per_example_loss(
            outputs, y, dataset.num_classes, spec.loss, hparams.get("label_smoothing")
        )
        return jnp.mean(per_example)

    def example_loss(params, example):
        x, y = (a[None] for a in example)
        outputs, _ = model.apply(params, state.model_state, x, train=False)
        return per_example_loss(outputs, y, dataset.num_classes, spec.loss, hparams.get("label_smoothing"))[0]

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
