"""The results table of a sweep, its summaries, and the files it lives in.

A sweep produces a *tidy* table: one row per (config, evaluation point), with
columns ``config_id``, the config's hyperparameters (``optimizer``,
``learning_rate``, ``batch_size``, ``seed`` and any other swept axis), then the
metrics :data:`METRIC_COLUMNS`. After a config diverges its later metrics are
NaN and ``diverged`` is True.

An output folder holds three files, each written atomically (to a temporary
file in the same folder, then ``os.replace``) so an interrupt never leaves a
half-written one:

- ``results.parquet``: the table;
- ``summary.csv``: :func:`summary` of the table, one row per config;
- ``sweep.toml``: the sweep's full definition, enough to run it again.
"""

from __future__ import annotations

import io
import math
import numbers
import os
import re
import secrets
import shutil
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from jaxopt_lab.errors import InputError
from jaxopt_lab.outputs.checkpoints import CHECKPOINT_DIR

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

__all__ = [
    "METRIC_COLUMNS",
    "TARGET_COLUMNS",
    "DEFINITION_TABLES",
    "SUMMARY_METRICS",
    "hyperparameter_columns",
    "measured_columns",
    "summary",
    "best_learning_rates",
    "save",
    "load",
    "read_definition",
    "write_definition",
    "atomic_write_bytes",
    "atomic_write_parquet",
    "SWEEP_FILES",
    "CHUNK_DIR",
    "chunk_file_name",
    "foreign_entries",
    "remove_sweep_files",
    "remove_temporary_files",
    "has_sweep_contents",
    "read_chunk",
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
# The top-level tables a sweep.toml may hold; anything else is a typo worth an error.
DEFINITION_TABLES = (
    "spec",
    "model_options",
    "dataset_options",
    "optimizer_flags",
    "grid",
    "sweep",
    "measure",  # measurement name -> its options (TrainSpec.measure)
    "target",  # TrainSpec.target's fields
    "objects",  # what was given as Python objects: {name, sha256} each (jaxopt_lab.engine.fingerprints)
)
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
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _choices(names) -> str:
    return ", ".join(map(repr, names))


def _check_table(table: pd.DataFrame) -> None:
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
    _check_table(table)
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


def best_learning_rates(
    table: pd.DataFrame,
    by: Sequence[str] | str = ("optimizer", "batch_size"),
    metric: str | None = None,
) -> pd.DataFrame:
    """The best learning rate of each group, with its mean and spread over seeds.

    Seeds are replicates: a config's ``metric`` is averaged over them. Every
    other hyperparameter that is not in ``by`` is a *nuisance* one (Google's
    tuning playbook): the group's winner is the best (learning rate, nuisance
    values) cell, and its nuisance values are reported beside it. A cell in
    which any seed diverged counts as diverged and never wins (its mean ranks
    as +inf, or -inf for a metric where larger is better).

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
      A DataFrame with the ``by`` columns, ``learning_rate`` (NaN when every
      cell diverged), the winner's other hyperparameters, ``<metric>_mean`` and
      ``<metric>_std`` (sample standard deviation over seeds; NaN for one seed),
      ``test_loss_at_best_val_mean`` and ``test_accuracy_at_best_val_mean`` when
      ranking by a ``best_val_*`` metric,
      ``num_seeds``, ``num_lrs`` (learning rates tried), ``num_diverged_lrs``
      (learning rates at which every cell diverged) and ``lr_at_edge`` (the
      winner is the smallest or largest learning rate tried, so the search
      range should be extended).

    References:
      Godbole et al., *Deep Learning Tuning Playbook*, 2023
      (github.com/google-research/tuning_playbook).
    """
    _check_table(table)
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
    larger_is_better = SUMMARY_METRICS[metric]
    nuisance = [c for c in hparams if c not in by and c not in ("learning_rate", "seed")]

    configs = summary(table)
    # chosen on validation data, reported on test data at the chosen point
    reported = ["test_loss_at_best_val", "test_accuracy_at_best_val"] if metric.startswith("best_val") else []
    cell_keys = [*by, "learning_rate", *nuisance]
    cells = (
        configs.groupby(cell_keys, dropna=False, sort=True)
        .agg(
            mean=(metric, "mean"),
            std=(metric, "std"),
            num_seeds=("seed", "nunique"),
            diverged=("diverged", "any"),
            **{name: (name, "mean") for name in reported},
        )
        .reset_index()
    )
    score = cells["mean"] * (-1.0 if larger_is_better else 1.0)
    cells["score"] = score.where(~cells["diverged"] & score.notna(), math.inf)

    rows = []
    for _, group in cells.groupby(by, dropna=False, sort=True):
        lrs = group["learning_rate"]
        dead = group.groupby("learning_rate")["score"].min() == math.inf
        # Sorted by learning rate, so ties go to the smaller one.
        winner = group.sort_values(["score", "learning_rate"], kind="stable").iloc[0]
        found = winner["score"] < math.inf
        row = {name: winner[name] for name in by}
        row["learning_rate"] = winner["learning_rate"] if found else math.nan
        for name in nuisance:
            row[name] = winner[name] if found else None
        row[f"{metric}_mean"] = winner["mean"] if found else math.nan
        row[f"{metric}_std"] = winner["std"] if found else math.nan
        for name in reported:
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
        *(f"{name}_mean" for name in reported),
        "num_seeds",
        "num_lrs",
        "num_diverged_lrs",
        "lr_at_edge",
    ]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- files


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half.

    The bytes go to a temporary file in the same folder (so the rename stays on
    one filesystem), are flushed to disk, then ``os.replace`` moves it over
    ``path``. On any exception, KeyboardInterrupt included, the temporary file
    is removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    # 0o666 through the umask: the same permissions a plain open() would give.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _atomic_write_with(path: str | os.PathLike, write: Callable[[io.BytesIO], Any]) -> None:
    buffer = io.BytesIO()
    write(buffer)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_parquet(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``frame`` (without its index) as a parquet file, atomically."""
    _atomic_write_with(path, lambda buffer: frame.to_parquet(buffer, index=False))


def save(out_dir: str | os.PathLike, table: pd.DataFrame, definition: Mapping[str, Any]) -> None:
    """Write a sweep's files into ``out_dir`` (created if needed).

    Writes ``results.parquet`` (the table), ``summary.csv`` (:func:`summary`)
    and ``sweep.toml`` (``definition``, see :func:`write_definition`), each
    atomically. The definition is checked before anything is written.
    """
    _check_table(table)
    text = _format_definition(definition)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    atomic_write_parquet(table, os.path.join(out_dir, "results.parquet"))
    configs = summary(table)
    _atomic_write_with(
        os.path.join(out_dir, "summary.csv"),
        lambda buffer: buffer.write(configs.to_csv(index=False).encode("utf-8")),
    )
    atomic_write_bytes(os.path.join(out_dir, "sweep.toml"), text.encode("utf-8"))


def load(out_dir: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read back what :func:`save` wrote: ``(table, definition)``."""
    out_dir = os.fspath(out_dir)
    for name in ("results.parquet", "sweep.toml"):
        if not os.path.isfile(os.path.join(out_dir, name)):
            raise InputError(f"out_dir {out_dir!r} is invalid: it has no {name}")
    table = pd.read_parquet(os.path.join(out_dir, "results.parquet"))
    return table, read_definition(os.path.join(out_dir, "sweep.toml"))


# --------------------------------------------------------------------------- the output folder

# What a sweep writes into its output folder, and nothing else: `overwrite` removes
# only these, and refuses a folder that holds anything more.
SWEEP_FILES = ("sweep.toml", "results.parquet", "summary.csv", "heatmap.png", "curves.png")
CHUNK_DIR = "chunks"
_CHUNK_NAME = re.compile(r"group\d{3,}-chunk\d{4,}")  # chunk_file_name's stem
_CHUNK_FILE = re.compile(_CHUNK_NAME.pattern + r"\.parquet(\.corrupt)?")
_TEMPORARY_FILE = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")  # atomic_write_bytes's


def chunk_file_name(group: int, chunk: int) -> str:
    """The file of a sweep's chunk ``chunk`` of compiled group ``group``, under ``chunks/``."""
    return f"group{group:03d}-chunk{chunk:04d}.parquet"


def foreign_entries(out_dir: str | os.PathLike) -> list[str]:
    """What ``out_dir`` holds that a sweep does not write, as paths relative to it."""
    out_dir = os.fspath(out_dir)
    foreign = []
    for name in sorted(os.listdir(out_dir)):
        path = os.path.join(out_dir, name)
        if name == CHECKPOINT_DIR and os.path.isdir(path) and not os.path.islink(path):
            # orbax's folders, one per chunk, whatever they hold
            foreign += [
                os.path.join(name, n) for n in sorted(os.listdir(path)) if not _CHUNK_NAME.fullmatch(n)
            ]
        elif name == CHUNK_DIR and os.path.isdir(path) and not os.path.islink(path):
            for inner in sorted(os.listdir(path)):
                inner_path = os.path.join(path, inner)
                if not (
                    os.path.isfile(inner_path)
                    and (_CHUNK_FILE.fullmatch(inner) or _TEMPORARY_FILE.fullmatch(inner))
                ):
                    foreign.append(os.path.join(name, inner))
        elif not (os.path.isfile(path) and (name in SWEEP_FILES or _TEMPORARY_FILE.fullmatch(name))):
            foreign.append(name)
    return foreign


def remove_sweep_files(out_dir: str | os.PathLike) -> None:
    """Remove what a sweep wrote into ``out_dir`` (it must hold nothing else); keep the folder."""
    out_dir = os.fspath(out_dir)
    if foreign_entries(out_dir):
        raise InputError(f"out_dir {out_dir!r} holds files a sweep does not write: not removing them")
    chunks = os.path.join(out_dir, CHUNK_DIR)
    if os.path.isdir(chunks):
        for name in os.listdir(chunks):
            os.remove(os.path.join(chunks, name))
        os.rmdir(chunks)
    shutil.rmtree(os.path.join(out_dir, CHECKPOINT_DIR), ignore_errors=True)
    for name in os.listdir(out_dir):
        os.remove(os.path.join(out_dir, name))


def has_sweep_contents(out_dir: str | os.PathLike) -> bool:
    """Whether ``out_dir`` holds anything but what a starting sweep leaves for an instant
    (temporary files of atomic writes, an empty ``chunks/``): a folder that other workers
    of a job array are just creating still counts as empty."""
    out_dir = os.fspath(out_dir)
    for name in os.listdir(out_dir):
        if _TEMPORARY_FILE.fullmatch(name):
            continue
        path = os.path.join(out_dir, name)
        if name == CHUNK_DIR and os.path.isdir(path) and not os.listdir(path):
            continue
        return True
    return False


def remove_temporary_files(out_dir: str | os.PathLike) -> None:
    """Remove the temporary files an interrupted atomic write left in ``out_dir`` and its chunks."""
    for folder in (os.fspath(out_dir), os.path.join(os.fspath(out_dir), CHUNK_DIR)):
        if os.path.isdir(folder):
            for name in os.listdir(folder):
                if _TEMPORARY_FILE.fullmatch(name):
                    os.remove(os.path.join(folder, name))


def read_chunk(path: str | os.PathLike, expected_columns: Sequence[str]) -> pd.DataFrame | None:
    """A finished chunk's rows, or ``None`` when the file is missing, truncated or corrupt.

    An unreadable file is renamed ``<name>.corrupt`` (kept, so nothing is lost) and a
    warning names it, so the chunk is computed again.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return None
    try:
        frame = pd.read_parquet(path)
        missing = [c for c in expected_columns if c not in frame.columns]
        if missing:
            raise ValueError(f"it lacks the columns {missing}")
    except Exception as err:  # pyarrow raises several types for a damaged file
        aside = path + ".corrupt"
        os.replace(path, aside)
        warnings.warn(
            f"chunk file {path} is unreadable ({type(err).__name__}: {err}); moved it to {aside} "
            "and computing the chunk again",
            stacklevel=2,
        )
        return None
    return frame


# --------------------------------------------------------------------------- TOML


def write_definition(path: str | os.PathLike, definition: Mapping[str, Any]) -> None:
    """Write a sweep definition as TOML, atomically.

    ``definition`` maps table names from :data:`DEFINITION_TABLES` to tables
    of scalars (str, bool, int, float), lists of them, or nested tables. Floats
    are written with ``repr``, so they read back bit for bit; ``inf`` and
    ``nan`` are valid TOML. TOML has no null: a ``None`` value is an error.
    """
    atomic_write_bytes(path, _format_definition(definition).encode("utf-8"))


def read_definition(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a ``sweep.toml`` into a definition dict.

    Raises:
      ValueError: one line naming the file, for a missing file, malformed
        TOML (with the parser's line and column) or a top-level key that is
        not one of :data:`DEFINITION_TABLES`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"path {path!r} is invalid: no such file")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        definition = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise InputError(f"malformed TOML in {path}: not UTF-8 text ({err.reason})") from None
    except tomllib.TOMLDecodeError as err:
        message = " ".join(str(err).split())
        raise InputError(f"malformed TOML in {path}: {message}") from None
    for name, value in definition.items():
        if name not in DEFINITION_TABLES or not isinstance(value, dict):
            kind = "table" if isinstance(value, dict) else "key"
            raise InputError(
                f"unknown top-level {kind} {name!r} in {path}: expected tables {_choices(DEFINITION_TABLES)}"
            )
    return definition


def _format_definition(definition: Mapping[str, Any]) -> str:
    if not isinstance(definition, Mapping):
        raise InputError(
            f"definition of type {type(definition).__name__} is invalid: expected a dict of tables"
        )
    lines: list[str] = []
    for name, table in definition.items():
        if name not in DEFINITION_TABLES:
            raise InputError(
                f"definition table {name!r} is invalid: expected one of {_choices(DEFINITION_TABLES)}"
            )
        if not isinstance(table, Mapping):
            raise InputError(
                f"definition[{name!r}] of type {type(table).__name__} is invalid: expected a dict"
            )
        _format_table([name], table, lines)
    return "\n".join(lines) + "\n"


def _format_table(path: list[str], table: Mapping[str, Any], lines: list[str]) -> None:
    if lines:
        lines.append("")
    lines.append("[" + ".".join(_format_key(k) for k in path) + "]")
    # TOML puts a table's own keys before its sub-tables.
    subtables = []
    for key, value in table.items():
        if not isinstance(key, str):
            raise InputError(f"key {key!r} in [{'.'.join(path)}] is invalid: expected a string")
        if isinstance(value, Mapping):
            subtables.append((key, value))
        else:
            lines.append(f"{_format_key(key)} = {_format_value(value, [*path, key])}")
    for key, value in subtables:
        _format_table([*path, key], value, lines)


def _format_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _format_string(key)


def _format_string(text: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    out = []
    for char in text:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _format_value(value: Any, path: list[str]) -> str:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest string that parses back to the same double
    if isinstance(value, str):
        return _format_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_value(v, path) for v in value) + "]"
    where = ".".join(path)
    if value is None:
        raise InputError(f"{where} is None: TOML has no null, leave the key out instead")
    raise InputError(
        f"{where} of type {type(value).__name__} is invalid: expected a str, bool, int, float, list or dict"
    )
