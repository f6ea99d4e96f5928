"""Targets: the first evaluation point at which a metric reaches a value.

:class:`Target` is a run's stop (``TrainSpec.target``): each config stops at the
first evaluation point where its metric reaches the value, and the table gains
``steps_to_target`` and ``examples_to_target`` (:func:`steps_to_target_columns`).
:func:`steps_to_target` and :func:`examples_to_target` find that point in any
curve, as arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxopt_lab.errors import InputError

__all__ = ["TARGET_METRICS", "Target", "steps_to_target", "examples_to_target", "steps_to_target_columns"]


_MODES = ("min", "max")


def _as_host(x):
    # pandas: nullable dtypes hold pd.NA, which np.asarray cannot turn into float.
    if hasattr(x, "to_numpy"):
        return x.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(x, dtype=np.float64)


def _broadcasts_to(shape, to) -> bool:
    try:
        return np.broadcast_shapes(shape, to) == tuple(to)
    except ValueError:
        return False


def _first_reached(index, values, target, mode: str, index_name: str):
    if mode not in _MODES:
        raise InputError(f"mode must be one of {_MODES}, got {mode!r}")
    if any(isinstance(a, jax.Array) for a in (index, values, target)):
        xp = jnp
        values = jnp.asarray(values)
        if not jnp.issubdtype(values.dtype, jnp.floating):
            values = values.astype(jax.dtypes.canonicalize_dtype(jnp.float64))
        index = jnp.asarray(index).astype(values.dtype)
        target = jnp.asarray(target).astype(values.dtype)
    else:
        # Host data stays in float64: example counts past 2**24 are exact.
        xp = np
        index, values, target = _as_host(index), _as_host(values), _as_host(target)
    if values.ndim == 0 or values.shape[-1] == 0:
        raise InputError(f"values must have a non-empty last (evaluation) axis, got shape {values.shape}")
    if not _broadcasts_to(index.shape, values.shape):
        raise InputError(
            f"{index_name} must broadcast to the shape of values {values.shape}, got shape {index.shape}"
        )
    if not _broadcasts_to(target.shape, values.shape[:-1]):
        raise InputError(
            f"target must be a scalar or broadcast to the leading shape of values {values.shape[:-1]}, "
            f"got shape {target.shape}"
        )
    index = xp.broadcast_to(index, values.shape)
    target = xp.broadcast_to(target[..., None], values.shape)
    # Comparisons with NaN are false already; isfinite also rules out ±inf of a diverged run.
    reached = xp.isfinite(values) & ((values <= target) if mode == "min" else (values >= target))
    first = xp.argmax(reached, axis=-1)
    at_first = xp.take_along_axis(index, first[..., None], axis=-1)[..., 0]
    result = xp.where(xp.any(reached, axis=-1), at_first, xp.nan)
    return result[()] if xp is np else result


def steps_to_target(steps, values, target, *, mode: str = "min"):
    """Step of the first evaluation at which ``values`` reaches ``target``; NaN if none does.

    Reached means ``values <= target`` for ``mode="min"`` (losses) and
    ``values >= target`` for ``mode="max"`` (accuracies). Non-finite values
    (NaN or ±inf, a diverged run) never count as reached.

    The evaluation axis is the last one; leading axes (e.g. the config axis of
    a sweep's stacked histories) are kept, so this applies to a whole sweep at
    once, and it can also be ``jax.vmap``-ed and ``jax.jit``-ed. JAX inputs give
    a JAX float array (float32 unless x64 is enabled); NumPy or pandas inputs
    are computed in NumPy float64 and give a NumPy float64.

    Example::

      steps_to_target([0, 100, 200], [2.3, 0.9, 0.4], 1.0)                # 100.0
      steps_to_target(hist.step, hist.test_accuracy, 0.9, mode="max")     # one per config

    Args:
      steps: step of each evaluation point, shape ``(E,)`` or that of ``values``.
      values: metric at each evaluation point, shape ``(..., E)``.
      target: threshold, a scalar or one per leading index (shape ``values.shape[:-1]``).
      mode: ``"min"`` (lower is better) or ``"max"`` (higher is better).

    Returns:
      An array of shape ``values.shape[:-1]``.
    """
    return _first_reached(steps, values, target, mode, "steps")


def examples_to_target(examples_seen, values, target, *, mode: str = "min"):
    """Examples seen at the first evaluation at which ``values`` reaches ``target``; NaN if none does.

    :func:`steps_to_target` indexed by examples seen instead of steps, which
    compares runs of different batch sizes on the same axis of data consumed.

    Args:
      examples_seen: examples seen at each evaluation point, shape ``(E,)`` or
        that of ``values``.
      values: metric at each evaluation point, shape ``(..., E)``.
      target: threshold, a scalar or one per leading index.
      mode: ``"min"`` or ``"max"``.

    Returns:
      An array of shape ``values.shape[:-1]``.
    """
    return _first_reached(examples_seen, values, target, mode, "examples_seen")


# The metrics a target can name besides the measurements' columns.
TARGET_METRICS = ("train_loss", "test_loss", "test_accuracy", "val_loss", "val_accuracy")


@dataclasses.dataclass(frozen=True)
class Target:
    """A value of a metric at which a config stops: ``Target("train_loss", 0.5)``.

    At each of a config's evaluation points the engine compares the metric with
    ``value``; at the first point where it is reached (``<=`` for ``mode="min"``,
    ``>=`` for ``"max"``; a NaN never is) the config stops updating and its rows
    end, and the table's ``steps_to_target`` and ``examples_to_target`` hold that
    point (NaN for a config that never reached it). A chunk whose configs have all
    reached their targets, diverged or finished ends there.

    Attributes:
      metric: ``train_loss``, ``test_loss``, ``test_accuracy``, ``val_loss``,
        ``val_accuracy`` or a column of the spec's measurements.
      value: the target value.
      mode: ``"min"`` or ``"max"``; default ``"max"`` for an accuracy, else ``"min"``.
      interpolate: report ``steps_to_target`` (and examples) interpolated linearly
        in the metric between the point before and the point where it was reached,
        instead of that point.
    """

    metric: str
    value: float
    mode: str | None = None
    interpolate: bool = False

    def __post_init__(self):
        if not isinstance(self.metric, str) or not self.metric:
            raise InputError(f"target metric {self.metric!r} is invalid: expected a column name")
        value = self.value
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.number))
            or not np.isfinite(value)
        ):
            raise InputError(f"target {self.metric}={value!r} is invalid: expected a finite number")
        object.__setattr__(self, "value", float(value))
        mode = self.mode if self.mode is not None else ("max" if "accuracy" in self.metric else "min")
        if mode not in ("min", "max"):
            raise InputError(f"target mode={self.mode!r} is invalid: expected 'min' or 'max'")
        object.__setattr__(self, "mode", mode)
        if not isinstance(self.interpolate, (bool, np.bool_)):
            raise InputError(f"target interpolate={self.interpolate!r} is invalid: expected true or false")
        object.__setattr__(self, "interpolate", bool(self.interpolate))

    @classmethod
    def from_value(cls, value) -> Target | None:
        """A Target from ``None``, a Target, ``{"metric": ..., "value": ..., ...}`` (as
        ``sweep.toml`` writes it) or ``{metric: value}``."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, Mapping) and "metric" in value:
            fields = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - fields)
            if unknown:
                raise InputError(
                    f"target key {unknown[0]!r} is invalid: expected {', '.join(map(repr, sorted(fields)))}"
                )
            return cls(**value)
        if isinstance(value, Mapping) and len(value) == 1:
            ((metric, target),) = value.items()
            return cls(metric, target)
        raise InputError(
            f"target={value!r} is invalid: expected one metric and its value, e.g. {{'train_loss': 0.5}}, "
            "or a jaxopt_lab.Target"
        )


def steps_to_target_columns(frame: pd.DataFrame, target: Target) -> pd.DataFrame:
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
