"""The ``jaxopt-lab`` command: ``sweep``, ``run`` and ``report``.

A sweep is described by a *definition*, the dict that ``sweep.toml`` holds
(tables ``spec``, ``model_options``, ``dataset_options``, ``optimizer_flags``,
``grid`` and ``sweep``). The command starts from the embedded default (or from
``--config FILE``), applies the flags given, runs it, and writes the definition
beside the results, so ``jaxopt-lab sweep --config runs/x/sweep.toml`` runs the
same sweep again.

Bad input (an :class:`jaxopt_lab.errors.InputError`) ends the command with one
line on stderr and exit code 2, before anything is written. Any other exception
is a bug, not the user's mistake, and ends the command with its traceback.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import re
import sys

import numpy as np

from jaxopt_lab.errors import InputError
from jaxopt_lab.optim.families import REGISTRY
from jaxopt_lab.optim.schedules import SCHEDULES

__all__ = ["main", "DEFAULT_SWEEP"]

# The sweep `jaxopt-lab sweep` runs with no options: the question "which learning
# rate works at which batch size, for SGD, momentum and Adam?" on MNIST-1D, sized
# to finish in minutes on a 2-core CPU.
DEFAULT_SWEEP = {
    "spec": {
        "dataset": "mnist1d",
        "model": "mlp",
        "optimizer": "adam",
        "batch_size": 32,
        "steps": 1500,  # enough for Adam and tuned SGD to pass 60% test accuracy
        "eval_every": 100,
        "reduction": "mean",
        "lr_rule": "none",
        "base_batch_size": 32,
    },
    "model_options": {},
    "dataset_options": {},
    "optimizer_flags": {},
    "grid": {
        "optimizer": ["sgd", "momentum", "adam"],
        # 9 points, two per decade from 3e-4 to 3: covers Adam's optimum (~3e-3)
        # and SGD's (up to ~1 at batch 128), with the diverging edge visible for each.
        "learning_rate": [float(v) for v in np.logspace(-3.5, 0.5, 9)],
        "batch_size": [8, 32, 128],
        "seed": [0, 1],
    },
    "sweep": {"strategy": "auto"},
}
# How the output folder's errors name the options: as the command's flags.
_FLAG_NAMES = {"resume": "--resume", "overwrite": "--overwrite", "shard": "--shard "}
_DEFAULT_OUT = {"sweep": os.path.join("runs", "default"), "run": os.path.join("runs", "run")}


class _UsageError(InputError):
    """A flag's value that the parser itself rejects."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line and exit code 2."""

    def error(self, message):
        if re.search(r"unrecognized arguments: (.* )?--momentum\b", message):
            message += ": a momentum coefficient is --beta (--bn-momentum for batch norm's)"
        raise _UsageError(message)


def _number_list(text: str, flag: str, kind=float) -> list:
    """A comma list of numbers; for real-valued flags also START:STOP:COUNT, log-spaced.

    Every value must be finite; integer flags take integers only (a log-spaced
    range of them would not be integers).
    """
    if kind is int:
        expected = "expected a comma list of integers, e.g. 8,32,128"
    else:
        expected = "expected a comma list or START:STOP:COUNT (log-spaced, e.g. 1e-3:1:7) of finite numbers"
    try:
        if ":" in text:
            parts = text.split(":")
            if kind is int or len(parts) != 3:
                raise ValueError
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
            if not (0 < start < math.inf and 0 < stop < math.inf and count >= 1):
                raise ValueError
            _check_axis_length(count)
            return [float(v) for v in np.logspace(math.log10(start), math.log10(stop), count)]
        values = [kind(v) for v in text.split(",") if v.strip()]
        if not all(math.isfinite(v) for v in values):
            raise ValueError
    except InputError:
        raise
    except ValueError:
        raise _UsageError(f"{flag} {text!r} is invalid: {expected}") from None
    if not values:
        raise _UsageError(f"{flag} {text!r} is invalid: expected at least one value")
    return values


