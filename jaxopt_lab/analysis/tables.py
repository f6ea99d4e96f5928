"""The results table of a sweep and its summaries: one row per config, the best settings.

A sweep produces a *tidy* table: one row per (config, evaluation point), with
columns ``config_id``, the config's hyperparameters (``optimizer``,
``learning_rate``, ``batch_size``, ``seed`` and any other swept axis), then the
metrics :data:`METRIC_COLUMNS`, the target's :data:`TARGET_COLUMNS` and the
measurements' columns. After a config diverges its later metrics are NaN and
``diverged`` is True. :func:`summary` makes one row per config of it, and
:func:`best_settings` is the one rule that picks the best setting of a group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from jaxopt_lab.errors import InputError

__all__ = [
    "METRIC_COLUMNS",
    "TARGET_COLUMNS",
    "SUMMARY_METRICS",
    "check_table",
    "hyperparameter_columns",
    "measured_columns",
    "summary",
    "setting_means",
    "best_settings",
    "best_learning_rates",
]

METRIC_COLUMNS = (
    "step",
    "examples_seen",
    "train_loss",
    "test_loss",
    "test_accuracy",
    "diverged",
    "applied_lr",  # the learning rate of the last step before the point (schedule, lr_rule)
    "val_loss",  # these two only for a dataset with a validation set
    "val_accuracy",
)
# Per config, with a target (TrainSpec.target): the first evaluation point where it held.
TARGET_COLUMNS = ("steps_to_target", "examples_to_target")
# A table written before `applied_lr` existed still reads: these are the ones it must have.
_REQUIRED_METRICS = METRIC_COLUMNS[:6]
# Per-config metrics of `summary` that `best_learning_rates` can rank by, and
# whether larger is better.
SUMMARY_METRICS = {
    "final_train_loss": False,
    "final_test_loss": False,
    "final_test_accuracy": True,
    "best_test_loss": False,
    "best_test_accuracy": True,
    # with a validation set:
    "best_val_loss": False,
    "best_val_accuracy": True,
    "test_loss_at_best_val": False,
    "test_accuracy_at_best_val": True,
    # with a target:
    "steps_to_target": False,
    "examples_to_target": False,
}
_REQUIRED_COLUMNS = ("config_id", "optimizer", "learning_rate", "batch_size", "seed")


def _choices(names) -> str:
    return ", ".join(map(repr, names))


def check_table(table: pd.DataFrame) -> None:
    """Refuse what is not a results table, in one line naming what is missing."""
    if not isinstance(table, pd.DataFrame):
        raise InputError(f"table of type {type(table).__name__} is invalid: expected a DataFrame")
    missing = [c for c in _REQUIRED_COLUMNS + _REQUIRED_METRICS if c not in table.columns]
    if missing:
        raise InputError(
            f"table is missing column(s) {_choices(missing)}: a results table has "
            f"{_choices(_REQUIRED_COLUMNS)}, its other hyperparameters, and "
            f"{_choices(_REQUIRED_METRICS)}"
        )
    if table.empty:
        raise InputError("table is empty: expected at least one row")


def hyperparameter_columns(table: pd.DataFrame) -> list[str]:
    """The table's hyperparameter columns, in table order.

    They are the columns before ``step`` that are neither ``config_id`` nor in
    :data:`METRIC_COLUMNS` (a sweep writes its hyperparameters first, then the metrics).
    """
    columns = list(table.columns)
    before = columns[: columns.index("step")] if "step" in columns else columns
    return [c for c in before if c != "config_id" and c not in METRIC_COLUMNS + TARGET_COLUMNS]


def measured_columns(table: pd.DataFrame) -> list[str]:
    """The columns of the table's measurements (``TrainSpec.measure``), in table order:
    those after ``step`` that are neither :data:`METRIC_COLUMNS` nor :data:`TARGET_COLUMNS`."""
    columns = list(table.columns)
    after = columns[columns.index("step") + 1 :] if "step" in columns else []
    return [c for c in after if c not in METRIC_COLUMNS + TARGET_COLUMNS]


# --------------------------------------------------------------------------- summaries


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per config: its hyperparameters, its final and its best metrics.

    Columns: ``config_id``, the hyperparameter columns, then

    - ``final_step`` and ``final_train_loss``, ``final_test_loss``,
      ``final_test_accuracy``: the last evaluation point (NaN once diverged);
    - ``best_test_loss`` = min over evaluation points, ``best_test_accuracy`` =
      max over evaluation points, both ignoring NaN;
    - ``best_step``: the step of ``best_test_loss`` (the earliest on ties;
      missing when every test loss is NaN);
    - with a validation set (``val_loss`` in the table): ``best_val_loss``,
      ``best_val_accuracy``, ``best_val_step`` (the step of ``best_val_loss``),
      and ``test_loss_at_best_val``, ``test_accuracy_at_best_val``: the test
      metrics at that step, the ones to report when the point is chosen on
      validation data (the tuning playbook);
    - with measurements (``TrainSpec.measure``): ``final_<column>`` of each, at the
      last evaluation point;
    - with a target: ``steps_to_target`` and ``examples_to_target`` (NaN for a
      config that did not reach it);
    - ``diverged``: whether the config diverged at any point.

    Args:
      table: a results table (one row per config and evaluation point).

    Returns:
      A DataFrame sorted by ``config_id``, with a fresh index.
    """
    check_table(table)
    hparams = hyperparameter_columns(table)
    rows = table.sort_values(["config_id", "step"], kind="stable")
    by_config = rows.groupby("config_id", sort=True)
    out = rows.drop_duplicates("config_id")[["config_id", *hparams]].set_index("config_id")
    last = by_config.tail(1).set_index("config_id")
    out["final_step"] = last["step"].astype(np.int64)
    for name in ("train_loss", "test_loss", "test_accuracy"):
        out[f"final_{name}"] = last[name].astype(np.float64)
    out["best_test_loss"] = by_config["test_loss"].min().astype(np.float64)
    out["best_test_accuracy"] = by_config["test_accuracy"].max().astype(np.float64)
    out["best_step"] = _at_best(rows, "test_loss", "step").reindex(out.index).astype("Int64")
    if "val_loss" in rows:
        out["best_val_loss"] = by_config["val_loss"].min().astype(np.float64)
        out["best_val_accuracy"] = by_config["val_accuracy"].max().astype(np.float64)
        out["best_val_step"] = _at_best(rows, "val_loss", "step").reindex(out.index).astype("Int64")
        for name in ("test_loss", "test_accuracy"):
            out[f"{name}_at_best_val"] = (
                _at_best(rows, "val_loss", name).reindex(out.index).astype(np.float64)
            )
    for name in measured_columns(table):
        out[f"final_{name}"] = last[name].astype(np.float64)
    for name in TARGET_COLUMNS:
        if name in rows:
            out[name] = by_config[name].first().astype(np.float64)
    out["diverged"] = by_config["diverged"].any().astype(bool)
    return out.reset_index()


