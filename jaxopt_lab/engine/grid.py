"""Grids and plans: the configs of a sweep and the compiled groups they run in.

A :class:`Grid` is the cartesian product of its axes. Its *static* axes (the
optimizer family and its flags, the learning-rate schedule, reduction,
learning-rate rule, and the batch size under the ``bucket`` strategy) select a
compiled group; its *dynamic* ones (learning rate, seed, the families' traced
hyperparameters, the schedule's parameters, weight decay, label smoothing,
batch-norm momentum, and the batch size under the ``mask`` strategy) are stacked
along a leading config axis and vmapped. :func:`plan` splits a grid's configs
into those groups (:class:`Group`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from jaxopt_lab.engine import spec as spec_lib
from jaxopt_lab.errors import InputError
from jaxopt_lab.optim import families as optimizers_lib
from jaxopt_lab.optim import schedules as schedules_lib

__all__ = [
    "STRATEGIES",
    "STATIC_AXES",
    "DYNAMIC_AXES",
    "Grid",
    "Group",
    "check_size",
    "plan",
    "budget_steps",
    "family_axes",
]


def _choices(names) -> str:
    return ", ".join(map(repr, names))


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
            if isinstance(values, np.ndarray) and values.ndim == 1:  # e.g. np.logspace(-4, -1, 7)
                values = list(values)
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
        traced, static = family_axes([*optimizers_lib.REGISTRY.values(), *families])
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

    def families(self, spec: spec_lib.TrainSpec | None = None) -> dict[str, optimizers_lib.Optimizer]:
        """The optimizer families of the grid (or of ``spec`` when the grid has none) by name."""
        spec = spec or spec_lib.TrainSpec()
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

    def configs(self, spec: spec_lib.TrainSpec | None = None) -> pd.DataFrame:
        """One row per config, with every static and dynamic value filled in.

        The ``optimizer`` column holds the families' names; a family's own static
        keywords (``nesterov``, ...) are columns too, empty for families without them.
        """
        spec = spec or spec_lib.TrainSpec()
        families = self.families(spec)
        self._check(list(families.values()))
        axes = {"optimizer": tuple(families), **{k: v for k, v in self.axes.items() if k != "optimizer"}}
        check_size(math.prod(len(v) for v in axes.values()))
        traced, static = family_axes(families.values())
        traced = (set(DYNAMIC_AXES) | traced) - {"seed"}
        names = list(axes)
        rows = []
        seen = set()
        for values in itertools.product(*axes.values()):
            cfg = dict(zip(names, values, strict=True))
            family = families[cfg["optimizer"]]
            hp = spec_lib.default_hparams(family, cfg.get("schedule", spec.schedule))
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


def family_axes(families) -> tuple[set[str], set[str]]:
    """The traced and the static keyword names of ``families``."""
    traced, static = set(), set()
    for family in families:
        traced |= set(family.hparam_names)
        static |= set(family.static_defaults)
    return traced, static


@dataclasses.dataclass(frozen=True)
class Group:
    spec: spec_lib.TrainSpec  # batch_size is the group's largest under `mask`
    dynamic_batch: bool
    config_ids: tuple[int, ...]
    omitted: tuple[str, ...] = ()  # zero for every config: the program leaves them out


def budget_steps(spec, batch_size: int, epochs: float | None, num_examples: int) -> int:
    if epochs is None:
        return spec.steps
    return max(1, int(round(epochs * (num_examples // batch_size))))


def _static_columns(configs: pd.DataFrame, families) -> list[str]:
    """The columns that select a compiled group: the spec's static axes and the families' flags."""
    _, flags = family_axes(families)
    return [
        c
        for c in ("optimizer", "schedule", "reduction", "lr_rule", "base_batch_size", *sorted(flags))
        if c in configs
    ]


# A compile costs about as much as this many example-steps of arithmetic on a small
# model; `auto` weighs it against the rows the `mask` strategy computes and throws away.
_COMPILE_EXAMPLE_STEPS = 200_000


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


def plan(spec: spec_lib.TrainSpec, configs: pd.DataFrame, steps: np.ndarray, strategy: str, families=None):
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
    _, flag_names = family_axes(families.values())
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
            for name in spec_lib.omitted_when_zero(family)
            if not (name in rows and bool((rows[name].fillna(0) != 0).any()))
        )
        groups.append(Group(group_spec, strategy == "mask", tuple(rows["config_id"]), omitted))
    return groups, strategy
