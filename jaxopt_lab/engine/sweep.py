"""Sweeps: a grid of training runs as a few compiled, vmapped, sharded programs.

A :class:`Grid` is the cartesian product of its axes. :func:`sweep` splits the
axes into *static* ones, which select a compiled group (the optimizer family
and its flags, the learning-rate schedule, reduction, learning-rate rule, and
the batch size under the ``bucket`` strategy), and *dynamic* ones, which are
stacked along a leading config axis and vmapped (learning rate, seed, the
families' traced hyperparameters, the schedule's parameters, weight decay,
label smoothing, batch-norm momentum, and the batch size under the ``mask``
strategy).

Each group runs in chunks of a fixed number of configs, a width that depends on
the config alone (the last chunk padded), so a group compiles once and a
config's numbers do not depend on how many configs share the sweep; a chunk's
config axis is sharded over every visible
device along a mesh axis named ``config``. A chunk advances in segments of
``eval_every`` steps; the host wakes only between segments to report progress.
Each finished chunk is written to the output folder, so an interrupted sweep
resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxopt_lab.analysis import tables as tables_lib
from jaxopt_lab.engine import distributed as distributed_lib
from jaxopt_lab.engine import train as train_lib
from jaxopt_lab.errors import InputError
from jaxopt_lab.optim import families as optimizers_lib
from jaxopt_lab.optim import schedules as schedules_lib
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

STRATEGIES = ("auto", "bucket", "mask")
STATIC_AXES = ("optimizer", "schedule", "batch_size", "reduction", "lr_rule", "base_batch_size")
DYNAMIC_AXES = (
    "learning_rate",
    "seed",
    "beta",
    "b1",
    "b2",
    "eps",
    "eps_root",
    "decay",
    "weight_decay",
    "label_smoothing",
    "bn_momentum",
    *schedules_lib.PARAMS,
)
_FIRST_COLUMNS = ("optimizer", "learning_rate", "batch_size", "seed")
_METRICS = tables_lib.METRIC_COLUMNS
_VAL_METRICS = ("val_loss", "val_accuracy")  # only for a dataset with a validation set
# A compile costs about as much as this many example-steps of arithmetic on a small
# model; `auto` weighs it against the rows the `mask` strategy computes and throws away.
_COMPILE_EXAMPLE_STEPS = 200_000
_DEFAULT_MEMORY_BUDGET = 2 << 30
# On a CPU with one device, the step's working set (parameters, moments, gradients,
# activations) that a chunk may take: with more, the benchmark's vmapped MLP step ran
# slower per config on 2 cores with 2 MiB of L2 each; with much less, XLA's threads had
# too little work per operation (experiments/PERF.md).
_CPU_CHUNK_BYTES = 16 << 20
# On a CPU split into one device per core, configs per device: with 1, XLA drops the
# size-1 config axis and spreads each matmul over threads that the other devices need
# (1.1-1.7x slower); with 4 or 8, 3-13% slower per config than with 2 (experiments/PERF.md).
_CPU_CONFIGS_PER_DEVICE = 2
# On one CPU device, the most configs per chunk, however many fit the cache budget: on
# the benchmark's MLP (256, 256), Adam, batch 64, 2 cores, widths 2/4/8/16/32 ran
# 4027/4390/4557/4257/3756 config-steps/s; a small model fits far more, and a small
# group would pad to them (experiments/PERF.md).
_CPU_MAX_CONFIGS = 8
# On an accelerator, the most configs per device: a wider program is not faster once
# the device is busy, and a small sweep pads its chunk to this width.
_ACCELERATOR_MAX_CONFIGS_PER_DEVICE = 256


def _choices(names) -> str:
    return ", ".join(map(repr, names))


# What the host holds per config before and after it runs: its row in the plan (a
# pandas row of Python objects, grouping) and a row of the results table per
# evaluation point. Generous round numbers: the check is there to refuse sweeps
# that cannot fit by orders of magnitude, before they start.
_HOST_BYTES_PER_CONFIG = 4096
_HOST_BYTES_PER_ROW = 256


def _host_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return 8 << 30


def check_size(num_configs: int, points_per_config: int = 1) -> None:
    """Refuse a sweep whose tables cannot fit half of this machine's memory.

    Raises:
      InputError: naming the number of configs and evaluation points, the
        estimate and the machine's memory.
    """
    need = num_configs * (_HOST_BYTES_PER_CONFIG + points_per_config * _HOST_BYTES_PER_ROW)
    have = _host_memory_bytes()
    if need > have // 2:
        raise InputError(
            f"the sweep is too large for this machine: {num_configs:,} configs x {points_per_config:,} "
            f"evaluation points need about {need / 2**30:,.1f} GiB of host memory for their tables, "
            f"more than half of its {have / 2**30:,.1f} GiB: expected fewer configs or a larger eval_every"
        )


class Grid:
    """The cartesian product of hyperparameter axes.

    Example:
      >>> grid = Grid(optimizer=["sgd", "adam"], learning_rate=[1e-3, 1e-2], seed=[0, 1])
      >>> len(grid.configs())
      8

    Axes that an optimizer does not take (``b1`` for SGD) are left empty for
    that optimizer's configs, and the duplicates this makes are dropped.
    """

    def __init__(self, **axes: Sequence[Any]):
        for name, values in axes.items():
            if isinstance(values, (str, bytes, optimizers_lib.Optimizer)) or not isinstance(values, Sequence):
                values = [values]
            if len(values) == 0:
                raise InputError(f"grid axis {name!r} is empty: give it at least one value")
            axes[name] = tuple(values)
        self.axes: dict[str, tuple] = dict(axes)
        # Without an optimizer axis the family is the spec's, known to `configs(spec)`: an
        # axis no registered family takes may be its own, and is checked there.
        families = [optimizers_lib.resolve(v) for v in axes.get("optimizer", ())]
        self._check(families, unknown_allowed="optimizer" not in axes)

    def _check(self, families, unknown_allowed: bool = False) -> None:
        """Check every axis name and value against the registry's families and ``families``."""
        axes = self.axes
        traced, static = _family_axes([*optimizers_lib.REGISTRY.values(), *families])
        valid = STATIC_AXES + DYNAMIC_AXES + tuple(sorted(traced - set(DYNAMIC_AXES))) + tuple(sorted(static))
        for name in axes:
            if name not in valid and not unknown_allowed:
                raise InputError(
                    f"grid axis {name!r} is invalid: expected one of {_choices(valid)} (or a "
                    "hyperparameter of the sweep's own Optimizer family)"
                )
        # Every numeric value is checked here, where it enters: a NaN would otherwise read
        # as "not given" further on and run with the default.
        for name in sorted(set(DYNAMIC_AXES) | traced) + ["batch_size", "base_batch_size"]:
            for value in axes.get(name, ()):
                if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                    raise InputError(f"{name}={value!r} is invalid: expected a number")
                if not math.isfinite(value):
                    raise InputError(f"{name}={value!r} is invalid: expected a finite number")
        for name in sorted(static):
            for value in axes.get(name, ()):
                try:
                    hash(value)
                except TypeError:
                    raise InputError(
                        f"{name}={value!r} is invalid: a static value selects a compiled "
                        "group and must be hashable"
                    ) from None
        for name in ("learning_rate", "batch_size", "base_batch_size"):
            for value in axes.get(name, ()):
                if not value > 0:
                    raise InputError(f"{name}={value!r} is invalid: expected a positive number")
        for name in ("batch_size", "base_batch_size", "seed"):
            for value in axes.get(name, ()):
                if int(value) != value:
                    raise InputError(f"{name}={value!r} is invalid: expected an integer")
        for value in axes.get("seed", ()):
            if not 0 <= value < 2**32:
                raise InputError(f"seed={value!r} is invalid: expected an integer in [0, 2**32)")
        for value in axes.get("schedule", ()):
            schedules_lib.params_of(value)  # a known name
        for name in schedules_lib.PARAMS:
            for value in axes.get(name, ()):
                schedules_lib.check_params({name: value})

    def __repr__(self) -> str:
        return f"Grid({', '.join(f'{k}={list(v)!r}' for k, v in self.axes.items())})"

    def families(self, spec: train_lib.TrainSpec | None = None) -> dict[str, optimizers_lib.Optimizer]:
        """The optimizer families of the grid (or of ``spec`` when the grid has none) by name."""
        spec = spec or train_lib.TrainSpec()
        out = {}
        for value in self.axes.get("optimizer", (spec.optimizer,)):
            family = optimizers_lib.resolve(value)
            if out.get(family.name, family) != family:
                raise InputError(
                    f"optimizer name {family.name!r} is given to two different families: "
                    "expected distinct names (Optimizer(..., name=...))"
                )
            out[family.name] = family
        return out

    def configs(self, spec: train_lib.TrainSpec | None = None) -> pd.DataFrame:
        """One row per config, with every static and dynamic value filled in.

        The ``optimizer`` column holds the families' names; a family's own static
        keywords (``nesterov``, ...) are columns too, empty for families without them.
        """
        spec = spec or train_lib.TrainSpec()
        families = self.families(spec)
        self._check(list(families.values()))
        axes = {"optimizer": tuple(families), **{k: v for k, v in self.axes.items() if k != "optimizer"}}
        check_size(math.prod(len(v) for v in axes.values()))
        traced, static = _family_axes(families.values())
        traced = (set(DYNAMIC_AXES) | traced) - {"seed"}
        names = list(axes)
        rows = []
        seen = set()
        for values in itertools.product(*axes.values()):
            cfg = dict(zip(names, values, strict=True))
            family = families[cfg["optimizer"]]
            hp = train_lib.default_hparams(family, cfg.get("schedule", spec.schedule))
            row = {}
            for name in names:
                if (name in traced and name not in hp) or (
                    name in static and name not in family.static_defaults
                ):
                    row[name] = None  # not a hyperparameter of this optimizer
                else:
                    row[name] = cfg[name]
            frozen = tuple(row.items())
            if frozen not in seen:
                seen.add(frozen)
                rows.append(row)
        table = pd.DataFrame(rows, columns=names)
        for name, default in (("learning_rate", None), ("batch_size", spec.batch_size), ("seed", 0)):
            if name not in table:
                table[name] = default
        if table["learning_rate"].isna().all():
            table["learning_rate"] = [families[o].defaults["learning_rate"] for o in table["optimizer"]]
        table.insert(0, "config_id", np.arange(len(table)))
        return table