def _check_axis_length(count: int) -> None:
    """An axis of ``count`` values is at least ``count`` configs: refuse what cannot fit
    before building the list."""
    from jaxopt_lab.engine.sweep import check_size

    check_size(count)


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _show(value) -> str:
    if isinstance(value, list):
        return ",".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def _add_run_options(p: argparse.ArgumentParser, single: bool) -> None:
    """The options of ``sweep`` and ``run``; each help line ends with the default it runs."""
    many = "" if single else " (comma list)"
    spec = DEFAULT_SWEEP["spec"]
    grid = {} if single else DEFAULT_SWEEP["grid"]

    own = "the optimizer's own"

    def add(*flags, help, shown=None, **kwargs):
        p.add_argument(*flags, help=help if shown is None else f"{help} (default: {shown})", **kwargs)

    add(
        "--config",
        help="a sweep.toml to start from",
        shown="the built-in sweep" if not single else "the built-in defaults",
    )
    add("--dataset", help="mnist1d, digits, mnist5k, regression or npz:PATH", shown=spec["dataset"])
    add(
        "--val-fraction",
        type=float,
        help="training examples held out for validation; the best settings are chosen on them",
        shown="0: none",
    )
    add("--model", help="linear, mlp, cnn1d or cnn2d", shown=spec["model"])
    add("--hidden", help="mlp hidden widths, e.g. 256,256", shown="256,256")
    add("--batchnorm", action="store_true", default=None, help="batch norm in the model", shown="off")
    add(
        "--optimizer",
        help="a registered family: " + ", ".join(REGISTRY) + many,
        shown=_show(grid.get("optimizer", spec["optimizer"])),
    )
    add(
        "--lr",
        help="learning rate" + ("" if single else ": comma list or START:STOP:COUNT log-spaced"),
        shown=_show(grid["learning_rate"]) if "learning_rate" in grid else "the optimizer's default",
    )
    add("--batch-size", help="batch size" + many, shown=_show(grid.get("batch_size", spec["batch_size"])))
    if single:
        add("--seed", help="seed", shown="0")
    else:
        seeds = p.add_mutually_exclusive_group()
        seeds.add_argument(
            "--seeds", type=int, help=f"number of seeds: 0..N-1 (default: {len(grid['seed'])})"
        )
        seeds.add_argument("--seed", help="seeds, comma list")
    # beta: a family's momentum coefficient (momentum, lars, signum); bn-momentum: batch norm's.
    for name in ("beta", "b1", "b2", "eps", "decay", "weight-decay", "bn-momentum", "label-smoothing"):
        shown = {"weight-decay": "0", "bn-momentum": "0.99", "label-smoothing": "0"}.get(name, own)
        add(f"--{name}", help=f"{name.replace('-', '_')}{many}", shown=shown)
    add("--schedule", help="learning-rate schedule: " + ", ".join(SCHEDULES) + many, shown="constant")
    for name, shown in (
        ("warmup-steps", "0"),
        ("decay-steps", "the run's steps"),
        ("final-lr-fraction", "0"),
        ("decay-rate", "0.1"),
        ("transition-steps", "the run's steps"),
    ):
        add(f"--{name}", help=f"schedule parameter {name.replace('-', '_')}{many}", shown=shown)
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help=f"optimizer steps (default: {spec['steps']})")
    budget.add_argument("--epochs", type=float, help="epochs (steps depend on batch size)")
    add("--eval-every", type=int, help="steps between evaluations", shown=spec["eval_every"])
    add(
        "--eval-growth",
        type=float,
        help="evaluate at steps spaced geometrically by this factor from --eval-every",
        shown="off: every --eval-every steps",
    )
    add("--reduction", help="mean or sum of per-example losses", shown=spec["reduction"])
    add(
        "--loss",
        help="cross_entropy, squared_error or mse",
        shown="cross_entropy for classes, else squared_error",
    )
    add("--lr-rule", help="none, linear or sqrt scaling of lr with batch size", shown=spec["lr_rule"])
    add(
        "--base-batch-size", type=int, help="batch size the given lr refers to", shown=spec["base_batch_size"]
    )
    add(
        "--diverge-above",
        type=float,
        help="training loss past which a config has diverged (inf: only non-finite losses)",
        shown="100 times its first training loss",
    )
    add(
        "--measure",
        help="measurements at every evaluation point, comma list of: " + ", ".join(_measurements()),
        shown="none",
    )
    add(
        "--measure-batch-size",
        type=int,
        help="training examples the measurements use, the same ones at every point",
        shown="1024",
    )
    add(
        "--target",
        help="METRIC=VALUE: a config stops at the first evaluation point where METRIC reaches VALUE; "
        "the table gains steps_to_target and examples_to_target",
        shown="none",
    )
    add("--target-mode", help="min or max: how the target is reached", shown="max for an accuracy, else min")
    add(
        "--target-interpolate",
        action="store_true",
        default=None,
        help="interpolate steps_to_target between evaluation points",
        shown="off",
    )
    add("--strategy", help="auto, bucket or mask", shown=DEFAULT_SWEEP["sweep"]["strategy"])
    add("--chunk-size", type=int, help="configs per compiled call", shown="sized to the devices")
    add(
        "--data-parallel",
        type=int,
        help="devices per config: each config's batch is split over them (a (config, data) mesh)",
        shown="1",
    )
    add(
        "--checkpoint-every",
        type=float,
        help="seconds between checkpoints of a running chunk (0: every segment; inf: never)",
        shown="300",
    )
    if not single:
        p.add_argument(
            "--distributed",
            action="store_true",
            help="one program over several processes (jax.distributed): the cluster from SLURM or a "
            "TPU pod, or --coordinator, --num-processes and --process-id; process 0 writes --out",
        )
        add("--coordinator", help="HOST:PORT of process 0 (implies --distributed)", shown="detected")
        add("--num-processes", type=int, help="processes in the job", shown="detected")
        add("--process-id", type=int, help="this process's index, 0 .. N-1", shown="detected")
        add(
            "--distributed-timeout",
            type=int,
            help="seconds to wait for every process, at the start and when one stops answering",
            shown="300",
        )
        add(
            "--shard",
            help="I/N: be worker I (0 <= I < N) of a job array sharing --out; each computes its "
            "share of the chunks",
            shown="$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT when set, else the whole sweep",
        )
    add("--out", help="output folder", shown=_DEFAULT_OUT["run" if single else "sweep"])
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--resume", action="store_true", help="finish an interrupted sweep in --out")
    existing.add_argument(
        "--overwrite", action="store_true", help="replace a sweep's files in --out (nothing else there)"
    )
    p.add_argument("--no-progress", action="store_true", help="a line per finished group, no progress bar")
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not keep compiled programs in $JAXOPT_LAB_CACHE/xla (by default a second identical "
        "sweep compiles nothing)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxopt-lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    _add_run_options(sub.add_parser("sweep", help="run a grid of configs"), single=False)
    _add_run_options(sub.add_parser("run", help="run one config"), single=True)
    report = sub.add_parser("report", help="redraw a sweep's pictures and print its best lrs")
    report.add_argument("dir", help="a sweep's output folder")
    report.add_argument(
        "--metric",
        help="also draw this column against --x for each batch size's best learning rate "
        "(curves_METRIC.png), or a summary column as a heatmap (heatmap_METRIC.png)",
    )
    report.add_argument("--x", choices=("examples", "steps"), default="examples", help="the curves' x axis")
    return parser


def _measurements() -> list[str]:
    from jaxopt_lab.measure import MEASUREMENTS

    return list(MEASUREMENTS)


def _target(text: str) -> dict:
    metric, sep, value = text.partition("=")
    try:
        number = float(value)
        if not (sep and metric.strip() and math.isfinite(number)):
            raise ValueError
    except ValueError:
        raise _UsageError(
            f"--target {text!r} is invalid: expected METRIC=VALUE, e.g. train_loss=0.5"
        ) from None
    return {"metric": metric.strip(), "value": number}


def _single(values: list, flag: str):
    if len(values) != 1:
        raise _UsageError(f"{flag} takes one value in `run`, got {len(values)}")
    return values


def _refuse_python_objects(path: str, definition: dict) -> None:
    """A sweep run from Python with its own objects cannot run from the command: say which."""
    from jaxopt_lab.outputs import schema as schema_lib

    named = schema_lib.python_objects(definition)
    if named:
        raise InputError(
            f"--config {path!r} was run from Python with its own objects ({', '.join(named)}): run it "
            "from Python, passing the same objects to sweep()"
        )


def _definition_from_args(args) -> dict:
    from jaxopt_lab.outputs import schema as schema_lib

    single = args.command == "run"
    if args.config is not None:
        if not os.path.isfile(args.config):
            raise _UsageError(f"--config {args.config!r} is invalid: no such file")
        definition = schema_lib.read_definition(args.config)
        _refuse_python_objects(args.config, definition)
    else:
        definition = copy.deepcopy(DEFAULT_SWEEP)
        if single:
            definition["grid"] = {}
    for table in ("spec", "model_options", "dataset_options", "optimizer_flags", "grid", "sweep"):
        definition.setdefault(table, {})
    spec, grid = definition["spec"], definition["grid"]
    for flag, key in (
        ("dataset", "dataset"),
        ("model", "model"),
        ("reduction", "reduction"),
        ("lr_rule", "lr_rule"),
        ("eval_every", "eval_every"),
        ("eval_growth", "eval_growth"),
        ("base_batch_size", "base_batch_size"),
        ("diverge_above", "diverge_above"),
        ("loss", "loss"),
    ):
        value = getattr(args, flag)
        if value is not None:
            spec[key] = value
    if args.steps is not None:
        spec.pop("epochs", None)
        spec["steps"] = args.steps
    if args.epochs is not None:
        spec.pop("steps", None)
        spec["epochs"] = args.epochs
    if args.val_fraction is not None:
        definition["dataset_options"]["val_fraction"] = args.val_fraction
    if args.hidden is not None:
        definition["model_options"]["hidden"] = _number_list(args.hidden, "--hidden", int)
    if args.batchnorm:
        definition["model_options"]["batchnorm"] = True
    axes = {
        "optimizer": (args.optimizer, "--optimizer", None),
        "learning_rate": (args.lr, "--lr", float),
        "batch_size": (args.batch_size, "--batch-size", int),
        "beta": (args.beta, "--beta", float),
        "b1": (args.b1, "--b1", float),
        "b2": (args.b2, "--b2", float),
        "eps": (args.eps, "--eps", float),
        "decay": (args.decay, "--decay", float),
        "weight_decay": (args.weight_decay, "--weight-decay", float),
        "bn_momentum": (args.bn_momentum, "--bn-momentum", float),
        "label_smoothing": (args.label_smoothing, "--label-smoothing", float),
        "schedule": (args.schedule, "--schedule", None),
        "warmup_steps": (args.warmup_steps, "--warmup-steps", float),
        "decay_steps": (args.decay_steps, "--decay-steps", float),
        "final_lr_fraction": (args.final_lr_fraction, "--final-lr-fraction", float),
        "decay_rate": (args.decay_rate, "--decay-rate", float),
        "transition_steps": (args.transition_steps, "--transition-steps", float),
        "seed": (args.seed, "--seed", int),
    }
    for axis, (text, flag, kind) in axes.items():
        if text is None:
            continue
        values = _name_list(text) if kind is None else _number_list(text, flag, kind)
        grid[axis] = _single(values, flag) if single else values
    if not single and args.seeds is not None:
        if args.seeds < 1:
            raise _UsageError(f"--seeds {args.seeds} is invalid: expected a positive count")
        _check_axis_length(args.seeds)
        grid["seed"] = list(range(args.seeds))
    if single:  # record every value the run uses, the optimizer's defaults included
        from jaxopt_lab.engine.train import default_hparams

        optimizer = grid.get("optimizer", [spec.get("optimizer", DEFAULT_SWEEP["spec"]["optimizer"])])[0]
        grid["optimizer"] = [optimizer]
        schedule = grid.get("schedule", [spec.get("schedule", "constant")])[0]
        for name, value in default_hparams(optimizer, schedule).items():
            if value is not None:  # None: the run's own steps, as the sweep reads an absent value
                grid.setdefault(name, [value])
        grid.setdefault("batch_size", [spec.get("batch_size", DEFAULT_SWEEP["spec"]["batch_size"])])
        grid.setdefault("seed", [0])
    if args.measure is not None:
        definition["measure"] = {name: {} for name in _name_list(args.measure)}
    if args.measure_batch_size is not None:
        spec["measure_batch_size"] = args.measure_batch_size
    if args.target is not None:
        definition["target"] = _target(args.target)
    if args.target_mode is not None or args.target_interpolate:  # of this target or --config's
        if "target" not in definition:
            raise _UsageError("--target-mode and --target-interpolate need --target METRIC=VALUE")
        if args.target_mode is not None:
            definition["target"]["mode"] = args.target_mode
        if args.target_interpolate:
            definition["target"]["interpolate"] = True
    if args.strategy is not None:
        definition["sweep"]["strategy"] = args.strategy
    if args.chunk_size is not None:
        definition["sweep"]["chunk_size"] = args.chunk_size
    return definition


def _shard(text: str | None, environ=os.environ) -> tuple[int, int] | None:
    """``--shard I/N``, else a SLURM job array's task (its index from ``SLURM_ARRAY_TASK_MIN``)."""
    if text is None:
        if "SLURM_ARRAY_TASK_ID" not in environ or "SLURM_ARRAY_TASK_COUNT" not in environ:
            return None
        try:
            index = int(environ["SLURM_ARRAY_TASK_ID"]) - int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
            return index, int(environ["SLURM_ARRAY_TASK_COUNT"])
        except ValueError:
            raise InputError(
                f"SLURM_ARRAY_TASK_ID={environ['SLURM_ARRAY_TASK_ID']!r} is invalid: expected integers in "
                "SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_COUNT"
            ) from None
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise _UsageError(f"--shard {text!r} is invalid: expected I/N, e.g. 0/3") from None
    if not 0 <= index < count:
        raise _UsageError(f"--shard {text!r} is invalid: expected I/N with 0 <= I < N")
    return index, count


def _run_definition(definition: dict, out: str, args) -> int:
    from jaxopt_lab.analysis import tables as tables_lib
    from jaxopt_lab.engine.sweep import Grid, sweep
    from jaxopt_lab.outputs import plots
    from jaxopt_lab.outputs import schema as schema_lib
    from jaxopt_lab.outputs.folder import Folder

    spec, options = schema_lib.sweep_arguments(definition)
    if args.command == "run":  # one config per device: the numbers of the config run alone (train())
        options.setdefault("chunk_size", 1)
    shard = _shard(getattr(args, "shard", None)) if args.command == "sweep" else None
    # Flags not given leave the engine's defaults; --checkpoint-every inf is the engine's None.
    if args.checkpoint_every is not None:
        options["checkpoint_every"] = None if args.checkpoint_every == math.inf else args.checkpoint_every
    if args.data_parallel is not None:
        options["data_parallel"] = args.data_parallel
    result = sweep(
        spec,
        Grid(**definition["grid"]),
        out=Folder(out, names=_FLAG_NAMES),  # its errors name the command's flags
        resume=args.resume,
        overwrite=args.overwrite,
        progress="lines" if args.no_progress else True,
        shard=shard,
        **options,
    )
    from jaxopt_lab.engine.distributed import is_writer

    if not is_writer():
        return 0  # process 0 reports
    if result.missing:
        print(
            f"shard {shard[0]}/{shard[1]} done; {len(result.missing)} chunks are other shards' and not "
            f"finished yet: the last worker to finish writes {out}/results.parquet (or run "
            f"`jaxopt-lab report {out}` once they are)"
        )
        return 0
    print(
        f"wrote {len(result.table)} rows for {result.table['config_id'].nunique()} configs "
        f"to {out}/ (results.parquet, summary.csv, sweep.toml, {', '.join(plots.pictures(result.table))})"
    )
    if args.command == "run" and result.table["config_id"].nunique() == 1:
        _print_config(
            tables_lib.summary(result.table).iloc[0],
            tables_lib.hyperparameter_columns(result.table),
            tables_lib.measured_columns(result.table),
        )
    else:
        _print_best(tables_lib.best_learning_rates(result.table))
    return 0


def _print_config(row, hparams, measured=()) -> None:
    """One config's values and results, for `jaxopt-lab run`."""
    values = ", ".join(
        f"{name}={row[name]:.4g}" if isinstance(row[name], float) else f"{name}={row[name]}"
        for name in hparams
        if row[name] == row[name]
    )  # NaN: not this optimizer's
    print(values)
    if row["diverged"]:
        print(f"diverged; last evaluation at step {int(row['final_step'])}")
        return
    print(
        f"step {int(row['final_step'])}: train loss {row['final_train_loss']:.4g}, test loss "
        f"{row['final_test_loss']:.4g}, test accuracy {row['final_test_accuracy']:.4g}; best test loss "
        f"{row['best_test_loss']:.4g} at step {int(row['best_step'])}"
    )
    if measured:
        shown = ", ".join(f"{name} {row[f'final_{name}']:.4g}" for name in measured)
        print(f"measured at step {int(row['final_step'])}: {shown}")
    if "steps_to_target" in row:
        steps, examples = row["steps_to_target"], row["examples_to_target"]
        print(
            "target not reached"
            if steps != steps
            else f"target reached at step {steps:.6g} ({examples:.6g} examples)"
        )


def _use_compile_cache() -> None:
    """Keep compiled programs in ``$JAXOPT_LAB_CACHE/xla`` (JAX's persistent compilation
    cache), so a second run of the same sweep compiles nothing. A cache folder the caller
    already configured is kept."""
    import jax

    from jaxopt_lab.data import cache_dir

    if jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", os.path.join(cache_dir(), "xla"))
    # A sweep's programs compile in a second or less on a CPU: keep them all.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _print_best(best) -> None:
    import pandas as pd

    with pd.option_context(
        "display.width", 120, "display.max_columns", 20, "display.float_format", "{:.4g}".format
    ):
        print(best.to_string(index=False))


def _report(path: str, metric: str | None = None, x_axis: str = "examples") -> int:
    from jaxopt_lab.analysis import tables as tables_lib
    from jaxopt_lab.outputs import folder as folder_lib
    from jaxopt_lab.outputs import plots

    if not os.path.isfile(os.path.join(path, "results.parquet")):
        if not os.path.isfile(os.path.join(path, "sweep.toml")):
            raise _UsageError(f"report {path!r} is invalid: no results.parquet or sweep.toml in that folder")
        missing = _assemble_shards(path)  # a job array's folder: its chunks make the table
        if missing:
            shown = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
            print(
                f"jaxopt-lab: {path} is not complete: {len(missing)} chunks are missing ({shown}); "
                f"finish their shards, or compute them here with `jaxopt-lab sweep --config "
                f"{os.path.join(path, 'sweep.toml')} --out {path} --resume`",
                file=sys.stderr,
            )
            return 1
    table, _ = folder_lib.load(path)
    extra = []
    if metric is not None:  # first: a bad --metric stops the report before it draws anything
        x = "step" if x_axis == "steps" else "examples_seen"
        if metric in table.columns:
            extra.append(f"curves_{metric}{'_by_step' if x == 'step' else ''}.png")
            plots.curves(table, os.path.join(path, extra[-1]), metric=metric, x=x)
        else:
            extra.append(f"heatmap_{metric}.png")
            plots.heatmap(table, os.path.join(path, extra[-1]), metric=metric)
    names = plots.draw(table, path) + extra
    print(f"redrew {', '.join(os.path.join(path, n) for n in names)}")
    _print_best(tables_lib.best_learning_rates(table))
    return 0


def _assemble_shards(path: str) -> list[str]:
    """Write a job array's table from its chunk files; returns the chunks still missing."""
    from jaxopt_lab.engine.sweep import Grid, sweep
    from jaxopt_lab.outputs import schema as schema_lib

    definition = schema_lib.read_definition(os.path.join(path, "sweep.toml"))
    _refuse_python_objects(os.path.join(path, "sweep.toml"), definition)
    spec, options = schema_lib.sweep_arguments(definition)
    result = sweep(spec, Grid(**definition["grid"]), out=path, progress=False, compute=False, **options)
    return list(result.missing)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxopt-lab`` console script; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        if args.command == "report":
            return _report(args.dir, args.metric, args.x)
        if args.command == "sweep":
            from jaxopt_lab.engine.sweep import one_device_per_cpu_core

            one_device_per_cpu_core()
            if args.distributed or args.coordinator is not None:
                from jaxopt_lab.engine import distributed

                timeout = {} if args.distributed_timeout is None else {"timeout": args.distributed_timeout}
                distributed.initialize(args.coordinator, args.num_processes, args.process_id, **timeout)
        if not args.no_compile_cache:
            _use_compile_cache()
        if args.out is not None and not args.out.strip():
            raise _UsageError(f"--out {args.out!r} is invalid: expected a folder name")
        definition = _definition_from_args(args)
        out = _DEFAULT_OUT[args.command] if args.out is None else args.out
        return _run_definition(definition, out, args)
    except InputError as err:  # the user's mistake; anything else is a bug and keeps its traceback
        print(f"jaxopt-lab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxopt-lab: interrupted; finished chunks are kept, rerun with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