def _at_best(rows: pd.DataFrame, metric: str, column: str) -> pd.Series:
    """Per config, ``column`` at the first evaluation point of its smallest ``metric``."""
    finite = rows.dropna(subset=[metric])  # idxmin refuses all-NaN groups
    best = finite.groupby("config_id")[metric].idxmin()
    return pd.Series(finite.loc[best, column].to_numpy(), index=best.index)


def _setting_columns(configs: pd.DataFrame) -> list[str]:
    """A summary's hyperparameter columns: those between ``config_id`` and ``final_step``."""
    columns = list(configs.columns)
    start = columns.index("config_id") + 1 if "config_id" in columns else 0
    end = columns.index("final_step") if "final_step" in columns else len(columns)
    return columns[start:end]


def setting_means(
    configs: pd.DataFrame,
    metric: str,
    larger_is_better: bool,
    hparams: Sequence[str] | None = None,
    report: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per setting (every hyperparameter but the seed): ``metric`` over its seeds.

    Seeds are replicates. A setting in which any seed diverged, or lacks ``metric``
    (a target it did not reach), counts as diverged and never wins: its ``score`` is
    ``inf``.

    Args:
      configs: one row per config (:func:`summary`'s rows, or several sweeps'
        concatenated), with ``seed``, ``diverged`` and ``metric``.
      metric: the column to rank by.
      larger_is_better: its direction.
      hparams: the columns that make a setting, ``seed`` among them (default: a
        summary's hyperparameter columns).
      report: further columns to average over the seeds (NaN if a seed lacks one).

    Returns:
      A DataFrame sorted by the setting: its hyperparameters but ``seed``, ``mean``
      and ``std`` (sample standard deviation; NaN for one seed) of ``metric``,
      ``num_seeds``, ``diverged`` (any seed), the ``report`` columns' means and
      ``score``: the mean oriented so that smaller is better, ``inf`` where diverged.
    """
    hparams = _setting_columns(configs) if hparams is None else list(hparams)
    keys = [c for c in hparams if c != "seed"]
    missing = [c for c in [*hparams, "seed", "diverged", metric, *report] if c not in configs.columns]
    if missing:
        raise InputError(f"configs is missing column(s) {_choices(missing)}")

    def mean(v):
        return v.mean(skipna=False)

    cells = (
        configs.groupby(keys, dropna=False, sort=True)
        .agg(
            mean=(metric, mean),
            std=(metric, "std"),
            num_seeds=("seed", "nunique"),
            diverged=("diverged", "any"),
            **{name: (name, mean) for name in report},
        )
        .reset_index()
    )
    score = cells["mean"].astype(np.float64) * (-1.0 if larger_is_better else 1.0)
    cells["score"] = score.where(~cells["diverged"].astype(bool) & score.notna(), math.inf)
    return cells


def best_settings(
    configs: pd.DataFrame,
    by: Sequence[str] | str,
    metric: str,
    larger_is_better: bool | None = None,
    *,
    hparams: Sequence[str] | None = None,
    report: Sequence[str] = (),
    ties: Sequence[str] = (),
) -> pd.DataFrame:
    """The best setting of each group: the one rule every table, plot and study ranks with.

    :func:`setting_means` averages ``metric`` over seeds (a diverged seed, or one
    without the metric, disqualifies its setting). Within each group of ``by`` the
    setting with the best mean wins; ties go to the smaller mean of each of ``ties``,
    then to the smaller learning rate. Every hyperparameter that is neither in ``by``
    nor the seed is a *nuisance* one (Google's tuning playbook): the winner is the
    best (learning rate, nuisance values) setting, and its nuisance values are
    reported beside it.

    Args:
      configs: one row per config (:func:`summary`'s rows, or several sweeps'
        concatenated).
      by: the scientific hyperparameters: one row per combination of them (``()``
        for one winner over everything).
      metric: the column to rank by.
      larger_is_better: its direction (default: from :data:`SUMMARY_METRICS`).
      hparams, report: as for :func:`setting_means`.
      ties: columns that break ties in ``metric``, each smaller first.

    Returns:
      One row per group: the ``by`` columns, ``learning_rate`` and the other
      hyperparameters of the winner (NaN and ``None`` when every setting is
      disqualified), ``<metric>_mean`` and ``<metric>_std``, ``<report>_mean`` of
      each report column, ``num_seeds``, ``num_lrs`` (learning rates tried),
      ``num_diverged_lrs`` (learning rates at which every setting is
      disqualified) and ``lr_at_edge`` (the winner is the smallest or largest
      learning rate tried, so the search range should be extended).
    """
    by = [by] if isinstance(by, str) else list(by)
    if larger_is_better is None:
        if metric not in SUMMARY_METRICS:
            raise InputError(
                f"metric={metric!r} has no known direction: pass larger_is_better, "
                f"or one of {_choices(SUMMARY_METRICS)}"
            )
        larger_is_better = SUMMARY_METRICS[metric]
    hparams = _setting_columns(configs) if hparams is None else list(hparams)
    nuisance = [c for c in hparams if c not in by and c not in ("learning_rate", "seed")]
    cells = setting_means(configs, metric, larger_is_better, hparams, report=[*report, *ties])
    groups = cells.groupby(by, dropna=False, sort=True) if by else [((), cells)]
    rows = []
    for _, group in groups:
        lrs = group["learning_rate"]
        dead = group.groupby("learning_rate")["score"].min() == math.inf
        # Sorted by the setting, so the last ties go to the smaller learning rate.
        winner = group.sort_values(["score", *ties, "learning_rate"], kind="stable").iloc[0]
        found = winner["score"] < math.inf
        row = {name: winner[name] for name in by}
        row["learning_rate"] = winner["learning_rate"] if found else math.nan
        for name in nuisance:
            row[name] = winner[name] if found else None
        row[f"{metric}_mean"] = winner["mean"] if found else math.nan
        row[f"{metric}_std"] = winner["std"] if found else math.nan
        for name in report:
            row[f"{name}_mean"] = winner[name] if found else math.nan
        row["num_seeds"] = int(winner["num_seeds"]) if found else int(group["num_seeds"].max())
        row["num_lrs"] = int(lrs.nunique())
        row["num_diverged_lrs"] = int(dead.sum())
        row["lr_at_edge"] = bool(
            found and lrs.nunique() > 1 and winner["learning_rate"] in (lrs.min(), lrs.max())
        )
        rows.append(row)
    columns = [
        *by,
        "learning_rate",
        *nuisance,
        f"{metric}_mean",
        f"{metric}_std",
        *(f"{name}_mean" for name in report),
        "num_seeds",
        "num_lrs",
        "num_diverged_lrs",
        "lr_at_edge",
    ]
    return pd.DataFrame(rows, columns=columns)


def best_learning_rates(
    table: pd.DataFrame,
    by: Sequence[str] | str = ("optimizer", "batch_size"),
    metric: str | None = None,
) -> pd.DataFrame:
    """The best learning rate of each group of a results table, with its mean and spread over seeds.

    :func:`best_settings` on the table's :func:`summary`.

    Args:
      table: a results table.
      by: the scientific hyperparameters: one row per combination of them.
      metric: a column of :func:`summary` to rank by: one of
        :data:`SUMMARY_METRICS` (losses are minimized, accuracies maximized).
        Default: ``steps_to_target`` when the configs ran to a target (they stop
        there, so their losses compare nothing); else ``best_val_loss`` when the
        table has a validation set (the winner's ``test_loss_at_best_val`` and
        ``test_accuracy_at_best_val`` are reported beside it), else ``best_test_loss``.

    Returns:
      :func:`best_settings`'s frame, with ``test_loss_at_best_val_mean`` and
      ``test_accuracy_at_best_val_mean`` when ranking by a ``best_val_*`` metric.

    References:
      Godbole et al., *Deep Learning Tuning Playbook*, 2023
      (github.com/google-research/tuning_playbook).
    """
    check_table(table)
    has_val = "val_loss" in table.columns
    if metric is None and "steps_to_target" in table.columns:
        metric = "steps_to_target"  # configs stop at their target: their losses compare nothing
    elif metric is None:
        metric = "best_val_loss" if has_val else "best_test_loss"
    valid = [
        m
        for m in SUMMARY_METRICS
        if (has_val or "val" not in m) and (m not in TARGET_COLUMNS or m in table.columns)
    ]
    if metric not in valid:
        raise InputError(f"metric={metric!r} is invalid: expected one of {_choices(valid)}")
    by = [by] if isinstance(by, str) else list(by)
    hparams = hyperparameter_columns(table)
    valid_by = [c for c in hparams if c not in ("learning_rate", "seed")]
    for name in by:
        if name not in valid_by:
            raise InputError(f"by={name!r} is invalid: expected one of {_choices(valid_by)}")
    # chosen on validation data, reported on test data at the chosen point
    reported = ["test_loss_at_best_val", "test_accuracy_at_best_val"] if metric.startswith("best_val") else []
    return best_settings(summary(table), by, metric, hparams=hparams, report=reported)
