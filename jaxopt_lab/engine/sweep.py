"""Sweeps: a grid of training runs as a few compiled, vmapped, sharded programs.

:func:`sweep` checks a request before anything runs or is written, plans the
grid's configs into compiled groups (:mod:`jaxopt_lab.engine.grid`), runs each
group in chunks sharded over the devices (:mod:`jaxopt_lab.engine.chunks`), and
assembles the table. An output folder (:class:`~jaxopt_lab.outputs.folder.Folder`)
receives each finished chunk, so an interrupted sweep resumes where it stopped,
then the table, its summary, ``sweep.toml`` and the pictures.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.extend.core
import numpy as np
import pandas as pd

from jaxopt_lab.analysis import tables as tables_lib
from jaxopt_lab.engine import distributed as distributed_lib
from jaxopt_lab.engine import train as train_lib
from jaxopt_lab.engine.chunks import (
    clear_caches,
    default_chunk_size,
    measurement_columns_of,
    one_device_per_cpu_core,
    round_up,
    run_chunk,
)
from jaxopt_lab.engine.grid import DYNAMIC_AXES, STATIC_AXES, STRATEGIES, Grid, budget_steps, check_size, plan
from jaxopt_lab.errors import InputError
from jaxopt_lab.optim import families as optimizers_lib
from jaxopt_lab.outputs import folder as folder_lib
from jaxopt_lab.outputs import progress as progress_lib
from jaxopt_lab.outputs import schema as schema_lib

__all__ = [
    "Grid",
    "SweepResult",
    "sweep",
    "plan",
    "one_device_per_cpu_core",
    "check_size",
    "clear_caches",
    "STRATEGIES",
    "STATIC_AXES",
    "DYNAMIC_AXES",
]

_FIRST_COLUMNS = ("optimizer", "learning_rate", "batch_size", "seed")
_METRICS = tables_lib.METRIC_COLUMNS
_VAL_METRICS = ("val_loss", "val_accuracy")  # only for a dataset with a validation set


def _choices(names) -> str:
    return ", ".join(map(repr, names))


@dataclasses.dataclass
class SweepResult:
    """What a sweep returns.

    Attributes:
      table: one row per (config, evaluation point) of the chunks present.
      definition: the full sweep definition (what ``sweep.toml`` holds).
      strategy: the batch-size strategy that ran (``auto`` resolved).
      missing: the chunk files (under ``chunks/``) neither computed here nor found in
        the folder: chunks of other shards not finished yet.
    """

    table: pd.DataFrame
    definition: dict
    strategy: str
    missing: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Whether every chunk is in the table (a shard of a job array, or ``compute=False``,
        may leave some to other workers: their files are ``missing``)."""
        return not self.missing

    def summary(self) -> pd.DataFrame:
        """One row per config: its hyperparameters, final and best metrics."""
        return tables_lib.summary(self.table)

    def best_learning_rates(self, **kwargs) -> pd.DataFrame:
        """The best learning rate per optimizer and batch size (mean over seeds)."""
        return tables_lib.best_learning_rates(self.table, **kwargs)


