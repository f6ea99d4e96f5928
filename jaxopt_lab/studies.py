"""Studies on top of the sweep engine: best settings per batch size, runs to a target, final states.

The sweep engine (:mod:`jaxopt_lab.sweep`) returns a table of metrics; the
questions asked of it by the experiments need a few more pieces, each a small
function here:

* **Per-batch-size sweeps** (:func:`sweep_per_batch_size`): one sweep per batch
  size, each with its own grid (e.g. a learning-rate grid that moves with the
  batch size) and its own evaluation interval, concatenated into one table.
* **Reduction pairs** (:func:`rescaled_gaps`): the distance between the curves
  of a ``reduction="sum"`` config and the ``"mean"`` config that should follow
  the same trajectory (SGD on the sum at ``lr`` is SGD on the mean at ``lr·B``).
* **Final states** (:func:`init_states`, :func:`train_states`) and measurements
  on them (:func:`evaluate_states`, :func:`sharpness`, :func:`noise_scales`):
  the sweep table keeps metrics only, so configs whose parameters are needed
  are run here from ``(spec, hparams, seed)``. That is the sweep's run up to
  float reordering; near the largest stable learning rate training is chaotic
  and such differences grow (a program of another vmapped width can end
  several points of accuracy away), so measure the states of the runs you
  report rather than re-running one config of them.
* **Steps to a target loss** (:func:`run_to_target`, :func:`steps_to_target_table`,
  :func:`best_steps`): training evaluated on the *whole* training set at
  geometrically spaced steps, stopped as soon as a config reaches the target.
* **The critical batch size** (:func:`fit_critical_batch_size`): the fit of
  ``S(B) = S_min (1 + B_crit / B)``.

References:
  McCandlish, Kaplan, Amodei and the OpenAI Dota Team, *An Empirical Model of
  Large-Batch Training*, 2018 (arXiv:1812.06162).
  Shallue, Lee, Antognini, Sohl-Dickstein, Frostig and Dahl, *Measuring the
  Effects of Data Parallelism on Neural Network Training*, JMLR 2019
  (arXiv:1811.03600).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxopt_lab import metrics as metrics_lib
from jaxopt_lab import results as results_lib
from jaxopt_lab import sweep as sweep_lib
from jaxopt_lab import train as train_lib
from jaxopt_lab.errors import InputError

__all__ = [
    "log_grid",
    "log_slope",
    "sweep_per_batch_size",
    "concat_tables",
    "rescaled_gaps",
    "init_states",
    "train_states",
    "take_states",
    "Evaluation",
    "evaluate_states",
    "Sharpness",
    "sharpness",
    "noise_scales",
    "geometric_steps",
    "TargetRuns",
    "run_to_target",
    "steps_to_target_table",
    "best_steps",
    "CriticalBatchFit",
    "fit_critical_batch_size",
]

STOP_RULES = ("first", "all")


# ------------------------------------------------------------------ grids and tables


def log_grid(low: float, high: float, per_decade: int = 4) -> np.ndarray:
    """The points ``10 ** (k / per_decade)`` (integer ``k``) that lie in ``[low, high]``.

    Points of grids with the same ``per_decade`` coincide, so grids of
    different ranges can be compared point by point.

    Example:
      >>> log_grid(1e-2, 1.0, per_decade=2)
      array([0.01      , 0.03162278, 0.1       , 0.31622777, 1.        ])

    Args:
      low: the smallest value allowed, ``> 0``.
      high: the largest value allowed, ``>= low``.
      per_decade: points per factor of ten.

    Returns:
      A float64 array, increasing.
    """
    if not (isinstance(low, (int, float, np.number)) and low > 0):
        raise InputError(f"low={low!r} is invalid: expected a positive number")
    if not (isinstance(high, (int, float, np.number)) and high >= low):
        raise InputError(f"high={high!r} is invalid: expected a number >= low={low!r}")
    if isinstance(per_decade, bool) or not isinstance(per_decade, (int, np.integer)) or per_decade < 1:
        raise InputError(f"per_decade={per_decade!r} is invalid: expected a positive integer")
    # The tolerance keeps the end points themselves when they are grid points.
    first = math.ceil(math.log10(low) * per_decade - 1e-9)
    last = math.floor(math.log10(high) * per_decade + 1e-9)
    return 10.0 ** (np.arange(first, last + 1) / per_decade)


def log_slope(x, y) -> float:
    """Least-squares slope of ``log y`` against ``log x`` over the finite, positive pairs.

    ``y ∝ x^a`` gives ``a``: 1 for the linear learning-rate rule, 0.5 for the
    square-root rule, 0 for a learning rate that does not move.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise InputError(f"x and y must be 1-D of the same length, got shapes {x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if np.unique(x[ok]).size < 2:
        raise InputError(f"log_slope needs at least two distinct positive x with finite y, got x={x}, y={y}")
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def sweep_per_batch_size(
    spec: train_lib.TrainSpec,
    batch_sizes: Sequence[int],
    axes: Mapping[str, Sequence] | Callable[[int], Mapping[str, Sequence]],
    *,
    epochs: float | None = None,
    evals_per_epoch: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """One sweep per batch size, each with its own grid, as one results table.

    The engine's :class:`~jaxopt_lab.sweep.Grid` is a cartesian product, so a
    learning-rate grid that moves with the batch size (``lr_sum = lr_mean / B``)
    cannot be one grid. Under the ``bucket`` strategy every batch size is a
    compiled group anyway, so running them one sweep at a time costs no extra
    compile. Config ids are renumbered to stay unique.

    Args:
      spec: the static part of every run (its ``batch_size`` is replaced).
      batch_sizes: the batch sizes.
      axes: grid axes other than ``batch_size`` (e.g. ``learning_rate``,
        ``seed``, ``reduction``, ``eps``), or a function of the batch size
        returning them.
      epochs: a budget in epochs (``epochs * (n // B)`` steps) instead of ``spec.steps``.
      evals_per_epoch: evaluation points per epoch (``eval_every = max(1,
        (n // B) // evals_per_epoch)``); ``None`` keeps ``spec.eval_every``.
      chunk_size: configs per compiled call, forwarded to the sweep.
      progress: show the sweeps' progress bars.

    Returns:
      A results table (see :mod:`jaxopt_lab.results`); axes missing from some
      batch sizes' grids are NaN in their rows.
    """
    if len(batch_sizes) == 0:
        raise InputError("batch_sizes=[] is invalid: expected at least one batch size")
    if evals_per_epoch is not None and (
        isinstance(evals_per_epoch, bool)
        or not isinstance(evals_per_epoch, (int, np.integer))
        or evals_per_epoch < 1
    ):
        raise InputError(f"evals_per_epoch={evals_per_epoch!r} is invalid: expected a positive integer")
    dataset = train_lib.load_dataset(spec.dataset, spec.dataset_options)
    num_examples = int(dataset.x_train.shape[0])
    tables = []
    for batch_size in batch_sizes:
        grid_axes = dict(axes(batch_size) if callable(axes) else axes)
        if "batch_size" in grid_axes:
            raise InputError("axes must not contain 'batch_size': it is given by batch_sizes")
        b_spec = dataclasses.replace(spec, batch_size=int(batch_size))
        if evals_per_epoch is not None:
            per_epoch = num_examples // int(batch_size) if batch_size <= num_examples else 1
            b_spec = dataclasses.replace(b_spec, eval_every=max(1, per_epoch // evals_per_epoch))
        result = sweep_lib.sweep(
            b_spec,
            sweep_lib.Grid(batch_size=[int(batch_size)], **grid_axes),
            epochs=epochs,
            strategy="bucket",
            chunk_size=chunk_size,
            progress=progress,
            plots=False,
        )
        tables.append(result.table)
    return concat_tables(tables)


def concat_tables(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Results tables of separate sweeps as one, config ids renumbered to stay unique.

    Each table's ids are shifted past the previous tables' largest; columns
    missing from a table are NaN in its rows; metric columns go last.
    """
    if len(tables) == 0:
        raise InputError("tables=[] is invalid: expected at least one results table")
    shifted, offset = [], 0
    for table in tables:
        if "config_id" not in table.columns:
            raise InputError("every table needs a 'config_id' column")
        table = table.copy()
        ids = table["config_id"].to_numpy()
        table["config_id"] = ids - (ids.min() if ids.size else 0) + offset
        offset = int(table["config_id"].max()) + 1 if ids.size else offset
        shifted.append(table)
    table = pd.concat(shifted, ignore_index=True)
    metric_columns = [c for c in results_lib.METRIC_COLUMNS if c in table.columns]
    columns = [c for c in table.columns if c not in metric_columns] + metric_columns
    return table[columns]


def _key(value):
    # Hyperparameters computed as lr / B * B come back within an ulp: match to 10 digits.
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{float(value):.10g}"
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def rescaled_gaps(
    table: pd.DataFrame,
    exponents: Mapping[str, float] | None = None,
    metrics: Sequence[str] = ("train_loss", "test_loss"),
) -> pd.DataFrame:
    """How far each ``reduction="sum"`` config's curves lie from its ``"mean"`` partner's.

    The loss summed over a batch of ``B`` is ``B`` times its mean, so its
    gradient is too. A hyperparameter ``h`` of the sum config is matched with
    ``h · B**exponents[h]`` of the mean config, every other hyperparameter being
    equal. SGD and momentum: ``{"learning_rate": 1}`` (the sum at ``lr`` is the
    mean at ``lr·B``). Adam is invariant to the gradient's scale except for
    ``eps``: ``{"eps": -1}`` (the sum at ``eps`` is the mean at ``eps / B``).

    Args:
      table: a results table with a ``reduction`` column.
      exponents: the power of ``B`` that maps each rescaled hyperparameter.
      metrics: the table's metric columns to compare at every evaluation point.

    Returns:
      One row per matched pair: ``optimizer``, ``batch_size``, ``seed``,
      ``learning_rate`` (of the sum config), ``config_id_sum``,
      ``config_id_mean``, ``max_abs_gap`` and ``max_rel_gap`` (largest
      ``|sum - mean|`` and ``|sum - mean| / |mean|`` over the evaluation points
      and metrics; a point where exactly one of the two is NaN counts as
      ``inf``), ``diverged_sum`` and ``diverged_mean``. Sum configs without a
      partner are left out.
    """
    if "reduction" not in table.columns:
        raise InputError("table has no 'reduction' column: sweep with a reduction axis")
    exponents = dict(exponents or {})
    hparams = [c for c in results_lib.hyperparameter_columns(table) if c != "reduction"]
    for name in exponents:
        if name not in hparams:
            raise InputError(f"exponents key {name!r} is invalid: expected one of {hparams}")
    for name in metrics:
        if name not in table.columns:
            raise InputError(f"metric {name!r} is invalid: expected a column of the table")
    configs = table.drop_duplicates("config_id")[["config_id", "reduction", *hparams]]
    mean = configs[configs["reduction"] == "mean"].copy()
    total = configs[configs["reduction"] == "sum"].copy()
    batch = total["batch_size"].to_numpy(np.float64)
    for name in hparams:
        values = total[name].to_numpy()
        if name in exponents:
            values = values.astype(np.float64) * batch ** exponents[name]
        total[f"_k_{name}"] = [_key(v) for v in values]
        mean[f"_k_{name}"] = [_key(v) for v in mean[name].to_numpy()]
    keys = [f"_k_{name}" for name in hparams]
    pairs = total.merge(mean[["config_id", *keys]], on=keys, suffixes=("_sum", "_mean"))

    curves = table.set_index("config_id")
    rows = []
    for pair in pairs.itertuples(index=False):
        a = curves.loc[[pair.config_id_sum]].set_index("step")
        b = curves.loc[[pair.config_id_mean]].set_index("step")
        a, b = a.align(b, join="inner", axis=0)
        x = a[list(metrics)].to_numpy(np.float64)
        y = b[list(metrics)].to_numpy(np.float64)
        gap = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))
        gap = np.where(np.isnan(x) ^ np.isnan(y), np.inf, gap)
        rel = gap / np.maximum(np.abs(np.nan_to_num(y)), np.finfo(np.float64).tiny)
        rows.append(
            {
                "optimizer": pair.optimizer,
                "batch_size": pair.batch_size,
                "seed": pair.seed,
                "learning_rate": pair.learning_rate,
                "config_id_sum": pair.config_id_sum,
                "config_id_mean": pair.config_id_mean,
                "max_abs_gap": float(gap.max()) if gap.size else math.nan,
                "max_rel_gap": float(rel.max()) if rel.size else math.nan,
                "diverged_sum": bool(a["diverged"].any()),
                "diverged_mean": bool(b["diverged"].any()),
            }
        )
    columns = [
        "optimizer",
        "batch_size",
        "seed",
        "learning_rate",
        "config_id_sum",
        "config_id_mean",
        "max_abs_gap",
        "max_rel_gap",
        "diverged_sum",
        "diverged_mean",
    ]
    return pd.DataFrame(rows, columns=columns)


# ------------------------------------------------------------------ states


def _config_arrays(spec: train_lib.TrainSpec, hparams: Mapping[str, Any], seeds):
    """Stacked hyperparameters (defaults filled in) and keys for ``len(seeds)`` configs."""
    seeds = np.asarray(seeds)
    if seeds.ndim != 1 or seeds.size == 0 or not np.issubdtype(seeds.dtype, np.integer):
        raise InputError(f"seeds={seeds.tolist()!r} is invalid: expected a non-empty 1-D list of ints")
    if "batch_size" in hparams:
        raise InputError("hparams must not contain 'batch_size': it is spec.batch_size")
    defaults = train_lib.default_hparams(spec.optimizer, **dict(hparams))
    n = seeds.size
    stacked = {}
    for name, value in defaults.items():
        value = np.asarray(value, np.float32)
        if value.ndim == 0:
            value = np.full((n,), value, np.float32)
        if value.shape != (n,):
            raise InputError(
                f"hparams[{name!r}] has shape {value.shape}: expected a scalar or one value per seed ({n})"
            )
        stacked[name] = jnp.asarray(value)
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds.astype(np.uint32)))
    return stacked, keys


@functools.lru_cache(maxsize=32)
def _init_program(spec: train_lib.TrainSpec):
    dataset = train_lib.load_dataset(spec.dataset, spec.dataset_options)
    return jax.jit(jax.vmap(lambda hp, key: train_lib.init_state(spec, dataset, hp, key)))


@functools.lru_cache(maxsize=32)
def _train_program(spec: train_lib.TrainSpec):
    dataset = train_lib.load_dataset(spec.dataset, spec.dataset_options)

    def run(hp, key):
        state = train_lib.init_state(spec, dataset, hp, key)
        state, _ = train_lib.run_segment(spec, dataset, hp, state, 0, spec.steps)
        return state

    return jax.jit(jax.vmap(run))


def init_states(spec: train_lib.TrainSpec, hparams: Mapping[str, Any], seeds: Sequence[int]):
    """The initial :class:`~jaxopt_lab.train.TrainState` of each config, stacked.

    Args:
      spec: the static part of the runs.
      hparams: dynamic hyperparameters, each a scalar or one value per seed;
        missing ones take :func:`~jaxopt_lab.train.default_hparams`.
      seeds: one integer seed per config.

    Returns:
      A ``TrainState`` whose leaves have a leading config axis.
    """
    stacked, keys = _config_arrays(spec, hparams, seeds)
    return _init_program(spec)(stacked, keys)


def train_states(spec: train_lib.TrainSpec, hparams: Mapping[str, Any], seeds: Sequence[int]):
    """The final :class:`~jaxopt_lab.train.TrainState` of each config after ``spec.steps`` steps.

    The runs are the sweep's (same initialization, batch order and steps for
    the same ``(spec, hparams, seed)``), vmapped over configs in one program;
    equal to float reordering, which chaotic runs (large learning rates) amplify.

    Args:
      spec: the static part of the runs.
      hparams: dynamic hyperparameters, each a scalar or one value per seed.
      seeds: one integer seed per config.

    Returns:
      A ``TrainState`` whose leaves have a leading config axis; a config that
      diverged keeps its last finite parameters and ``diverged=True``.
    """
    stacked, keys = _config_arrays(spec, hparams, seeds)
    return _train_program(spec)(stacked, keys)


def take_states(states, index):
    """The configs ``index`` (an int array, slice or boolean mask) of stacked states."""
    return jax.tree.map(lambda a: a[index], states)


def _measure_key(spec: train_lib.TrainSpec) -> train_lib.TrainSpec:
    """The spec's dataset and model only, so measurement programs compile once across
    batch sizes and optimizers."""
    return train_lib.TrainSpec(
        dataset=spec.dataset,
        dataset_options=spec.dataset_options,
        model=spec.model,
        model_options=spec.model_options,
    )


def _model_and_data(spec: train_lib.TrainSpec):
    dataset = train_lib.load_dataset(spec.dataset, spec.dataset_options)
    return train_lib.get_model(spec, dataset), dataset


def _mean_loss(model, dataset, params, model_state, x, y):
    outputs, _ = model.apply(params, model_state, x, train=False)
    # The training loss of train.py, so measurements see the objective that was optimized.
    return jnp.mean(train_lib._per_example_loss(outputs, y, dataset.num_classes)), outputs


def _measured(states):
    """The parts of stacked states a measurement reads (not the optimizer's state)."""
    return states.params, states.model_state, states.diverged


class Evaluation(NamedTuple):
    """Whole-dataset metrics of stacked states (NumPy, one entry per config; NaN once diverged)."""

    train_loss: np.ndarray
    train_accuracy: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray


@functools.lru_cache(maxsize=32)
def _evaluate_program(key: train_lib.TrainSpec):
    model, dataset = _model_and_data(key)

    def one(params, model_state, diverged):
        out = []
        nan = jnp.full((), jnp.nan, jnp.float32)
        for x, y in ((dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)):
            loss, outputs = _mean_loss(model, dataset, params, model_state, x, y)
            if dataset.num_classes:
                acc = jnp.mean((jnp.argmax(outputs, axis=-1) == y).astype(jnp.float32))
            else:
                acc = nan
            out += [jnp.where(diverged, nan, loss), jnp.where(diverged, nan, acc)]
        return tuple(out)

    return jax.jit(jax.vmap(one))


def evaluate_states(spec: train_lib.TrainSpec, states) -> Evaluation:
    """Loss and accuracy of stacked states on the whole training and test sets.

    Batch norm runs in evaluation mode (running statistics).
    """
    values = jax.device_get(_evaluate_program(_measure_key(spec))(*_measured(states)))
    return Evaluation(*(np.asarray(v, np.float64) for v in values))


class Sharpness(NamedTuple):
    """Top Hessian eigenvalue of the training loss per config, and its power-iteration residual."""

    eigenvalue: np.ndarray
    residual: np.ndarray


@functools.lru_cache(maxsize=32)
def _sharpness_program(key: train_lib.TrainSpec, num_iters: int):
    model, dataset = _model_and_data(key)

    def one(params, model_state, diverged, vector_key):
        def loss(p):
            return _mean_loss(model, dataset, p, model_state, dataset.x_train, dataset.y_train)[0]

        eig = metrics_lib.hessian_top_eigenvalue(loss, params, num_iters=num_iters, key=vector_key)
        nan = jnp.full((), jnp.nan, eig.eigenvalue.dtype)
        return jnp.where(diverged, nan, eig.eigenvalue), jnp.where(diverged, nan, eig.residual)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None)))


def sharpness(spec: train_lib.TrainSpec, states, *, num_iters: int = 30, seed: int = 0) -> Sharpness:
    """Sharpness ``λ_max`` of the full training loss at each stacked state's parameters.

    Power iteration on Hessian-vector products
    (:func:`jaxopt_lab.metrics.hessian_top_eigenvalue`) of the mean loss over
    the whole training set, batch norm in evaluation mode. Power iteration
    finds the eigenvalue of largest magnitude, which is ``λ_max`` near a
    minimum, where the positive end of the spectrum dominates.

    Args:
      spec: the runs' spec (its dataset and model are used).
      states: stacked ``TrainState`` (e.g. from :func:`train_states`).
      num_iters: power iterations.
      seed: seed of the starting vector.

    Returns:
      A :class:`Sharpness` of NumPy arrays, one entry per config (NaN once diverged).

    References:
      Keskar, Mudigere, Nocedal, Smelyanskiy and Tang, *On Large-Batch Training
      for Deep Learning: Generalization Gap and Sharp Minima*, ICLR 2017
      (arXiv:1609.04836).
    """
    if isinstance(num_iters, bool) or not isinstance(num_iters, (int, np.integer)) or num_iters < 1:
        raise InputError(f"num_iters={num_iters!r} is invalid: expected a positive integer")
    program = _sharpness_program(_measure_key(spec), int(num_iters))
    eig, res = program(*_measured(states), jax.random.key(seed))
    return Sharpness(np.asarray(eig, np.float64), np.asarray(res, np.float64))


@functools.lru_cache(maxsize=32)
def _noise_program(key: train_lib.TrainSpec, chunk_size: int):
    model, dataset = _model_and_data(key)

    def one(args):
        params, model_state, diverged = args

        def batch_loss(p, batch):
            return _mean_loss(model, dataset, p, model_state, *batch)[0]

        ns = metrics_lib.noise_scale(
            metrics_lib.example_loss(batch_loss),
            params,
            (dataset.x_train, dataset.y_train),
            chunk_size=chunk_size,
        )
        return jax.tree.map(lambda v: jnp.where(diverged, jnp.full((), jnp.nan, v.dtype), v), ns)

    # lax.map, not vmap: per-example gradients of every config at once need not fit.
    return jax.jit(lambda *states: jax.lax.map(one, states))


def noise_scales(spec: train_lib.TrainSpec, states, *, chunk_size: int = 500) -> metrics_lib.NoiseScale:
    """Simple gradient noise scale ``B_simple = tr(Σ) / |G|²`` of minibatches of the training set.

    From the per-example gradients of the training loss at each stacked
    state's parameters over the *whole* training set
    (:func:`jaxopt_lab.metrics.noise_scale`, ``chunk_size`` examples at a
    time). Minibatches are drawn from the training set, so it is the
    population: ``G`` is the full-batch gradient ``ḡ`` itself and ``Σ`` the
    population covariance of its ``n`` per-example gradients::

      tr(Σ) = Σ_i |g_i - ḡ|² / n,   |G|² = |ḡ|²,   B_simple = tr(Σ) / |G|²

    (``metrics.noise_scale`` treats its examples as a sample of a larger
    population instead: ``n - 1`` and ``|ḡ|² - tr(Σ)/n``, which can go negative
    when the full-batch gradient is small).

    Returns:
      A :class:`~jaxopt_lab.metrics.NoiseScale` of NumPy arrays, one entry per
      config (NaN once diverged).

    References:
      McCandlish et al., *An Empirical Model of Large-Batch Training*, 2018
      (arXiv:1812.06162), section 2.2.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise InputError(f"chunk_size={chunk_size!r} is invalid: expected a positive integer")
    key = _measure_key(spec)
    num_examples = int(_model_and_data(key)[1].x_train.shape[0])
    out = jax.device_get(_noise_program(key, int(chunk_size))(*_measured(states)))
    sample = metrics_lib.NoiseScale(*(np.asarray(v, np.float64) for v in out))
    trace_cov = sample.trace_cov * (num_examples - 1) / num_examples
    grad_sq_norm = sample.grad_sq_norm + sample.trace_cov / num_examples
    return metrics_lib.NoiseScale(trace_cov / grad_sq_norm, trace_cov, grad_sq_norm)


# ------------------------------------------------------------------ steps to target


def geometric_steps(max_steps: int, growth: float = 1.05) -> np.ndarray:
    """Evaluation steps ``1, 2, …`` spaced by at most a factor ``growth``, ending at ``max_steps``.

    Each point is ``max(previous + 1, floor(previous · growth))``, so the first
    step at which a target is reached is resolved to within ``growth`` relative
    (exactly, while consecutive steps are evaluated).
    """
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise InputError(f"max_steps={max_steps!r} is invalid: expected a positive integer")
    if not (isinstance(growth, (int, float, np.number)) and growth > 1):
        raise InputError(f"growth={growth!r} is invalid: expected a number > 1")
    return np.asarray(train_lib.eval_steps(int(max_steps), 1, growth), np.int64)


class TargetRuns(NamedTuple):
    """What :func:`run_to_target` returns.

    Attributes:
      eval_steps: ``(E,)`` the steps at which the training loss was evaluated.
      train_loss: ``(configs, E)`` loss on the whole training set at those steps
        (NaN once diverged).
      steps: ``(configs,)`` the first evaluated step with ``train_loss <=
        target``; NaN where the target was not reached before the stop.
      stop_step: the step at which training stopped.
      states: the stacked ``TrainState`` at ``stop_step``.
    """

    eval_steps: np.ndarray
    train_loss: np.ndarray
    steps: np.ndarray
    stop_step: int
    states: Any


@functools.lru_cache(maxsize=32)
def _target_program(spec: train_lib.TrainSpec):
    model, dataset = _model_and_data(spec)

    def segment(hp, state, start, num_steps, stop_step):
        state, _ = train_lib.run_segment(spec, dataset, hp, state, start, num_steps, stop_step)
        loss = _mean_loss(model, dataset, state.params, state.model_state, dataset.x_train, dataset.y_train)[
            0
        ]
        return state, jnp.where(state.diverged, jnp.full((), jnp.nan, loss.dtype), loss)

    return jax.jit(jax.vmap(segment, in_axes=(0, 0, None, None, 0)), donate_argnums=(1,))


def run_to_target(
    spec: train_lib.TrainSpec,
    hparams: Mapping[str, Any],
    seeds: Sequence[int],
    *,
    target: float,
    max_steps: int,
    growth: float = 1.05,
    stop: str = "first",
    groups: Sequence[int] | None = None,
) -> TargetRuns:
    """Train configs until the whole-training-set loss reaches ``target``.

    The loss is evaluated on the whole training set (batch norm in evaluation
    mode) at :func:`geometric_steps`, not the minibatch average of the sweep
    table, so the step count is that of the objective and is resolved to
    ``growth`` relative. A config is frozen at the evaluation where it reaches
    the target (its later steps change nothing), so its returned state is its
    state at the target.

    Configs are gathered in ``groups`` (e.g. the seeds of one learning rate)
    whose score is the mean of their configs' steps. With ``stop="first"``
    training stops as soon as the best group is known: one whose configs have
    all reached the target with a mean no larger than any other group can
    still get (a config not there yet counts the current step, and will need
    more). With ``stop="all"`` it stops when every config has reached the
    target or diverged. Either way it stops at ``max_steps``.

    Args:
      spec: the static part of the runs (``spec.steps`` is ignored).
      hparams: dynamic hyperparameters, each a scalar or one value per seed.
      seeds: one integer seed per config.
      target: the training-loss target.
      max_steps: the step budget.
      growth: spacing factor of the evaluation steps.
      stop: ``"first"`` or ``"all"``.
      groups: a group label per config; ``None`` puts each config in its own group.

    Returns:
      A :class:`TargetRuns` (``train_loss`` stays at its value at the target
      once a config is frozen).
    """
    if stop not in STOP_RULES:
        raise InputError(f"stop={stop!r} is invalid: expected one of {', '.join(map(repr, STOP_RULES))}")
    if not (isinstance(target, (int, float, np.number)) and math.isfinite(target)):
        raise InputError(f"target={target!r} is invalid: expected a finite number")
    num_configs = len(seeds)
    groups = np.arange(num_configs) if groups is None else np.asarray(groups)
    if groups.shape != (num_configs,):
        raise InputError(f"groups has shape {groups.shape}: expected one label per seed ({num_configs})")
    points = geometric_steps(max_steps, growth)
    # Budgets are traced arguments, not spec.steps, so every budget shares one program.
    spec = dataclasses.replace(spec, steps=1, eval_every=1)
    stacked, keys = _config_arrays(spec, hparams, seeds)
    state = _init_program(spec)(stacked, keys)
    program = _target_program(spec)
    stops = np.full(num_configs, max_steps, np.int32)
    first = np.full(num_configs, np.nan)
    losses, start = [], 0
    for end in points:
        state, loss = program(stacked, state, np.int32(start), np.int32(end - start), stops)
        loss = np.asarray(loss, np.float64)
        losses.append(loss)
        start = int(end)
        now = np.isnan(first) & (loss <= target)
        first[now], stops[now] = end, end
        if _target_done(stop, groups, first, np.isnan(loss) & np.isnan(first), end):
            break
    train_loss = np.stack(losses, axis=1)
    eval_steps = points[: train_loss.shape[1]]
    steps = metrics_lib.steps_to_target(eval_steps, train_loss, target)
    return TargetRuns(eval_steps, train_loss, np.asarray(steps, np.float64), start, state)


def _target_done(stop: str, groups: np.ndarray, first: np.ndarray, dead: np.ndarray, step: int) -> bool:
    """Whether :func:`run_to_target` may stop after evaluating ``step``."""
    reached = ~np.isnan(first)
    if stop == "all" or (reached | dead).all():
        return bool((reached | dead).all())
    best, bound = math.inf, math.inf
    for label in np.unique(groups):
        member = groups == label
        if dead[member].any():
            continue  # a diverged config: the group never scores
        if reached[member].all():
            best = min(best, float(first[member].mean()))
        else:
            bound = min(bound, float(np.where(reached[member], first[member], step).mean()))
    return best <= bound


def steps_to_target_table(
    spec: train_lib.TrainSpec,
    batch_sizes: Sequence[int],
    *,
    lr_start: float,
    target: float,
    max_steps: int,
    max_epochs: float | None = None,
    per_decade: int = 4,
    window: tuple[int, int] = (-1, 3),
    max_shifts: int = 3,
    seeds: Sequence[int] = (0,),
    growth: float = 1.05,
    noise_scale: bool = False,
    hparams: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Steps to a training-loss target per batch size, searching the learning rate.

    Learning rates lie on the grid ``10 ** (k / per_decade)``. Batch sizes are
    visited in increasing order; the learning rates tried at a batch size are
    the grid points at offsets ``window[0] .. window[1]`` from the best one of
    the previous batch size (from ``lr_start`` for the first). While the best
    is at an edge of the points tried, the window is shifted past that edge
    (at most ``max_shifts`` times; :func:`best_steps` reports a best that is
    still at an edge). Each window is one :func:`run_to_target` over its
    learning rates times ``seeds``, grouped by learning rate, with
    ``stop="first"``: the best learning rate's steps are exact (to
    ``growth``), the others' only known to be larger where they are NaN. A
    shifted window gets the best steps so far as its budget (it only matters
    if it does better).

    Args:
      spec: the static part of the runs (``batch_size`` is replaced).
      batch_sizes: the batch sizes.
      lr_start: the centre of the first window (rounded to the grid).
      target: the training-loss target.
      max_steps: the step budget per window.
      max_epochs: an optional budget in epochs, ``max_epochs * n / B`` steps,
        whichever of the two is smaller.
      per_decade: grid points per factor of ten in learning rate.
      window: offsets of the first and last grid points tried around the centre.
      max_shifts: how many times a window may be shifted.
      seeds: the seeds run at every learning rate; a learning rate scores the
        mean of their steps.
      growth: spacing factor of the evaluation steps.
      noise_scale: also measure ``B_simple`` (:func:`noise_scales`) where the
        best learning rate's runs reached the target.
      hparams: other dynamic hyperparameters (scalars).

    Returns:
      One row per (batch size, learning rate, seed) tried: ``optimizer``,
      ``batch_size``, ``learning_rate``, ``seed``, ``steps_to_target``,
      ``examples_to_target``, ``stop_step``, ``train_loss_at_stop``,
      ``diverged``, and ``b_simple_at_target`` (best learning rate only) when
      ``noise_scale``.

    References:
      Shallue et al., *Measuring the Effects of Data Parallelism on Neural
      Network Training*, JMLR 2019 (arXiv:1811.03600): every batch size at its
      own best learning rate.
    """
    if not (isinstance(lr_start, (int, float, np.number)) and lr_start > 0):
        raise InputError(f"lr_start={lr_start!r} is invalid: expected a positive number")
    if len(window) != 2 or not int(window[0]) <= int(window[1]):
        raise InputError(f"window={window!r} is invalid: expected (first, last) offsets with first <= last")
    if isinstance(max_shifts, bool) or not isinstance(max_shifts, (int, np.integer)) or max_shifts < 0:
        raise InputError(f"max_shifts={max_shifts!r} is invalid: expected a non-negative integer")
    seeds = [int(v) for v in seeds]
    if not seeds:
        raise InputError("seeds=[] is invalid: expected at least one seed")
    dataset = train_lib.load_dataset(spec.dataset, spec.dataset_options)
    num_examples = int(dataset.x_train.shape[0])
    width = int(window[1]) - int(window[0]) + 1
    centre = round(math.log10(lr_start) * per_decade)
    frames = []
    for batch_size in sorted(int(b) for b in batch_sizes):
        budget = int(max_steps)
        if max_epochs is not None:
            budget = min(budget, max(1, math.ceil(max_epochs * num_examples / batch_size)))
        b_spec = dataclasses.replace(spec, batch_size=batch_size)
        tried: dict[int, dict] = {}
        best, best_state = None, None
        ks = centre + np.arange(int(window[0]), int(window[1]) + 1)
        for _ in range(max_shifts + 1):
            # A group beats the best mean only if its slowest seed needs fewer than seeds x that mean.
            cap = budget if best is None else int(min(budget, math.ceil(len(seeds) * tried[best]["score"])))
            k_per_config = np.repeat(ks, len(seeds))
            runs = run_to_target(
                b_spec,
                {**dict(hparams or {}), "learning_rate": 10.0 ** (k_per_config / per_decade)},
                seeds * width,
                target=target,
                max_steps=cap,
                growth=growth,
                groups=k_per_config,
            )
            diverged = np.asarray(runs.states.diverged, bool)
            for k in ks:
                rows = k_per_config == k
                steps = runs.steps[rows]
                tried[int(k)] = {
                    "steps_to_target": steps,
                    "stop_step": runs.stop_step,
                    "train_loss_at_stop": runs.train_loss[rows, -1],
                    "diverged": diverged[rows],
                    "score": float(steps.mean()) if np.isfinite(steps).all() else math.nan,
                }
            scored = [k for k, row in tried.items() if np.isfinite(row["score"])]
            if scored:
                winner = min(scored, key=lambda k: (tried[k]["score"], k))
                if winner in ks:
                    best_state = take_states(runs.states, np.flatnonzero(k_per_config == winner))
                best = winner
            ordered = sorted(tried)
            if best is None and tried[ordered[-1]]["diverged"].any():
                break  # too slow below, diverging above: nothing on this grid reaches the target
            if best is None or best == ordered[-1]:
                ks = ordered[-1] + 1 + np.arange(width)
            elif best == ordered[0]:
                ks = ordered[0] - width + np.arange(width)
            else:
                break
        ordered = sorted(tried)
        frame = pd.DataFrame(
            {
                "optimizer": spec.optimizer,
                "batch_size": batch_size,
                "learning_rate": np.repeat(10.0 ** (np.asarray(ordered) / per_decade), len(seeds)),
                "seed": seeds * len(ordered),
                **{
                    name: np.concatenate([np.broadcast_to(tried[k][name], (len(seeds),)) for k in ordered])
                    for name in ("steps_to_target", "stop_step", "train_loss_at_stop", "diverged")
                },
            }
        )
        frame.insert(5, "examples_to_target", frame["steps_to_target"] * batch_size)
        if noise_scale:
            b_simple = np.full(len(frame), np.nan)
            if best is not None:
                at = ordered.index(best) * len(seeds)
                b_simple[at : at + len(seeds)] = noise_scales(b_spec, best_state).b_simple
            frame["b_simple_at_target"] = b_simple
        frames.append(frame)
        if best is not None:
            centre = best
    return pd.concat(frames, ignore_index=True)


def best_steps(table: pd.DataFrame, by: Sequence[str] = ("optimizer", "batch_size")) -> pd.DataFrame:
    """The fewest steps to target per group, at its best learning rate, averaged over seeds.

    A learning rate scores the mean of its seeds' ``steps_to_target`` (NaN if
    any seed did not reach the target); other numeric columns are averaged
    over seeds too.

    Args:
      table: rows with ``by`` columns, ``learning_rate``, ``seed`` and
        ``steps_to_target`` (as :func:`steps_to_target_table` returns).
      by: the grouping columns.

    Returns:
      One row per group: the winning learning rate's seed-averaged row (ties go
      to the smaller learning rate), plus ``num_seeds``, ``num_lrs``,
      ``num_reached`` (learning rates whose seeds all reached the target) and
      ``lr_at_edge`` (the winner is the smallest or largest learning rate
      tried). Groups where no learning rate reached the target have NaN steps
      and learning rate.
    """
    by = list(by)
    missing = [c for c in [*by, "learning_rate", "seed", "steps_to_target"] if c not in table.columns]
    if missing:
        raise InputError(f"table is missing column(s) {missing}")
    numeric = [c for c in table.select_dtypes("number").columns if c not in [*by, "learning_rate", "seed"]]
    cells = (
        table.groupby([*by, "learning_rate"], sort=True)
        .agg(
            **{c: (c, lambda v: v.mean(skipna=False)) for c in numeric},
            num_seeds=("seed", "nunique"),
        )
        .reset_index()
    )
    rows = []
    for _, group in cells.groupby(by, sort=True):
        ranked = group.sort_values(["steps_to_target", "learning_rate"], na_position="last", kind="stable")
        row = ranked.iloc[0].to_dict()
        lrs = group["learning_rate"]
        found = bool(np.isfinite(row["steps_to_target"]))
        if not found:
            row["learning_rate"] = math.nan
        row["num_lrs"] = int(lrs.nunique())
        row["num_reached"] = int(np.isfinite(group["steps_to_target"].to_numpy(np.float64)).sum())
        row["lr_at_edge"] = bool(
            found and lrs.nunique() > 1 and row["learning_rate"] in (lrs.min(), lrs.max())
        )
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


# ------------------------------------------------------------------ critical batch size


class CriticalBatchFit(NamedTuple):
    """The fit of ``S(B) = S_min (1 + B_crit / B)``.

    Attributes:
      s_min: steps to target with an infinite batch.
      b_crit: the critical batch size, where ``S = 2 S_min`` and ``E = 2 E_min``.
      e_min: examples to target with a batch of one, ``S_min · B_crit``.
      rms_log_residual: root mean square of ``log S - log S_fit``.
    """

    s_min: float
    b_crit: float
    e_min: float
    rms_log_residual: float


def _profile(log_b_crit: float, batch: np.ndarray, log_steps: np.ndarray):
    """Best ``log S_min`` for a given ``B_crit`` and the squared residual it leaves."""
    shape = np.log1p(np.exp(log_b_crit) / batch)
    log_s_min = np.mean(log_steps - shape)
    return log_s_min, float(np.sum(np.square(log_steps - shape - log_s_min)))


def fit_critical_batch_size(batch_sizes, steps) -> CriticalBatchFit:
    """Fit ``S(B) = S_min (1 + B_crit / B)`` to steps-to-target by least squares in ``log S``.

    Equivalently ``E(B) = E_min (1 + B / B_crit)`` in examples, ``E_min = S_min
    B_crit``. Relative errors are what matter across batch sizes, so the fit
    minimizes ``Σ (log S_i - log S_min - log(1 + B_crit / B_i))²``: for a fixed
    ``B_crit`` the best ``log S_min`` is the mean residual, and ``log B_crit``
    is found by a grid search refined by golden-section search, within
    ``[min B / 10⁴, max B · 10⁴]``.

    Args:
      batch_sizes: batch sizes, at least two distinct ones.
      steps: steps to target at each batch size; non-finite entries are ignored.

    Returns:
      A :class:`CriticalBatchFit`.

    References:
      McCandlish et al., *An Empirical Model of Large-Batch Training*, 2018
      (arXiv:1812.06162), equation 2.11.
    """
    batch = np.asarray(batch_sizes, np.float64)
    steps = np.asarray(steps, np.float64)
    if batch.shape != steps.shape or batch.ndim != 1:
        raise InputError(
            f"batch_sizes and steps must be 1-D of the same length, got shapes {batch.shape} "
            f"and {steps.shape}"
        )
    if np.any(~(batch > 0)):
        raise InputError(f"batch_sizes={batch.tolist()} is invalid: expected positive numbers")
    ok = np.isfinite(steps) & (steps > 0)
    batch, log_steps = batch[ok], np.log(steps[ok])
    if np.unique(batch).size < 2:
        raise InputError(
            f"need finite positive steps at two distinct batch sizes or more, got {int(ok.sum())} point(s)"
        )
    lo, hi = math.log(batch.min()) - 4 * math.log(10), math.log(batch.max()) + 4 * math.log(10)
    grid = np.linspace(lo, hi, 801)
    losses = [_profile(g, batch, log_steps)[1] for g in grid]
    i = int(np.argmin(losses))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(100):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if _profile(c, batch, log_steps)[1] <= _profile(d, batch, log_steps)[1]:
            b = d
        else:
            a = c
    log_b_crit = (a + b) / 2
    log_s_min, sq = _profile(log_b_crit, batch, log_steps)
    s_min, b_crit = math.exp(log_s_min), math.exp(log_b_crit)
    return CriticalBatchFit(s_min, b_crit, s_min * b_crit, math.sqrt(sq / batch.size))
