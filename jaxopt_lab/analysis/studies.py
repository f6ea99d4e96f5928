"""Studies on top of the sweep engine: per-batch-size sweeps, reduction pairs, log grids and slopes.

The sweep engine (:mod:`jaxopt_lab.engine.sweep`) returns a table of metrics; the
questions asked of it by the experiments need a few more pieces, each a small
function here:

* **Per-batch-size sweeps** (:func:`sweep_per_batch_size`): one sweep per batch
  size, each with its own grid (e.g. a learning-rate grid that moves with the
  batch size) and its own evaluation interval, concatenated into one table.
* **Reduction pairs** (:func:`rescaled_gaps`): the distance between the curves
  of a ``reduction="sum"`` config and the ``"mean"`` config that should follow
  the same trajectory (SGD on the sum at ``lr`` is SGD on the mean at ``lr·B``).
* **Steps to a target per batch size** (:func:`steps_to_target_per_batch_size`):
  Shallue et al.'s measurement, each batch size at its own best learning rate, found by
  windows of sweeps (:func:`shift_window`).

The best setting of a group is :func:`jaxopt_lab.analysis.tables.best_settings`, and
the critical batch size :mod:`jaxopt_lab.analysis.critical_batch`.

References:
  McCandlish, Kaplan, Amodei and the OpenAI Dota Team, *An Empirical Model of
  Large-Batch Training*, 2018 (arXiv:1812.06162).
  Shallue, Lee, Antognini, Sohl-Dickstein, Frostig and Dahl, *Measuring the
  Effects of Data Parallelism on Neural Network Training*, JMLR 2019
  (arXiv:1811.03600).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from jaxopt_lab.analysis import tables as tables_lib
from jaxopt_lab.engine import sweep as sweep_lib
from jaxopt_lab.engine import train as train_lib
from jaxopt_lab.errors import InputError

__all__ = [
    "log_grid",
    "log_slope",
    "sweep_per_batch_size",
    "concat_tables",
    "rescaled_gaps",
    "shift_window",
    "steps_to_target_per_batch_size",
]

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
    axes: Mapping[str, Sequence | Callable[[int], Sequence]],
    *,
    epochs: float | None = None,
    evals_per_epoch: int | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """One sweep per batch size, each with its own grid, as one results table.

    The engine's :class:`~jaxopt_lab.engine.grid.Grid` is a cartesian product, so a
    learning-rate grid that moves with the batch size (``lr_sum = lr_mean / B``)
    cannot be one grid. Under the ``bucket`` strategy every batch size is a
    compiled group anyway, so running them one sweep at a time costs no extra
    compile. Config ids are renumbered to stay unique.

    Args:
      spec: the static part of every run (its ``batch_size`` is replaced).
      batch_sizes: the batch sizes.
      axes: grid axes other than ``batch_size`` (e.g. ``learning_rate``,
        ``seed``, ``reduction``, ``eps``); a value may be a function of the batch
        size returning the axis's values (``{"learning_rate": lambda b: lrs / b}``).
      epochs: a budget in epochs (``epochs * (n // B)`` steps) instead of ``spec.steps``.
      evals_per_epoch: evaluation points per epoch (``eval_every = max(1,
        (n // B) // evals_per_epoch)``); ``None`` keeps ``spec.eval_every``.
      chunk_size: configs per compiled call, forwarded to the sweep.
      progress: show the sweeps' progress bars.

    Returns:
      A results table (see :mod:`jaxopt_lab.analysis.tables`); axes missing from some
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
        grid_axes = {k: v(batch_size) if callable(v) else v for k, v in axes.items()}
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
    metric_columns = [c for c in tables_lib.METRIC_COLUMNS if c in table.columns]
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
    hparams = [c for c in tables_lib.hyperparameter_columns(table) if c != "reduction"]
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


# ------------------------------------------------------------------ learning-rate windows


def shift_window(
    run: Callable[[np.ndarray], pd.DataFrame],
    ks,
    metric: str,
    *,
    max_shifts: int,
    hparams: Sequence[str] | None = None,
    larger_is_better: bool | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """A window of grid points, shifted while its best setting is at its edge.

    The search of a learning rate per batch size (Shallue et al., section 3.5):
    ``run(ks)`` returns one row per config (:func:`~jaxopt_lab.analysis.tables.summary`
    rows) with a column ``k``, the grid index of each config's learning rate (e.g.
    ``round(4 * log10(lr))`` on a grid of 4 per decade). After each window the best
    setting of all rows so far is :func:`~jaxopt_lab.analysis.tables.best_settings`'s on
    ``metric``. At the largest ``k`` tried, or when no setting qualifies, the next window
    is the ``len(ks)`` points above; at the smallest, those below; inside, the search
    ends. It also ends when no setting qualifies and the largest ``k`` tried diverged
    (too slow below, diverging above), and after ``max_shifts`` shifts.

    Returns:
      ``(rows, winner)``: every row run, with a column ``best`` that marks the winner's
      ``k``, and the winner (a row of ``best_settings``; its ``learning_rate`` is NaN
      when no setting qualified).
    """
    ks = np.asarray(ks)
    width, tried = len(ks), []
    for _ in range(max_shifts + 1):
        tried.append(run(ks))
        rows = pd.concat(tried, ignore_index=True)
        winner = tables_lib.best_settings(rows, (), metric, larger_is_better, hparams=hparams).iloc[0]
        found = not np.isnan(winner["learning_rate"])
        best = rows.loc[rows["learning_rate"] == winner["learning_rate"], "k"].iloc[0] if found else None
        lowest, highest = rows["k"].min(), rows["k"].max()
        if not found and rows.loc[rows["k"] == highest, "diverged"].any():
            break
        if not found or best == highest:
            ks = highest + 1 + np.arange(width)
        elif best == lowest:
            ks = lowest - width + np.arange(width)
        else:
            break
    return rows.assign(best=rows["k"] == best), winner


def steps_to_target_per_batch_size(
    spec: train_lib.TrainSpec | Mapping,
    batch_sizes: Sequence[int],
    learning_rate: float,
    *,
    max_steps: int,
    seeds: Sequence[int] = (0,),
    per_decade: int = 4,
    window: tuple[int, int] = (-1, 3),
    max_shifts: int = 3,
    budget_growth: float = 1.5,
) -> pd.DataFrame:
    """Steps to ``spec``'s target at each batch size, each at its own best learning rate.

    Shallue et al.'s measurement (section 3.5): the learning rates are the grid
    ``10 ** (k / per_decade)``; each batch size searches a window of ``k``
    (``window`` around its centre, shifted by :func:`shift_window` while the best is at
    an edge), one sweep per window over the learning rates and ``seeds``, every config
    stopping at the target. The first batch size's window is centred on
    ``learning_rate``, each later one's on the previous best. The step budget is
    ``max_steps`` at the first batch size and after it ``budget_growth`` times the
    previous best's steps (capped at ``max_steps``): steps to a target fall with the
    batch size at the best learning rate, so a slower config cannot be the best. The
    best setting is :func:`~jaxopt_lab.analysis.tables.best_settings`'s on
    ``steps_to_target``: mean over seeds, a seed that missed the target disqualifies.

    Args:
      spec: the static part of every run (a :class:`~jaxopt_lab.engine.spec.TrainSpec`
        or a dict of its fields), with a ``target``; its ``batch_size`` and ``steps``
        are replaced.
      batch_sizes: in the order searched (increasing, for the budget rule).
      learning_rate: the first window's centre.
      max_steps: the step budget at the first batch size, and the cap after it.
      seeds: the seeds of every setting (its steps are their mean).
      per_decade: grid points per decade of learning rate.
      window: the first and last offset of a window's ``k`` from its centre.
      max_shifts: shifts of a batch size's window at most (:func:`shift_window`).
      budget_growth: the next batch size's budget over the best's steps.

    Returns:
      One row per config run (:func:`~jaxopt_lab.analysis.tables.summary`'s), with
      ``k``, its grid index, and ``best``, which marks its batch size's winner.
    """
    is_spec = isinstance(spec, train_lib.TrainSpec)
    if (spec.target if is_spec else spec.get("target")) is None:
        raise InputError("spec's target=None is invalid: expected a Target, which every config stops at")
    if len(batch_sizes) == 0:
        raise InputError("batch_sizes=[] is invalid: expected at least one batch size")
    hparams = ["optimizer", "batch_size", "learning_rate", "seed"]
    frames, centre, budget = [], round(math.log10(learning_rate) * per_decade), max_steps

    def run(batch_size, steps, ks):
        grid = sweep_lib.Grid(learning_rate=[float(10.0 ** (k / per_decade)) for k in ks], seed=list(seeds))
        changes = {"batch_size": batch_size, "steps": int(steps)}
        at_b = dataclasses.replace(spec, **changes) if is_spec else {**spec, **changes}
        runs = sweep_lib.sweep(at_b, grid, progress=False).summary()
        runs["k"] = np.round(np.log10(runs["learning_rate"]) * per_decade).astype(int)
        return runs

    for b in batch_sizes:
        runs, winner = shift_window(
            lambda ks, b=b, budget=budget: run(b, budget, ks),
            centre + np.arange(window[0], window[1] + 1),
            "steps_to_target",
            max_shifts=max_shifts,
            hparams=hparams,
        )
        frames.append(runs)
        if runs["best"].any():
            centre = runs["k"][runs["best"]].iloc[0]
            budget = min(max_steps, math.ceil(budget_growth * winner["steps_to_target_mean"]))
    return pd.concat(frames, ignore_index=True)
