"""Pictures of a sweep: learning rate x batch size heatmaps and training curves.

Both read the results table of :mod:`jaxopt_lab.analysis.tables` and summarize it the
same way: a config's score is its best ``metric`` over evaluation points, a
cell's score is the mean over seeds, a cell where any seed diverged is
*diverged*, and any other swept hyperparameter (momentum, b2, ...) is a
nuisance one, so a (learning rate, batch size) cell shows its best setting.

Figures are built with :class:`matplotlib.figure.Figure` directly, never
through pyplot: nothing is shown, no global figure list grows during a long
sweep, and the user's backend is left alone. PNGs are drawn by Agg at 150 dpi.
"""

from __future__ import annotations

import io
import os

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FormatStrFormatter, FuncFormatter, LogLocator, NullFormatter

from jaxopt_lab.analysis import tables as tables_lib
from jaxopt_lab.errors import InputError
from jaxopt_lab.outputs import atomic as atomic_lib

__all__ = ["PLOT_METRICS", "heatmap", "heatmap_data", "curves", "pictures", "draw", "format_lr"]

# Metrics the plots can show, and whether larger is better.
PLOT_METRICS = {
    "test_loss": False,
    "train_loss": False,
    "test_accuracy": True,
    "val_loss": False,
    "val_accuracy": True,
}
_LABELS = {
    "test_loss": "test loss",
    "train_loss": "train loss",
    "test_accuracy": "test accuracy",
    "val_loss": "validation loss",
    "val_accuracy": "validation accuracy",
}
_OPTIMIZER_ORDER = ("sgd", "momentum", "rmsprop", "adam")
_DPI = 150
_MAX_ANNOTATED_COLUMNS = 12
_MAX_WIDTH = 24.0  # inches; wider figures stop being readable on a screen
_DIVERGED_FACE = "#e0e0e0"
_DIVERGED_EDGE = "#7f7f7f"
_BEST_EDGE = "#d62728"
# Explicit sizes so the figures read the same whatever the user's rcParams say.
_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 12,
    "hatch.linewidth": 0.8,
}


def format_lr(value: float, digits: int = 2) -> str:
    """A learning rate as a short label: ``1e-3``, ``3.2e-3``, ``1``, ``3.2``.

    Args:
      value: a positive number.
      digits: significant digits.
    """
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    exponent = int(exponent)
    return mantissa if exponent == 0 else f"{mantissa}e{exponent}"


def _lr_labels(values) -> list[str]:
    # Two digits unless that makes two learning rates look the same.
    for digits in range(2, 8):
        labels = [format_lr(v, digits) for v in values]
        if len(set(labels)) == len(labels):
            return labels
    return [repr(float(v)) for v in values]


def _default_metric(table: pd.DataFrame) -> str:
    return "val_loss" if "val_loss" in table.columns else "test_loss"


def _check(table: pd.DataFrame, metric: str | None, summary_columns: bool = False) -> str:
    """The metric to draw: ``metric``, by default ``val_loss`` with a validation set, else
    ``test_loss``: a column of :data:`PLOT_METRICS`, a measurement's column, or (for the
    heatmap, ``summary_columns``) a column of :func:`jaxopt_lab.analysis.tables.summary`."""
    if metric is None:
        metric = _default_metric(table)
    tables_lib.check_table(table)
    valid = [m for m in PLOT_METRICS if m in table.columns] + tables_lib.measured_columns(table)
    if summary_columns and metric not in valid:  # the summary only when the table lacks it
        valid += [c for c in _summary_values(table) if c not in valid]
    if metric not in valid:
        raise InputError(f"metric={metric!r} is invalid: expected one of {', '.join(map(repr, valid))}")
    return metric


def _summary_values(table: pd.DataFrame) -> list[str]:
    """The per-config numbers of :func:`jaxopt_lab.analysis.tables.summary` a heatmap can show."""
    configs = tables_lib.summary(table)
    skip = {"config_id", "diverged", *tables_lib.hyperparameter_columns(table)}
    return [c for c in configs.columns if c not in skip and pd.api.types.is_numeric_dtype(configs[c])]