def _family_axes(families) -> tuple[set[str], set[str]]:
    """The traced and the static keyword names of ``families``."""
    traced, static = set(), set()
    for family in families:
        traced |= set(family.hparam_names)
        static |= set(family.static_defaults)
    return traced, static


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


@dataclasses.dataclass(frozen=True)
class _Group:
    spec: train_lib.TrainSpec  # batch_size is the group's largest under `mask`
    dynamic_batch: bool
    config_ids: tuple[int, ...]
    omitted: tuple[str, ...] = ()  # zero for every config: the program leaves them out


def _budget_steps(spec, batch_size: int, epochs: float | None, num_examples: int) -> int:
    if epochs is None:
        return spec.steps
    return max(1, int(round(epochs * (num_examples // batch_size))))


def _static_columns(configs: pd.DataFrame, families) -> list[str]:
    """The columns that select a compiled group: the spec's static axes and the families' flags."""
    _, flags = _family_axes(families)
    return [
        c
        for c in ("optimizer", "schedule", "reduction", "lr_rule", "base_batch_size", *sorted(flags))
        if c in configs
    ]


def _choose_strategy(spec, configs: pd.DataFrame, steps: np.ndarray, static: list[str]) -> str:
    """Pick ``bucket`` or ``mask`` by the arithmetic each would do, compiles included."""
    if not isinstance(spec.model, str):
        return "bucket"  # a flax module cannot be told which rows are padding
    bucket_groups = configs.groupby(static + ["batch_size"], dropna=False).ngroups
    mask_groups = configs.groupby(static, dropna=False).ngroups
    bucket = float(np.sum(configs["batch_size"].to_numpy() * steps))
    mask = 0.0
    for _, rows in configs.groupby(static, dropna=False):
        mask += len(rows) * rows["batch_size"].max() * steps[rows.index].max()
    bucket += bucket_groups * _COMPILE_EXAMPLE_STEPS
    mask += mask_groups * _COMPILE_EXAMPLE_STEPS
    return "mask" if mask < bucket else "bucket"


def plan(spec: train_lib.TrainSpec, configs: pd.DataFrame, steps: np.ndarray, strategy: str, families=None):
    """Split configs into compiled groups; returns ``(groups, strategy)``.

    ``families`` maps the ``optimizer`` column's names to their :class:`Optimizer`
    (default: the registry's).
    """
    if strategy not in STRATEGIES:
        raise InputError(f"strategy={strategy!r} is invalid: expected one of {_choices(STRATEGIES)}")
    families = families or {n: optimizers_lib.resolve(n) for n in configs["optimizer"].unique()}
    static = _static_columns(configs, families.values())
    if strategy == "auto":
        strategy = _choose_strategy(spec, configs, steps, static)
    keys = static + (["batch_size"] if strategy == "bucket" else [])
    _, flag_names = _family_axes(families.values())
    groups = []
    for values, rows in configs.groupby(keys, sort=False, dropna=False):
        fields = dict(zip(keys, values, strict=True))
        family = families[fields["optimizer"]]
        flags = {**dict(spec.optimizer_flags)}
        for name in flag_names & set(fields):  # a flag swept as a grid axis: this group's value
            value = fields.pop(name)
            if name in family.static_defaults:
                flags[name] = value.item() if isinstance(value, np.generic) else value
        fields["optimizer"] = family
        fields["optimizer_flags"] = tuple(sorted(flags.items()))
        fields["batch_size"] = int(rows["batch_size"].max())
        fields["steps"] = int(steps[rows.index].max())
        for name in ("base_batch_size",):
            if name in fields:
                fields[name] = int(fields[name])
        group_spec = dataclasses.replace(spec, **fields)
        omitted = tuple(
            name
            for name in train_lib.omitted_when_zero(family)
            if not (name in rows and bool((rows[name].fillna(0) != 0).any()))
        )
        groups.append(_Group(group_spec, strategy == "mask", tuple(rows["config_id"]), omitted))
    return groups, strategy


def _model_sizes(spec: train_lib.TrainSpec, dataset) -> tuple[int, int, int]:
    """``(parameters, intermediates, layer outputs)`` of the spec's model, the last
    two per example, read off the jaxpr of its forward pass on one example.

    Intermediates count every operation's output (an upper bound on memory);
    layer outputs count only those of matmuls and convolutions, which is what a
    fused step keeps for its backward pass.
    """
    model = train_lib.get_model(spec, dataset)
    x1 = dataset.x_train[:1]
    params, state = jax.eval_shape(model.init, jax.random.key(0), x1)
    num_params = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    jaxpr = jax.make_jaxpr(lambda p, s, x: model.apply(p, s, x, train=True))(params, state, x1)
    every = sum(_out_size(eqn) for eqn in jaxpr.eqns)
    layers = sum(
        _out_size(eqn)
        for eqn in _all_eqns(jaxpr.jaxpr)
        if eqn.primitive.name in ("dot_general", "conv_general_dilated")
    )
    return num_params, every, layers


def _out_size(eqn) -> int:
    return sum(math.prod(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))


def _all_eqns(jaxpr):
    """The equations of a jaxpr and of the jaxprs nested in them (e.g. a jitted matmul)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _all_eqns(sub)


def _per_config_bytes(spec: train_lib.TrainSpec, dataset) -> int:
    """Device memory for one config: parameters and moments, plus the activations
    of a step and of an evaluation."""
    num_params, act, _ = _model_sizes(spec, dataset)
    examples = 3 * spec.batch_size + dataset.x_test.shape[0]
    return 4 * (6 * num_params + examples * act)


def _step_bytes(spec: train_lib.TrainSpec, dataset) -> int:
    """What one config's training step streams through: parameters, two moments and
    the gradient, and each layer's output before and after its activation with their
    gradients."""
    num_params, _, layers = _model_sizes(spec, dataset)
    return 4 * (4 * num_params + 4 * spec.batch_size * layers)


def _default_chunk_size(spec, dataset, devices: Sequence[jax.Device]) -> int:
    """Configs per compiled call, a multiple of the device count, from the config alone.

    A config's numbers depend on how many configs share its device's vmapped
    program (XLA blocks a batched matmul differently by width: a last-bit
    difference that adaptive optimizers with batch norm amplify), and on nothing
    else: not on its position in the chunk nor on its neighbours' values. So the
    width is a function of the spec, the data and the devices, never of how many
    configs a sweep holds, and adding configs to a sweep does not change the
    numbers of those already in it; a small group pads its chunk to the width.

    On a CPU split into several devices (one per core), ``_CPU_CONFIGS_PER_DEVICE``
    per device (measured in ``experiments/PERF.md``). On a CPU device that has
    the cores to itself, as many as keep the chunk's step inside
    ``_CPU_CHUNK_BYTES``, at most ``_CPU_MAX_CONFIGS``: past that the vmapped step
    spills out of the caches and runs slower per config. On an accelerator, as many as fit half of one
    device's memory, at most ``_ACCELERATOR_MAX_CONFIGS_PER_DEVICE``.
    """
    device, num_devices = devices[0], len(devices)
    if device.platform == "cpu" and num_devices > 1:
        return _CPU_CONFIGS_PER_DEVICE * num_devices
    if device.platform == "cpu":
        return max(1, min(_CPU_MAX_CONFIGS, _CPU_CHUNK_BYTES // max(1, _step_bytes(spec, dataset))))
    budget = _DEFAULT_MEMORY_BUDGET
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        budget = stats["bytes_limit"] // 2
    per_device = budget // max(1, _per_config_bytes(spec, dataset))  # the budget is one device's
    return max(1, min(per_device, _ACCELERATOR_MAX_CONFIGS_PER_DEVICE)) * num_devices


def clear_caches() -> None:
    """Forget the compiled programs of the groups run so far, with the dataset copies they
    hold on the devices, and the measurements' column lists."""
    _programs.cache_clear()
    _measurement_columns.cache_clear()


def one_device_per_cpu_core(environ=os.environ) -> None:
    """Split a CPU into one XLA device per core, so a sweep shards its configs over
    the cores as it does over accelerators (1.6x the rate of one CPU device in
    ``experiments/PERF.md``).

    Call it before JAX starts its backend (importing jax or jaxopt_lab does not
    start it; the first computation or ``jax.devices()`` does). A device count
    already set in ``XLA_FLAGS`` is kept. On an accelerator it only adds host
    devices, which sweeps do not use.
    """
    flags = environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        count = os.cpu_count() or 1
        environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _replays(devices) -> bool:
    """Whether segments run fast and unfrozen, replaying one in which a config diverged
    (a CPU: the select that freezes a diverged config costs up to a fifth of a small step),
    or frozen with the state donated (an accelerator: a chunk's state may fill the device,
    and keeping a segment's input for a replay would double it)."""
    return devices[0].platform == "cpu"


@functools.lru_cache(maxsize=64)
def _programs(
    spec: train_lib.TrainSpec,
    dynamic_batch: bool,
    devices: tuple,
    replays: bool = True,
    data_parallel: int = 1,
):
    """The jitted init and segment programs of one group, sharded over ``devices``; with
    ``replays=False`` the segment donates its state and there is no replay program.

    The devices form a mesh ``(config, data)`` of shape ``(len(devices) // data_parallel,
    data_parallel)``: configs are split along ``config``, and each config's batch along
    ``data`` (its state is replicated there)."""
    dataset = train_lib.load_dataset(spec.dataset, spec.dataset_options)
    mesh = jax.sharding.Mesh(np.asarray(devices).reshape(-1, data_parallel), ("config", "data"))
    by_config = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("config"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    # Under vmap(spmd_axis_name="config") a config's batch, (B, ...), is laid out over "data".
    by_example = (
        jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")) if data_parallel > 1 else None
    )

    names = ("x_train", "y_train", "x_test", "y_test") + (
        ("x_val", "y_val") if dataset.x_val is not None else ()
    )

    def with_arrays(arrays):
        return dataset._replace(**dict(zip(names, arrays, strict=True)))

    def init(arrays, hparams, seed):  # the key made on the devices: host arrays only go in
        return train_lib.init_state(spec, with_arrays(arrays), hparams, jax.random.key(seed))

    def segment(arrays, hparams, state, start, num_steps, stop_step, interval_start, reset, *, freeze):
        return train_lib.run_segment(
            spec,
            with_arrays(arrays),
            hparams,
            state,
            start,
            num_steps,
            stop_step,
            axis_name="config",
            freeze=freeze,
            interval_start=interval_start,
            reset=reset,
            batch_sharding=by_example,
        )

    def vmapped(fn):
        return jax.vmap(
            fn, in_axes=(None, 0, 0, None, None, 0, 0, 0), axis_name="config", spmd_axis_name="config"
        )

    init_p = jax.jit(jax.vmap(init, in_axes=(None, 0, 0)), out_shardings=by_config)
    arrays = jax.device_put(tuple(getattr(dataset, name) for name in names), replicated)
    if not replays:  # every segment frozen at a config's first non-finite loss; state donated
        segment_p = jax.jit(
            vmapped(functools.partial(segment, freeze=True)),
            out_shardings=(by_config, by_config),
            donate_argnums=(2,),
        )
        return init_p, segment_p, None, arrays, by_config
    # The fast segment keeps its input state, from which a segment where a config
    # diverged is replayed; the replay (compiled only if one is needed) can donate it.
    segment_p = jax.jit(
        vmapped(functools.partial(segment, freeze=False)), out_shardings=(by_config, by_config)
    )
    replay_p = jax.jit(
        vmapped(functools.partial(segment, freeze=True)),
        out_shardings=(by_config, by_config),
        donate_argnums=(2,),
    )
    return init_p, segment_p, replay_p, arrays, by_config


def _to_host(tree):
    """NumPy copies of ``tree``'s arrays; a config axis spread over several processes is
    gathered from all of them first (every process gets every config's metrics)."""
    if all(getattr(x, "is_fully_addressable", True) for x in jax.tree.leaves(tree)):
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def _where(rows, a, b):
    return np.where(rows, a, b)


@jax.jit
def _take_rows(rows, a, b):
    """The configs (leading axis) of ``a`` where ``rows``, of ``b`` elsewhere."""

    def take(x, y):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return y  # data keys never change inside a segment
        return jnp.where(rows.reshape(rows.shape + (1,) * (x.ndim - 1)), x, y)

    return jax.tree.map(take, a, b)


def _run_chunk(
    group: _Group,
    configs: pd.DataFrame,
    stop_steps: np.ndarray,
    num_real: int,
    eval_every: int,
    devices: tuple,
    on_segment,
    checkpoint=None,
    data_parallel: int = 1,
) -> pd.DataFrame:
    """Train one chunk of configs of a group; returns the rows of its first ``num_real`` configs.

    ``on_segment(config_steps, 0)`` is called after each segment with the
    optimizer steps the real configs took in it. With a
    :class:`~jaxopt_lab.outputs.checkpoints.ChunkCheckpoint`, the chunk starts from its latest
    checkpoint, if any, and saves one between segments as often as it asks.
    """
    spec = group.spec
    init_p, segment_p, replay_p, arrays, by_config = _programs(
        spec, group.dynamic_batch, devices, _replays(devices), data_parallel
    )
    hparams = {}
    for name, default in train_lib.default_hparams(spec.optimizer, spec.schedule).items():
        column = configs[name] if name in configs else pd.Series([default] * len(configs))
        values = column.astype(np.float64).to_numpy()
        # None: a decay that ends with the config's own run
        fill = stop_steps if default is None else default
        hparams[name] = np.where(np.isnan(values), fill, values).astype(np.float32)
    for name in group.omitted:
        del hparams[name]
    if group.dynamic_batch:
        hparams["batch_size"] = configs["batch_size"].to_numpy(np.int32)
    seeds = configs["seed"].to_numpy(np.uint32)
    host_hparams = hparams
    hparams, seeds, stops = jax.device_put((hparams, seeds, np.asarray(stop_steps, np.int32)), by_config)
    state = init_p(arrays, hparams, seeds)

    has_val = train_lib.load_dataset(spec.dataset, spec.dataset_options).x_val is not None
    measured = _measurement_columns(spec)
    per_config_points = [set(train_lib.eval_steps(int(s), eval_every, spec.eval_growth)) for s in stop_steps]
    boundaries = sorted(set().union(*per_config_points))
    batch_sizes = configs["batch_size"].to_numpy(np.int64)
    frames = []
    start = 0
    diverged = np.zeros(len(configs), bool)
    # A chunk stops at every config's evaluation points; a config's training loss is
    # averaged over its own interval, which may span several of those segments.
    interval_start = np.zeros(len(configs), np.int32)
    reached = np.zeros(len(configs), bool)  # rows end at a config's target
    restored = checkpoint.restore(state) if checkpoint is not None else None
    if restored is not None:  # continue where the last checkpoint left the chunk
        state, meta, rows = restored
        start, frames = int(meta["start"]), [rows]
        diverged = np.asarray(meta["diverged"], bool)
        interval_start = np.asarray(meta["interval_start"], np.int32)
        reached = np.asarray(meta.get("reached", reached), bool)
        on_segment(int(np.clip(np.minimum(start, stop_steps[:num_real]), 0, None).sum()), 0)
    for end in boundaries:
        if end <= start:
            continue
        if np.all(reached | diverged | (start >= stop_steps)):
            # Every config reached its target, diverged or finished: the chunk ends early,
            # and its steps not run count as done.
            on_segment(int(np.clip(stop_steps[:num_real] - start, 0, None).sum()), 0)
            break
        keep = np.array([end in points for points in per_config_points])
        intervals = jax.device_put((interval_start, keep), by_config)
        args = (arrays, hparams, state, np.int32(start), np.int32(end - start), stops, *intervals)
        new_state, metrics = segment_p(*args)
        metrics = _to_host(metrics)
        newly = np.asarray(metrics.diverged) & ~diverged
        if newly.any() and replay_p is not None:
            # A config diverged inside the segment: run it again, freezing each config
            # at its first non-finite loss, and take from that run only the configs that
            # diverged, so the others' numbers do not depend on their neighbours.
            replayed, replay_metrics = replay_p(*args)
            new_state = _take_rows(newly, replayed, new_state)
            metrics = jax.tree.map(functools.partial(_where, newly), _to_host(replay_metrics), metrics)
        state, diverged = new_state, np.asarray(metrics.diverged)
        on_segment(int(np.clip(np.minimum(end, stop_steps[:num_real]) - start, 0, None).sum()), 0)
        interval_start = np.where(keep, end, interval_start).astype(np.int32)
        keep &= ~reached  # a config that reached its target has no later rows
        reached = np.asarray(metrics.reached, bool)
        keep[num_real:] = False
        frames.append(
            pd.DataFrame(
                {
                    "config_id": configs["config_id"].to_numpy()[keep],
                    "step": np.full(keep.sum(), end, np.int64),
                    "examples_seen": end * batch_sizes[keep],
                    "train_loss": metrics.train_loss[keep].astype(np.float64),
                    "test_loss": metrics.test_loss[keep].astype(np.float64),
                    "test_accuracy": metrics.test_accuracy[keep].astype(np.float64),
                    "diverged": metrics.diverged[keep].astype(bool),
                    "applied_lr": metrics.applied_lr[keep].astype(np.float64),
                    **(
                        {
                            "val_loss": metrics.val_loss[keep].astype(np.float64),
                            "val_accuracy": metrics.val_accuracy[keep].astype(np.float64),
                        }
                        if has_val
                        else {}
                    ),
                    **{name: metrics.measured[name][keep].astype(np.float64) for name in measured},
                    "_reached": reached[keep],
                }
            )
        )
        start = end
        if checkpoint is not None and end < boundaries[-1]:
            meta = {
                "start": end,
                "diverged": diverged.tolist(),
                "interval_start": interval_start.tolist(),
                "reached": reached.tolist(),
            }
            checkpoint.maybe_save(end, state, meta, pd.concat(frames, ignore_index=True))
    if start < boundaries[-1]:  # ended early: the diverged configs' NaN rows to their end
        frames += _diverged_rows(
            spec, configs.iloc[:num_real], host_hparams, per_config_points, start, diverged
        )
    frame = pd.concat(frames, ignore_index=True)
    if spec.target is not None:
        frame = _with_steps_to_target(frame, spec.target)
    return frame.drop(columns="_reached")


def _diverged_rows(spec, configs: pd.DataFrame, hparams, per_config_points, start: int, diverged) -> list:
    """The rows a chunk that ended at step ``start`` did not compute for its diverged configs:
    their later evaluation points, with NaN metrics, as a segment would give them (one
    frame per config that has such points)."""
    frames = []
    for i, (config_id, batch_size) in enumerate(
        zip(configs["config_id"], configs["batch_size"], strict=True)
    ):
        steps = np.array(sorted(p for p in per_config_points[i] if p > start), np.int64)
        if not diverged[i] or not len(steps):
            continue
        hp = {k: v[i] for k, v in hparams.items()}
        lr = train_lib.learning_rate_at(spec, hp, hp.get("batch_size", spec.batch_size), steps - 1)
        frames.append(
            pd.DataFrame(
                {
                    "config_id": config_id,
                    "step": steps,
                    "examples_seen": steps * int(batch_size),
                    "diverged": True,
                    "applied_lr": np.broadcast_to(np.asarray(lr, np.float32), steps.shape).astype(np.float64),
                    "_reached": False,
                }
            )
        )
    return frames


def _with_steps_to_target(frame: pd.DataFrame, target: train_lib.Target) -> pd.DataFrame:
    """``frame`` with ``steps_to_target`` and ``examples_to_target``: per config, its first
    row that reached the target (``_reached``), or between it and the row before
    (linear in the metric) with ``target.interpolate``; NaN where none did."""
    frame = frame.sort_values(["config_id", "step"], kind="stable").reset_index(drop=True)
    steps = pd.Series(np.nan, index=frame.index)
    examples = pd.Series(np.nan, index=frame.index)
    for _, rows in frame.groupby("config_id", sort=False):
        hit = np.flatnonzero(rows["_reached"].to_numpy())
        if not len(hit):
            continue
        i = hit[0]
        step, seen = float(rows["step"].iloc[i]), float(rows["examples_seen"].iloc[i])
        if target.interpolate and i > 0:
            before, at = rows[target.metric].iloc[i - 1], rows[target.metric].iloc[i]
            if np.isfinite(before) and before != at:
                fraction = (before - target.value) / (before - at)  # in (0, 1]: `before` missed it
                step0, seen0 = float(rows["step"].iloc[i - 1]), float(rows["examples_seen"].iloc[i - 1])
                step, seen = step0 + fraction * (step - step0), seen0 + fraction * (seen - seen0)
        steps[rows.index] = step
        examples[rows.index] = seen
    return frame.assign(steps_to_target=steps, examples_to_target=examples)


@functools.lru_cache(maxsize=64)
def _measurement_columns(spec: train_lib.TrainSpec) -> tuple[str, ...]:
    return train_lib.measurement_columns(spec, train_lib.load_dataset(spec.dataset, spec.dataset_options))


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
        ``{"train_loss": 0.5}`` or a :class:`~jaxopt_lab.engine.train.Target`): the table
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
    steps = np.array([_budget_steps(spec, int(b), epochs, num_examples) for b in configs["batch_size"]])
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
                widths.append(_default_chunk_size(group.spec, dataset, config_devices))
            else:  # a user's chunk size, cut to the group: never pad beyond the configs that exist
                n = len(group.config_ids)
                widths.append(min(_round_up(chunk_size, n_config), _round_up(n, n_config)))
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
                frame = _run_chunk(
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
        _measurement_columns(group.spec)
    return _measurement_columns(spec)


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