def _spec_from(spec_or_options) -> tuple[train_lib.TrainSpec, float | None]:
    if isinstance(spec_or_options, train_lib.TrainSpec):
        return spec_or_options, None
    options = dict(spec_or_options or {})
    epochs = options.pop("epochs", None)
    fields = {f.name for f in dataclasses.fields(train_lib.TrainSpec)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise InputError(f"option {unknown[0]!r} is invalid: expected one of {_choices(sorted(fields))}")
    return train_lib.TrainSpec(**options), epochs


def _reordered(grid: Grid, stored_axes: Mapping[str, list]) -> Grid:
    """``grid`` with its axes and values in the order of ``stored_axes`` (equal up to order)."""
    by_name = {optimizers_lib.resolve(o).name: o for o in grid.axes.get("optimizer", ())}
    return Grid(
        **{
            k: [by_name.get(v, v) if k == "optimizer" else v for v in values]
            for k, values in stored_axes.items()
        }
    )


def sweep(
    spec_or_options: train_lib.TrainSpec | Mapping[str, Any] | None,
    grid: Grid,
    *,
    strategy: str = "auto",
    epochs: float | None = None,
    chunk_size: int | None = None,
    out: str | os.PathLike | folder_lib.Folder | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | str = True,
    devices: Sequence[jax.Device] | None = None,
    plots: bool = True,
    shard: tuple[int, int] | None = None,
    compute: bool = True,
    checkpoint_every: float | None = 300.0,
    data_parallel: int = 1,
    measure: Sequence[Any] | None = None,
    target: Any = None,
) -> SweepResult:
    """Run every config of ``grid`` and return the results table.

    Args:
      spec_or_options: a :class:`TrainSpec`, or a dict of its fields (and
        optionally ``epochs``); grid axes override its fields per config.
      grid: the :class:`Grid` of configs.
      strategy: how batch size enters under vmap: ``"bucket"`` (one program per
        batch size), ``"mask"`` (one program; every config gathers the largest
        batch and masks the rows beyond its own), or ``"auto"`` (the cheaper one
        by estimated arithmetic and compiles).
      epochs: a budget in epochs instead of ``spec.steps``: each batch size
        runs ``epochs * (num_examples // batch_size)`` steps.
      chunk_size: configs per compiled call (default: as many as fit a memory
        estimate), rounded up to a multiple of the device count.
      out: an output folder for ``results.parquet``, ``summary.csv``,
        ``sweep.toml``, ``heatmap.png``, ``curves.png`` and each finished chunk: a
        path, or a :class:`~jaxopt_lab.outputs.folder.Folder` (which decides how its
        errors name the options and whether it draws).
      resume: finish an interrupted sweep in ``out`` without redoing its chunks.
      overwrite: replace what ``out`` holds.
      progress: ``True``: a progress bar on a terminal (one line per finished
        group when stderr is not one); ``"lines"``: one line per finished group;
        ``False``: nothing; or an object with ``advance(config_steps, configs_done)``,
        ``group_done(index, group)`` and ``close()`` of your own
        (:class:`~jaxopt_lab.outputs.progress.Progress` is the built-in one).
      devices: the devices to shard configs over (default: all).
      plots: draw the heatmap and curves into ``out`` (a path; a ``Folder`` says itself).
      shard: ``(index, count)``: one worker of a job array. The sweep's chunks, in
        order, are dealt round-robin to ``count`` shards; this call computes chunk
        ``k`` only when ``k % count == index`` (and it is not in ``out`` already) and
        reads the others that are there. Workers share ``out`` (each chunk is one
        file, written atomically); the table, summary and pictures are written by
        the worker that finds every chunk present, or later by ``compute=False``.
      compute: ``False`` computes nothing: the table is assembled from the chunk
        files in ``out`` (``jaxopt-lab report`` on a job array's folder).
      data_parallel: devices per config: the devices form a mesh ``(config, data)``
        with ``data`` of this size, and each config's batch is split over it (losses,
        gradients and batch-norm statistics are those of the whole batch). It must
        divide the device count and every batch size.
      checkpoint_every: seconds between checkpoints of a running chunk's state in
        ``out/checkpoints/`` (orbax), so that a killed chunk resumes from its last
        one; ``0``: after every segment; ``None``: never.
      measure: measurements at every evaluation point, as ``TrainSpec.measure``
        (:mod:`jaxopt_lab.measure`); given here, they replace the spec's.
      target: a stop for every config, as ``TrainSpec.target`` (e.g.
        ``{"train_loss": 0.5}`` or a :class:`~jaxopt_lab.Target`): the table
        gains ``steps_to_target`` and ``examples_to_target``; given here, it replaces
        the spec's.

    Returns:
      A :class:`SweepResult`.
    """
    spec, spec_epochs = _spec_from(spec_or_options)
    if measure is not None:
        spec = dataclasses.replace(spec, measure=measure)
    if target is not None:
        spec = dataclasses.replace(spec, target=target)
    epochs = spec_epochs if epochs is None else epochs
    if epochs is not None and not (isinstance(epochs, (int, float, np.number)) and 0 < epochs < math.inf):
        raise InputError(f"epochs={epochs!r} is invalid: expected a positive finite number")
    if chunk_size is not None and (isinstance(chunk_size, bool) or chunk_size < 1):
        raise InputError(f"chunk_size={chunk_size!r} is invalid: expected a positive integer")
    if strategy not in STRATEGIES:
        raise InputError(f"strategy={strategy!r} is invalid: expected one of {_choices(STRATEGIES)}")
    progress_lib.check(progress)
    folder = out if isinstance(out, folder_lib.Folder) or out is None else folder_lib.Folder(out, plots=plots)
    stored = None
    shard = _check_shard(shard, folder)
    if not compute and folder is None:
        raise InputError("compute=False needs out=: the table is assembled from its chunk files")
    if checkpoint_every is not None and (
        isinstance(checkpoint_every, bool)
        or not isinstance(checkpoint_every, (int, float, np.number))
        or not checkpoint_every >= 0
    ):
        raise InputError(
            f"checkpoint_every={checkpoint_every!r} is invalid: expected seconds >= 0 (0: after every "
            "segment) or None (never)"
        )
    # A resume, a job array's worker and a report read the chunks the folder holds.
    reads = resume or shard is not None or not compute
    if folder is not None:
        definition = schema_lib.definition_of(spec, grid, strategy, chunk_size, epochs)
        stored = folder.check(definition, resume=reads, overwrite=overwrite, shard=shard)
        if stored is not None:  # resume in the folder's order and chunking: its chunk files are those
            grid, chunk_size = _reordered(grid, stored["grid"]), stored.get("sweep", {}).get("chunk_size")
    configs = grid.configs(spec)
    families = grid.families(spec)
    dataset = train_lib.load_dataset(spec.dataset, spec.dataset_options)
    model = train_lib.get_model(spec, dataset)  # bad model options raise here, before anything is written
    train_lib.check_model_fits(spec, dataset)
    params, _ = jax.eval_shape(model.init, jax.random.key(0), dataset.x_train[:1])
    num_examples = int(dataset.x_train.shape[0])
    too_big = configs["batch_size"][configs["batch_size"] > num_examples]
    if len(too_big):
        raise InputError(
            f"batch_size={int(too_big.iloc[0])} is larger than the training set ({num_examples} examples)"
        )
    steps = np.array([budget_steps(spec, int(b), epochs, num_examples) for b in configs["batch_size"]])
    if steps.max() >= 2**31:
        raise InputError(
            f"epochs={epochs!r} is invalid: it makes {int(steps.max()):,} steps, expected fewer than 2**31"
        )
    check_size(len(configs), int(-(-steps.max() // spec.eval_every)))
    groups, chosen = plan(spec, configs, steps, strategy, families)
    _check_hparams(configs, groups, params)
    measured = _check_measurements(spec, groups, configs)
    definition = schema_lib.definition_of(spec, grid, strategy, chunk_size, epochs)
    devices = tuple(devices or jax.devices())
    _check_data_parallel(data_parallel, len(devices), configs["batch_size"])
    config_devices = devices[:: int(data_parallel)]  # one per position of the config axis
    # Configs per chunk of each group. A resume, a shard and a report take the folder's own
    # (its chunk files are cut so, and a config's last bits depend on its chunk's width)
    # when this run's devices can hold them; a report computes nothing and always can.
    widths = (stored or {}).get("sweep", {}).get("chunk_widths")
    if not (widths and len(widths) == len(groups)):
        widths = None
    elif compute and any(w % len(config_devices) for w in widths):
        widths = None
    if widths is None:
        widths = []
        n_config = len(config_devices)
        for group in groups:
            if chunk_size is None:
                widths.append(default_chunk_size(group.spec, dataset, config_devices))
            else:  # a user's chunk size, cut to the group: never pad beyond the configs that exist
                n = len(group.config_ids)
                widths.append(min(round_up(chunk_size, n_config), round_up(n, n_config)))
    definition["sweep"]["chunk_widths"] = [int(w) for w in widths]

    # Several processes (jax.distributed): all compute, process 0 alone writes.
    writer = distributed_lib.is_writer()
    if jax.process_count() > 1:
        checkpoint_every = None  # orbax would need every process's shards: not supported yet
    if folder is not None:
        distributed_lib.barrier("jaxopt_lab: folder checked")  # before process 0 changes it
    if folder is not None and writer:
        # other workers' writes may be under way; else remove what a killed write left
        folder.prepare(definition, overwrite=overwrite, clean=shard is None and compute)
    if not writer:
        progress = False  # process 0 reports

    # what a chunk file holds
    chunk_columns = [
        "config_id",
        *(c for c in _METRICS if dataset.x_val is not None or c not in _VAL_METRICS),
        *measured,
        *(tables_lib.TARGET_COLUMNS if spec.target is not None else ()),
    ]
    bar = progress_lib.make(progress, int(steps.sum()), len(configs), len(groups))
    frames, missing = [], []
    k = -1  # the chunk's position in the sweep, which deals it to a shard
    try:
        for g, group in enumerate(groups):
            rows = configs.set_index("config_id").loc[list(group.config_ids)].reset_index()
            size = widths[g]
            for c in range(math.ceil(len(rows) / size)):
                k += 1
                chunk = rows.iloc[c * size : (c + 1) * size]
                chunk_steps = steps[chunk["config_id"].to_numpy()]
                done = folder.read_chunk(g, c, chunk_columns) if folder is not None and reads else None
                if done is not None:
                    frames.append(done)
                    bar.advance(int(chunk_steps.sum()), len(chunk))
                    continue
                if not compute or (shard is not None and k % shard[1] != shard[0]):
                    missing.append((g, c))  # another worker's
                    continue
                # Pad with copies of the first config so the chunk's shape never changes.
                padded = pd.concat([chunk] + [chunk.iloc[:1]] * (size - len(chunk)), ignore_index=True)
                checkpoint = None
                if folder is not None and checkpoint_every is not None:  # a fresh sweep continues nothing
                    checkpoint = folder.checkpoint(g, c, checkpoint_every, fresh=not reads)
                frame = run_chunk(
                    group,
                    padded,
                    steps[padded["config_id"].to_numpy()],
                    len(chunk),
                    spec.eval_every,
                    devices,
                    bar.advance,
                    checkpoint,
                    int(data_parallel),
                )
                bar.advance(0, len(chunk))
                if folder is not None and writer:
                    folder.write_chunk(g, c, frame)
                if checkpoint is not None:
                    checkpoint.remove()  # the chunk's file holds its rows now
                frames.append(frame)
            bar.group_done(g, group)
    finally:
        bar.close()
    if missing and folder is not None:  # the other workers may have finished meanwhile
        found = {gc: folder.read_chunk(*gc, chunk_columns) for gc in missing}
        frames += [f for f in found.values() if f is not None]
        missing = [gc for gc, f in found.items() if f is None]
    metrics = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=chunk_columns)
    table = _assemble(configs, metrics, grid, spec)
    if missing:
        names = tuple(folder_lib.chunk_file_name(g, c) for g, c in missing)
        return SweepResult(table=table, definition=definition, strategy=chosen, missing=names)
    if folder is not None and writer:
        folder.finish(table, definition)
    return SweepResult(table=table, definition=definition, strategy=chosen)


def _check_measurements(spec, groups, configs: pd.DataFrame) -> tuple[str, ...]:
    """The measurements' columns; raises, before anything is written, for a measurement or
    a target that one of the groups cannot run (each group's spec is checked)."""
    if any(m.uses_small_batch for m in spec.measure) and int(configs["batch_size"].min()) < 2:
        name = next(m.label() for m in spec.measure if m.uses_small_batch)
        raise InputError(
            f"measure {name!r} is invalid for batch_size={int(configs['batch_size'].min())}: its running "
            "estimate splits each batch in two, expected batch_size >= 2"
        )
    for group in groups:
        measurement_columns_of(group.spec)
    return measurement_columns_of(spec)


def _check_data_parallel(data_parallel, num_devices: int, batch_sizes) -> None:
    if (
        isinstance(data_parallel, bool)
        or not isinstance(data_parallel, (int, np.integer))
        or data_parallel < 1
    ):
        raise InputError(f"data_parallel={data_parallel!r} is invalid: expected a positive integer")
    if num_devices % data_parallel:
        divisors = [d for d in range(1, num_devices + 1) if num_devices % d == 0]
        raise InputError(
            f"data_parallel={data_parallel} is invalid for {num_devices} devices: expected one of "
            f"{', '.join(map(str, divisors))}"
        )
    uneven = sorted({int(b) for b in batch_sizes if int(b) % data_parallel})
    if uneven:
        raise InputError(
            f"data_parallel={data_parallel} is invalid for batch_size={uneven[0]}: expected a divisor "
            "of every batch size (each device takes an equal share of a batch)"
        )


def _check_shard(shard, folder) -> tuple[int, int] | None:
    if shard is None:
        return None
    try:
        index, count = (int(v) for v in shard)
        valid = (index, count) == tuple(shard) and 0 <= index < count
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise InputError(f"shard={shard!r} is invalid: expected (index, count) with 0 <= index < count")
    if folder is None:
        raise InputError(f"shard={shard!r} needs out=: the workers of a job array meet in one folder")
    return index, count


def _check_hparams(configs: pd.DataFrame, groups, params) -> None:
    """Check each group's family before anything runs: its flags, each distinct setting
    built from Python numbers (so the transforms' own checks raise here; inside the
    sweep the values are traced arrays, which cannot be checked), and one update
    traced with every hyperparameter traced (so a factory that branches in Python on
    one is named here, not by a tracer error in the middle of a sweep)."""
    by_id = configs.set_index("config_id")
    for group in groups:
        family = optimizers_lib.resolve(group.spec.optimizer)
        flags = dict(group.spec.optimizer_flags)  # family.build checks them
        defaults = train_lib.default_hparams(family, group.spec.schedule)
        rows = by_id.loc[list(group.config_ids)]
        names = [c for c in defaults if c in rows.columns]
        for cfg in rows[names].drop_duplicates().to_dict("records"):
            hp = {**defaults, **{k: v for k, v in cfg.items() if pd.notna(v)}}
            family.build({k: float(hp[k]) for k in family.hparam_names}, flags)
            if not 0 <= hp["bn_momentum"] < 1:
                raise InputError(
                    f"bn_momentum={hp['bn_momentum']!r} is invalid: expected 0 <= bn_momentum < 1"
                )
            if not 0 <= hp["label_smoothing"] < 1:
                raise InputError(
                    f"label_smoothing={hp['label_smoothing']!r} is invalid: expected 0 <= label_smoothing < 1"
                )
            if not hp["weight_decay"] >= 0:
                raise InputError(
                    f"weight_decay={hp['weight_decay']!r} is invalid: expected weight_decay >= 0"
                )
        optimizers_lib.check_traceable(family, flags, params)


def _assemble(configs, metrics, grid, spec) -> pd.DataFrame:
    swept = [c for c in configs.columns if c not in ("config_id",) + _FIRST_COLUMNS]
    columns = ["config_id", *_FIRST_COLUMNS, *swept]
    table = metrics.merge(configs[columns], on="config_id", how="left")
    table = table[columns + [c for c in metrics.columns if c not in ("config_id",) + _FIRST_COLUMNS]]
    table = table.sort_values(["config_id", "step"], kind="stable").reset_index(drop=True)
    return table.astype(
        {"config_id": np.int64, "batch_size": np.int64, "seed": np.int64, "learning_rate": np.float64}
    )