def _ranking(table: pd.DataFrame, metric: str) -> str:
    """What picks the curves' best learning rate: steps to target in a table with a target
    (its configs stop there, so their losses compare nothing), else ``metric`` itself, or
    the default metric for a measurement (which has no best)."""
    if "steps_to_target" in table.columns:
        return "steps_to_target"
    return metric if metric in PLOT_METRICS else _default_metric(table)


def _direction(metric: str) -> bool | None:
    """Whether larger is better for ``metric``; ``None`` for a measurement, which has no best."""
    if metric in PLOT_METRICS:
        return PLOT_METRICS[metric]
    return tables_lib.SUMMARY_METRICS.get(metric)


def _label(metric: str) -> str:
    return _LABELS.get(metric, metric.replace("_", " "))


def _config_values(table: pd.DataFrame, metric: str) -> pd.Series:
    """One number per config for a heatmap cell (:func:`_taken` says how)."""
    by_config = table.groupby("config_id", sort=True)
    if metric in PLOT_METRICS:
        return by_config[metric].max() if PLOT_METRICS[metric] else by_config[metric].min()
    if metric in tables_lib.measured_columns(table):
        rows = table.sort_values(["config_id", "step"], kind="stable")
        return rows.groupby("config_id", sort=True)[metric].last()
    return tables_lib.summary(table).set_index("config_id")[metric].astype(np.float64)


def _taken(table: pd.DataFrame, metric: str) -> str:
    """How :func:`_config_values` takes a config's number: the best over evaluation points
    of a metric of :data:`PLOT_METRICS`, the last point's value of a measurement, or the
    summary's column."""
    if metric in PLOT_METRICS:
        return f"{'max' if PLOT_METRICS[metric] else 'min'} over evaluation steps"
    if metric in tables_lib.measured_columns(table):
        return "at the last evaluation step"
    return "per config"


def _optimizers(table: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(table["optimizer"]))
    known = [o for o in _OPTIMIZER_ORDER if o in present]
    return known + sorted(o for o in present if o not in _OPTIMIZER_ORDER)


