"""Chunks: a group's configs run as one compiled, vmapped program, sharded over the devices.

Each group runs in chunks of a fixed number of configs, a width that depends on
the config alone (the last chunk padded, :func:`default_chunk_size`), so a group
compiles once and a config's numbers do not depend on how many configs share the
sweep. A chunk's config axis is sharded over every visible device along a mesh
axis named ``config`` (and each config's batch over ``data``,
``data_parallel``). :func:`run_chunk` advances a chunk in segments between
evaluation points (:func:`programs` compiles them); the host wakes only between
segments, to report progress and checkpoint, and the chunk ends early once all
of its configs have reached their target or diverged.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxopt_lab.engine import train as train_lib
from jaxopt_lab.engine.grid import Group
from jaxopt_lab.measure.targets import steps_to_target_columns

__all__ = [
    "default_chunk_size",
    "run_chunk",
    "programs",
    "one_device_per_cpu_core",
    "clear_caches",
    "round_up",
    "measurement_columns_of",
]


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


def default_chunk_size(spec, dataset, devices: Sequence[jax.Device]) -> int:
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
    programs.cache_clear()
    measurement_columns_of.cache_clear()


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


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _replays(devices) -> bool:
    """Whether segments run fast and unfrozen, replaying one in which a config diverged
    (a CPU: the select that freezes a diverged config costs up to a fifth of a small step),
    or frozen with the state donated (an accelerator: a chunk's state may fill the device,
    and keeping a segment's input for a replay would double it)."""
    return devices[0].platform == "cpu"


@functools.lru_cache(maxsize=64)
def programs(
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


def run_chunk(
    group: Group,
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
    init_p, segment_p, replay_p, arrays, by_config = programs(
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
    measured = measurement_columns_of(spec)
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
        frame = steps_to_target_columns(frame, spec.target)
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


@functools.lru_cache(maxsize=64)
def measurement_columns_of(spec: train_lib.TrainSpec) -> tuple[str, ...]:
    return train_lib.measurement_columns(spec, train_lib.load_dataset(spec.dataset, spec.dataset_options))