def _configs(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per config: its hyperparameters, ``value`` (:func:`_config_values`) and
    ``diverged`` (at any point)."""
    hparams = tables_lib.hyperparameter_columns(table)
    configs = table.drop_duplicates("config_id").set_index("config_id")[hparams]
    configs["value"] = _config_values(table, metric)
    configs["diverged"] = table.groupby("config_id", sort=True)["diverged"].any()
    return configs


def _cells(configs: pd.DataFrame, hparams: list[str], metric: str) -> pd.DataFrame:
    """One row per (optimizer, batch size, learning rate, nuisance values) of :func:`_configs`'
    rows: mean over seeds (:func:`jaxopt_lab.analysis.tables.setting_means`).

    Columns: the hyperparameters but ``seed``, ``value`` (mean over seeds of
    each config's number), ``diverged`` (any seed diverged) and ``score`` (``value``
    oriented so smaller is better; +inf when diverged or missing).
    """
    cells = tables_lib.setting_means(configs, "value", bool(_direction(metric)), hparams)
    return cells.rename(columns={"mean": "value"})[
        [*(c for c in hparams if c != "seed"), "value", "diverged", "score"]
    ]


def _lr_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Best over nuisance hyperparameters: one row per (optimizer, batch size, learning rate).

    A cell is diverged only if every nuisance setting diverged.
    """
    keys = ["optimizer", "batch_size", "learning_rate"]
    best = cells.sort_values("score", kind="stable").drop_duplicates(keys)
    best = best.drop(columns="diverged").merge(cells.groupby(keys)["diverged"].all().reset_index(), on=keys)
    best["value"] = best["value"].where(~best["diverged"])
    return best.sort_values(keys).reset_index(drop=True)


def heatmap_data(table: pd.DataFrame, metric: str | None = None) -> dict[str, pd.DataFrame]:
    """The matrices :func:`heatmap` draws, one per optimizer.

    Entry ``[batch_size, learning_rate]`` is ``mean over seeds of (min over
    evaluation points of metric)`` (max for accuracy), best over any other
    swept hyperparameter; NaN where every setting diverged in some seed, or
    where the pair was not run. For a measurement's column the config's value
    is the last point's, and for a column of :func:`jaxopt_lab.analysis.tables.summary`
    (``steps_to_target``, ``final_sharpness``, ...) the summary's.

    Args:
      table: a results table.
      metric: one of :data:`PLOT_METRICS`, a measurement's column or a summary
        column (default: ``val_loss`` with a validation set, else ``test_loss``).

    Returns:
      ``{optimizer: DataFrame}``, each indexed by every batch size of the table
      (ascending) with a column per learning rate of the table (ascending).
    """
    metric = _check(table, metric, summary_columns=True)
    data, _ = _matrices(table, _configs(table, metric), metric)
    return data


def _matrices(table, configs, metric):
    cells = _lr_cells(_cells(configs, tables_lib.hyperparameter_columns(table), metric))
    batch_sizes = sorted(cells["batch_size"].unique())
    lrs = sorted(cells["learning_rate"].unique())
    values, diverged = {}, {}
    for opt in _optimizers(table):
        rows = cells[cells["optimizer"] == opt]
        shape = dict(index=batch_sizes, columns=lrs)
        cells_of = rows.set_index(["batch_size", "learning_rate"])
        values[opt] = cells_of["value"].astype(np.float64).unstack().reindex(**shape)
        # Pairs that were not run are not diverged: fill before anything casts NaN to True.
        diverged[opt] = (
            cells_of["diverged"].astype(bool).unstack(fill_value=False).reindex(**shape, fill_value=False)
        )
        values[opt].index.name, values[opt].columns.name = "batch_size", "learning_rate"
    return values, diverged


def _outlier_fence(finite: np.ndarray, larger_is_better: bool) -> float:
    """Where the colour scale stops on the bad side: Tukey's fence, 1.5 interquartile
    ranges beyond the quartile (of log values for positive losses), so a few cells
    far from the rest (a loss of 2.5e6 beside losses near 1) do not flatten the others."""
    logs = not larger_is_better and finite.min() > 0
    x = np.log10(finite) if logs else finite
    q1, q3 = np.percentile(x, [25, 75])
    fence = q1 - 1.5 * (q3 - q1) if larger_is_better else q3 + 1.5 * (q3 - q1)
    return float(10**fence) if logs else float(fence)


def _norm(values: np.ndarray, larger_is_better: bool):
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    lo, hi = float(finite.min()), float(finite.max())
    fence = _outlier_fence(finite, larger_is_better)
    # The fence never crosses the range's other end (one value: its log round trip can).
    if larger_is_better:
        lo = max(lo, min(fence, hi))
    else:
        hi = min(hi, max(fence, lo))
    if lo == hi:
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    # Losses spread over more than a factor of 3 (a few diverging-edge cells far
    # above the rest) get a log scale, so the interesting low end keeps its contrast.
    if not larger_is_better and lo > 0 and hi / lo > 3:
        return LogNorm(lo, hi)
    return Normalize(lo, hi)


def _text_color(rgba) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _save(fig: Figure, path) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=_DPI)
    atomic_lib.atomic_write_bytes(path, buffer.getvalue())


def heatmap(table: pd.DataFrame, path=None, *, metric: str | None = None) -> Figure:
    """Best ``metric`` over learning rate (x) and batch size (y), one panel per optimizer.

    Each cell is :func:`heatmap_data`'s entry. Panels share one color scale,
    logarithmic when a loss spans more than a decade. Diverged cells are
    hatched grey with a cross; the best learning rate of each batch size is
    outlined; values are written in the cells when there are at most 12
    learning rates.

    Args:
      table: a results table.
      path: where to write the picture (format from the suffix, PNG by
        default), atomically; ``None`` to only return the figure.
      metric: as :func:`heatmap_data`'s. A measurement's column has no best
        learning rate: no cell is outlined.

    Returns:
      The figure.
    """
    metric = _check(table, metric, summary_columns=True)
    ranked = _direction(metric) is not None
    larger_is_better = bool(_direction(metric))
    configs = _configs(table, metric)  # each config's number, for the cells and their winners
    values, diverged = _matrices(table, configs, metric)
    # The outlined cells; a measurement's column has no best.
    winners = (
        _winners(table, configs, metric)
        if ranked
        else pd.DataFrame(columns=["optimizer", "batch_size", "learning_rate"])
    )
    optimizers = list(values)
    first = values[optimizers[0]]
    lrs, batch_sizes = list(first.columns), list(first.index)
    n_lr, n_b = len(lrs), len(batch_sizes)
    n_panels = len(optimizers)
    annotate = n_lr <= _MAX_ANNOTATED_COLUMNS
    # Cells shrink to keep the figure within _MAX_WIDTH inches, but not below what
    # a two-digit annotation needs.
    fit = (_MAX_WIDTH - 1.6 - 0.5 * n_panels) / (n_panels * n_lr)
    cell_w = max(0.45, min(0.62, fit)) if annotate else max(0.15, min(0.45, fit))
    digits = 3 if cell_w >= 0.55 else 2
    panel_w = max(2.6, cell_w * n_lr + 0.5)
    width = max(6.0, n_panels * panel_w + 1.6)
    height = max(3.2, 0.5 * n_b + 2.5)

    with mpl.rc_context(_STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(1, len(optimizers), sharey=True, squeeze=False)[0]
        norm = _norm(np.concatenate([v.to_numpy().ravel() for v in values.values()]), larger_is_better)
        cmap = mpl.colormaps["viridis" if larger_is_better else "viridis_r"].with_extremes(bad="white")
        image = None
        labels = _lr_labels(lrs)
        for ax, opt in zip(axes, optimizers, strict=True):
            matrix = values[opt].to_numpy()
            image = ax.imshow(
                np.ma.masked_invalid(matrix),
                cmap=cmap,
                norm=norm or Normalize(),
                origin="lower",
                aspect="auto",
                interpolation="nearest",
            )
            for i, j in zip(*np.nonzero(diverged[opt].to_numpy()), strict=True):
                ax.add_patch(
                    Rectangle(
                        (j - 0.5, i - 0.5),
                        1,
                        1,
                        facecolor=_DIVERGED_FACE,
                        edgecolor=_DIVERGED_EDGE,
                        hatch="///",
                        linewidth=0,
                    )
                )
                ax.text(j, i, "×", ha="center", va="center", fontsize=14, color="#404040")
            for _, winner in winners[winners["optimizer"] == opt].iterrows():
                if pd.notna(winner["learning_rate"]):
                    i, j = batch_sizes.index(winner["batch_size"]), lrs.index(winner["learning_rate"])
                    # Inset, so the outlines of neighbouring rows stay apart.
                    ax.add_patch(
                        Rectangle(
                            (j - 0.45, i - 0.45),
                            0.9,
                            0.9,
                            fill=False,
                            edgecolor=_BEST_EDGE,
                            linewidth=2.5,
                            zorder=3,
                        )
                    )
            if norm is not None:  # outliers: beyond the colour scale, drawn at its end and marked
                beyond = matrix < norm.vmin if larger_is_better else matrix > norm.vmax
                for i, j in zip(*np.nonzero(np.isfinite(matrix) & beyond), strict=True):
                    ax.text(j + 0.3, i + 0.28, "▲", ha="center", va="center", fontsize=7, color="#d62728")
            if annotate and norm is not None:
                for i, j in zip(*np.nonzero(np.isfinite(matrix)), strict=True):
                    ax.text(
                        j,
                        i,
                        f"{matrix[i, j]:.{digits}g}",
                        ha="center",
                        va="center",
                        fontsize=9,
                        color=_text_color(cmap(norm(matrix[i, j]))),
                    )
            if cell_w < 0.62:
                ax.set_xticks(range(n_lr), labels, rotation=45, ha="right", rotation_mode="anchor")
            else:
                ax.set_xticks(range(n_lr), labels)
            ax.set_yticks(range(n_b), [str(int(b)) for b in batch_sizes])
            ax.set_xlabel("learning rate")
            ax.set_title(opt)
            ax.tick_params(length=0)
            for spine in ax.spines.values():
                spine.set_visible(False)
        axes[0].set_ylabel("batch size")
        label = _label(metric)
        how = _taken(table, metric)
        outliers = norm is not None and any(
            ((v < norm.vmin) if larger_is_better else (v > norm.vmax)).to_numpy().any()
            for v in values.values()
        )
        if norm is not None:
            extend = ("min" if larger_is_better else "max") if outliers else "neither"
            bar = fig.colorbar(image, ax=list(axes), label=label, shrink=0.9, pad=0.02, extend=extend)
            if isinstance(norm, LogNorm):  # 2, 3, 4 rather than 2×10⁰
                plain = FormatStrFormatter("%g")
                bar.ax.yaxis.set_major_formatter(plain)
                bar.ax.yaxis.set_minor_formatter(plain)
        handles = [Patch(fill=False, edgecolor=_BEST_EDGE, linewidth=2, label="best lr per batch size")]
        if not ranked:
            handles = []
        if any(d.to_numpy().any() for d in diverged.values()):
            handles.append(
                Patch(
                    facecolor=_DIVERGED_FACE,
                    edgecolor=_DIVERGED_EDGE,
                    hatch="///",
                    label="× diverged (in any seed)",
                )
            )
        if outliers:
            handles.append(
                Patch(facecolor="none", edgecolor="none", label="▲ beyond the colour scale (an outlier)")
            )
        if any((v.isna() & ~diverged[o]).to_numpy().any() for o, v in values.items()):
            missing = "target not reached" if metric in tables_lib.TARGET_COLUMNS else "not run"
            handles.append(Patch(facecolor="white", edgecolor=_DIVERGED_EDGE, linewidth=0.5, label=missing))
        if handles:
            fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
        fig.suptitle(
            f"{label[0].upper() + label[1:]} by learning rate and batch size\n({how}, mean over seeds)"
        )
    if path is not None:
        _save(fig, path)
    return fig


def _format_count(value: float, _=None) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _log_count_axis(axis, xs: list[np.ndarray]) -> None:
    """A log axis labelled ``300``, ``3k``, ``1M``; minor ticks labelled only on short ranges."""
    axis.axes.set_xscale("log")
    x = np.concatenate(xs)
    axis.set_major_formatter(FuncFormatter(_format_count))
    if np.log10(x.max() / x.min()) < 2:
        axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        axis.set_minor_formatter(FuncFormatter(_format_count))
    else:
        axis.set_minor_formatter(NullFormatter())


def _winners(table: pd.DataFrame, configs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The best setting (learning rate and nuisance values) of each optimizer and batch size
    among :func:`_configs`' rows, by :func:`jaxopt_lab.analysis.tables.best_settings`. Batch
    sizes where every setting diverged are kept, with a NaN learning rate."""
    hparams = tables_lib.hyperparameter_columns(table)
    return tables_lib.best_settings(
        configs,
        ["optimizer", "batch_size"],
        "value",
        bool(_direction(metric)),
        hparams=hparams,
    )


def _matching(table: pd.DataFrame, winner: pd.Series, columns: list[str]) -> pd.Series:
    keep = pd.Series(True, index=table.index)
    for name in columns:
        value = winner[name]
        if pd.isna(value):
            keep &= table[name].isna()
        else:
            keep &= table[name] == value
    return keep


def curves(table: pd.DataFrame, path=None, *, metric: str | None = None, x: str = "examples_seen") -> Figure:
    """``metric`` against examples seen, one line per batch size, one panel per optimizer.

    Each batch size is drawn at its best learning rate (the heatmap's outlined
    cell): the mean over seeds, with a band from the seeds' minimum to maximum.
    The x axis is logarithmic, so batch sizes compare at equal data; the y
    axis is too when a loss spans more than a decade.

    Args:
      table: a results table.
      path: where to write the picture (format from the suffix, PNG by
        default), atomically; ``None`` to only return the figure.
      metric: one of :data:`PLOT_METRICS` or a measurement's column (default:
        ``val_loss`` with a validation set, else ``test_loss``). The best learning
        rate is chosen on ``steps_to_target`` in a table with a target (its configs
        stop there), else on ``metric`` itself for a metric of :data:`PLOT_METRICS`,
        and on the default metric for a measurement (``sharpness`` has no best).
      x: ``"examples_seen"`` or ``"step"``.

    Returns:
      The figure.
    """
    metric = _check(table, metric)
    if x not in ("examples_seen", "step"):
        raise InputError(f"x={x!r} is invalid: expected 'examples_seen' or 'step'")
    axis = x
    ranking = _ranking(table, metric)
    winners = _winners(table, _configs(table, ranking), ranking)
    optimizers = _optimizers(table)
    batch_sizes = sorted(winners["batch_size"].unique())
    colors = mpl.colormaps["viridis"](np.linspace(0.0, 0.8, max(2, len(batch_sizes))))
    color_of = {b: colors[k] for k, b in enumerate(batch_sizes)}
    hparams = [c for c in tables_lib.hyperparameter_columns(table) if c != "seed"]
    # Nuisance hyperparameters worth naming in the legend: those that take more than one value.
    shown = [
        c
        for c in hparams
        if c not in ("optimizer", "batch_size", "learning_rate")
        and table.groupby("optimizer")[c].nunique().max() > 1
    ]
    label = _label(metric)

    with mpl.rc_context(_STYLE):
        fig = Figure(figsize=(max(6.0, 4.4 * len(optimizers) + 0.6), 4.2), layout="constrained")
        axes = fig.subplots(1, len(optimizers), sharey=True, squeeze=False)[0]
        positive = []
        for ax, opt in zip(axes, optimizers, strict=True):
            handles, drawn, xs = [], False, []
            for _, winner in winners[winners["optimizer"] == opt].iterrows():
                b = winner["batch_size"]
                if pd.isna(winner["learning_rate"]):
                    handles.append(
                        Line2D(
                            [],
                            [],
                            color=color_of[b],
                            linestyle="none",
                            marker="x",
                            label=f"B={b}: all lrs diverged",
                        )
                    )
                    continue
                rows = table[_matching(table, winner, hparams)]
                rows = rows[rows[axis] > 0]
                stats = rows.groupby(axis)[metric].agg(["mean", "min", "max"])
                x = stats.index.to_numpy(np.float64)
                xs.append(x)
                ax.fill_between(x, stats["min"], stats["max"], color=color_of[b], alpha=0.2, linewidth=0)
                extra = "".join(
                    f", {c}={winner[c]:g}" if isinstance(winner[c], float) else f", {c}={winner[c]}"
                    for c in shown
                    if pd.notna(winner[c])
                )
                (line,) = ax.plot(
                    x,
                    stats["mean"],
                    color=color_of[b],
                    linewidth=1.8,
                    marker="o" if len(x) <= 12 else None,  # a run that stopped at its first point is one
                    markersize=4,
                    label=f"B={b}, lr={format_lr(winner['learning_rate'])}{extra}",
                )
                handles.append(line)
                drawn = True
                positive.append(stats[["min", "max"]].to_numpy().ravel())
            if drawn:
                _log_count_axis(ax.xaxis, xs)
            else:
                ax.text(
                    0.5,
                    0.5,
                    "all runs diverged",
                    transform=ax.transAxes,
                    ha="center",
                    va="center",
                    color="#404040",
                )
                ax.set_xticks([])
            if handles:
                ax.legend(handles=handles, loc="best", frameon=False)
            ax.set_title(opt)
            ax.set_xlabel("examples seen" if axis == "examples_seen" else "step")
            ax.grid(True, which="major", alpha=0.3)
        values = np.concatenate(positive) if positive else np.array([])
        values = values[np.isfinite(values)]
        if not _direction(metric) and values.size and values.min() > 0 and values.max() / values.min() > 10:
            axes[0].set_yscale("log")
        axes[0].set_ylabel(label)
        chosen = "" if ranking == metric else f"best by {_label(ranking)}; "
        fig.suptitle(
            f"{label[0].upper() + label[1:]} at the best learning rate of each batch size\n"
            f"({chosen}mean and min-max over seeds)"
        )
    if path is not None:
        _save(fig, path)
    return fig


def pictures(table: pd.DataFrame) -> dict[str, tuple]:
    """The pictures of a sweep by file name, each ``(draw function, metric)``:
    ``heatmap.png`` and ``curves.png`` of the default metric, ``curves_<column>.png`` of
    each measurement's column, ``heatmap_steps_to_target.png`` with a target."""
    out = {"heatmap.png": (heatmap, None), "curves.png": (curves, None)}
    out.update({f"curves_{column}.png": (curves, column) for column in tables_lib.measured_columns(table)})
    if "steps_to_target" in table.columns:
        out["heatmap_steps_to_target.png"] = (heatmap, "steps_to_target")
    return out


def draw(table: pd.DataFrame, out_dir) -> list[str]:
    """Draw :func:`pictures` into ``out_dir``; returns their file names."""
    drawn = pictures(table)
    for name, (function, metric) in drawn.items():
        function(table, os.path.join(out_dir, name), metric=metric)
    return list(drawn)
