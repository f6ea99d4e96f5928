"""The sweep engine: a config in a sweep equals the config alone, whatever the grouping,
chunking, device count or interruption."""

import logging

import jax
import numpy as np
import pandas as pd
import pytest

from jaxopt_lab import Optimizer
from jaxopt_lab.engine import chunks as C
from jaxopt_lab.engine import grid as G
from jaxopt_lab.engine import sweep as S
from jaxopt_lab.engine import train as T
from jaxopt_lab.outputs import schema

SPEC = dict(
    dataset="digits", model="mlp", model_options={"hidden": (16,), "batchnorm": True}, steps=40, eval_every=20
)
METRICS = ["train_loss", "test_loss", "test_accuracy"]


def _run(grid, **kwargs):
    kwargs.setdefault("progress", False)
    return S.sweep(SPEC, grid, **kwargs).table


def _assert_same(a: pd.DataFrame, b: pd.DataFrame, rtol=0.0):
    pd.testing.assert_frame_equal(a.drop(columns=METRICS), b.drop(columns=METRICS))
    np.testing.assert_allclose(a[METRICS].to_numpy(), b[METRICS].to_numpy(), rtol=rtol, atol=0)


@pytest.fixture(scope="module")
def grid():
    # SGD and momentum: Adam with batch norm amplifies float reordering (see below).
    return S.Grid(optimizer=["sgd", "momentum"], learning_rate=[1e-2, 1e-1], batch_size=[8, 32], seed=[0, 1])


@pytest.fixture(scope="module")
def bucket_table(grid):
    return _run(grid, strategy="bucket")


def test_table_layout(bucket_table):
    assert list(bucket_table.columns) == [
        "config_id",
        "optimizer",
        "learning_rate",
        "batch_size",
        "seed",
        "step",
        "examples_seen",
        "train_loss",
        "test_loss",
        "test_accuracy",
        "diverged",
        "applied_lr",
    ]
    assert bucket_table["config_id"].nunique() == 2 * 2 * 2 * 2
    assert len(bucket_table) == 16 * 2
    np.testing.assert_array_equal(
        bucket_table["examples_seen"], bucket_table["step"] * bucket_table["batch_size"]
    )


def test_config_in_sweep_equals_config_alone(bucket_table):
    row = bucket_table[
        (bucket_table.optimizer == "momentum")
        & (bucket_table.batch_size == 8)
        & (bucket_table.learning_rate == 1e-1)
        & (bucket_table.seed == 1)
    ]
    spec = T.TrainSpec(**SPEC, optimizer="momentum", batch_size=8)
    alone = T.train(spec, {"learning_rate": 1e-1}, 1)
    np.testing.assert_allclose(row["train_loss"], alone.train_loss, rtol=1e-4)
    np.testing.assert_allclose(row["test_loss"], alone.test_loss, rtol=1e-4)


def test_adam_config_in_sweep_equals_config_alone():
    # Without batch norm: with it, Adam divides the float-reordering noise of
    # gradient coordinates that are zero in exact arithmetic by its own size,
    # and runs drift apart by ~1e-3 within 20 steps whatever the engine does.
    spec_options = {**SPEC, "model_options": {"hidden": (16,)}}
    grid = S.Grid(optimizer=["adam"], learning_rate=[1e-3, 1e-2], batch_size=[8], seed=[1])
    table = S.sweep(spec_options, grid, progress=False).table
    alone = T.train(T.TrainSpec(**spec_options, optimizer="adam", batch_size=8), {"learning_rate": 1e-2}, 1)
    np.testing.assert_allclose(table[table.learning_rate == 1e-2]["train_loss"], alone.train_loss, rtol=1e-4)


def test_mask_equals_bucket(grid, bucket_table):
    result = S.sweep(SPEC, grid, strategy="mask", progress=False)
    assert result.strategy == "mask"
    _assert_same(result.table, bucket_table, rtol=1e-4)


def test_mask_equals_bucket_across_epoch_boundaries():
    # 256 examples: batch 16 starts an epoch every 16 steps, batch 48 every 5, so within
    # one masked chunk configs redraw their permutation at different steps.
    spec = dict(
        dataset="regression",
        dataset_options={"n": 256, "dim": 4, "n_test": 64},
        model="linear",
        optimizer="sgd",
        steps=40,
        eval_every=10,
    )
    grid = S.Grid(learning_rate=[0.02, 0.05], batch_size=[16, 48], seed=[0, 1])
    mask = S.sweep(spec, grid, strategy="mask", progress=False).table
    bucket = S.sweep(spec, grid, strategy="bucket", progress=False).table
    _assert_same(mask, bucket, rtol=1e-5)
    alone = T.train(T.TrainSpec(**spec, batch_size=48), {"learning_rate": 0.05}, 1)
    row = mask[(mask.batch_size == 48) & (mask.learning_rate == 0.05) & (mask.seed == 1)]
    np.testing.assert_allclose(row["train_loss"], alone.train_loss, rtol=1e-5)


def test_weight_decay_axis_equals_configs_alone():
    # A group with a nonzero decay keeps it in the program; its zero-decay config must
    # still equal the same config alone (where zero decay is left out).
    spec = dict(
        dataset="regression",
        dataset_options={"n": 256, "dim": 4, "n_test": 64},
        model="linear",
        optimizer="sgd",
        batch_size=16,
        steps=20,
        eval_every=10,
    )
    table = S.sweep(spec, S.Grid(learning_rate=[0.05], weight_decay=[0.0, 0.5]), progress=False).table
    for wd in (0.0, 0.5):
        alone = T.train(T.TrainSpec(**spec), {"learning_rate": 0.05, "weight_decay": wd}, 0)
        np.testing.assert_allclose(table[table.weight_decay == wd]["test_loss"], alone.test_loss, rtol=1e-5)
    assert not np.allclose(
        table[table.weight_decay == 0.0]["test_loss"],
        table[table.weight_decay == 0.5]["test_loss"],
        rtol=1e-3,
    )


def test_same_seed_gives_an_identical_table(grid, bucket_table):
    _assert_same(_run(grid, strategy="bucket"), bucket_table)


def test_a_diverging_config_leaves_the_others_untouched():
    stable = S.Grid(optimizer=["sgd"], learning_rate=[0.01, 0.1], batch_size=[16], seed=[0])
    with_bad = S.Grid(optimizer=["sgd"], learning_rate=[0.01, 0.1, 1e4], batch_size=[16], seed=[0])
    a = _run(stable, chunk_size=4)
    b = _run(with_bad, chunk_size=4)
    bad = b[b.learning_rate == 1e4]
    assert bad["diverged"].all() and bad["test_loss"].isna().all()
    _assert_same(b[b.learning_rate != 1e4].reset_index(drop=True), a)


def test_donated_frozen_segments_give_the_replayed_table_and_free_their_input(monkeypatch):
    """An accelerator's segments donate the chunk's state and freeze a diverging config in
    the same pass: the table of the CPU's fast segments with their replay (to rounding)."""
    grid = S.Grid(optimizer=["sgd"], learning_rate=[0.01, 0.1, 1e4], batch_size=[16], seed=[0])
    replayed = _run(grid, chunk_size=4)
    real, donated = C.programs, []

    def programs(*args):
        init_p, segment_p, replay_p, arrays, by_config = real(*args)
        assert replay_p is None

        def segment(*args):
            out = segment_p(*args)
            donated.append(all(leaf.is_deleted() for leaf in jax.tree.leaves(args[2])))
            return out

        return init_p, segment, replay_p, arrays, by_config

    monkeypatch.setattr(C, "_replays", lambda devices: False)
    monkeypatch.setattr(C, "programs", programs)
    frozen = _run(grid, chunk_size=4)
    _assert_same(frozen, replayed, rtol=1e-6)  # the select fuses differently: last-bit rounding
    assert frozen.loc[frozen.learning_rate == 1e4, "diverged"].all()
    assert donated and all(donated)  # each segment's input state was given to XLA


def test_a_second_chunk_does_not_recompile(caplog):
    C.programs.cache_clear()
    grid = S.Grid(optimizer=["sgd"], learning_rate=list(np.geomspace(1e-3, 1e-1, 9)), batch_size=[16])
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        table = _run(grid, chunk_size=4)  # 9 configs -> 3 chunks, the last one padded
    assert table["config_id"].nunique() == 9 and len(table) == 9 * 2
    compiled = [r.getMessage() for r in caplog.records if "Finished XLA compilation" in r.getMessage()]
    assert sum("jit(segment)" in m for m in compiled) == 1, compiled
    assert sum("jit(init)" in m for m in compiled) == 1, compiled


def _interrupt_chunk(monkeypatch, n):
    """Make the sweep's ``n``-th chunk raise KeyboardInterrupt (a Ctrl-C); returns the call
    counter, which a test may reset to count the chunks a resume runs."""
    calls = {"n": 0}
    real = S.run_chunk

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(S, "run_chunk", interrupted)
    return calls


def test_resume_after_interrupt_gives_the_same_table(tmp_path, monkeypatch):
    grid = S.Grid(optimizer=["sgd", "adam"], learning_rate=[1e-2, 1e-1], batch_size=[8, 16])
    full = _run(grid, chunk_size=4, strategy="bucket", plots=False)

    calls = _interrupt_chunk(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        _run(grid, chunk_size=4, strategy="bucket", out=tmp_path, plots=False)
    assert len(list((tmp_path / "chunks").iterdir())) == 2
    assert not (tmp_path / "results.parquet").exists()

    calls["n"] = -100
    with pytest.raises(ValueError, match="is not empty"):
        _run(grid, chunk_size=4, strategy="bucket", out=tmp_path, plots=False)
    resumed = _run(grid, chunk_size=4, strategy="bucket", out=tmp_path, resume=True, plots=False)
    assert calls["n"] == -100 + 2  # only the two unfinished chunks ran
    _assert_same(resumed, full)
    on_disk = pd.read_parquet(tmp_path / "results.parquet")
    _assert_same(on_disk, full)


def test_resume_refuses_a_different_sweep(tmp_path):
    grid = S.Grid(optimizer=["sgd"], learning_rate=[1e-2], batch_size=[8])
    _run(grid, out=tmp_path, plots=False)
    other = S.Grid(optimizer=["sgd"], learning_rate=[1e-1], batch_size=[8])
    with pytest.raises(
        ValueError,
        match=r"its sweep differs from this one: \[grid\] learning_rate is \[0\.01\] "
        r"in the folder and \[0\.1\] now",
    ):
        _run(other, out=tmp_path, resume=True, plots=False)
    with pytest.raises(ValueError, match=r"not empty: pass resume=True to finish it or overwrite=True"):
        _run(grid, out=tmp_path, plots=False)


def test_a_spec_field_an_older_sweep_toml_lacks_reads_as_its_default():
    now = {"spec": {"steps": 10, "loss": "auto", "diverge_above": None}, "grid": {"seed": [0]}}
    assert schema.difference({"spec": {"steps": 10}, "grid": {"seed": [0]}}, now) is None
    assert "[spec] loss is 'mse' in the folder and 'auto' now" == schema.difference(
        {"spec": {"steps": 10, "loss": "mse"}, "grid": {"seed": [0]}}, now
    )


def test_a_resume_ignores_list_order_and_chunk_size_and_keeps_the_folders(tmp_path, monkeypatch):
    grid = S.Grid(optimizer=["sgd", "momentum"], learning_rate=[1e-2, 1e-1], batch_size=[8])
    calls = _interrupt_chunk(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        _run(grid, chunk_size=2, strategy="bucket", out=tmp_path, plots=False)
    calls["n"] = -100
    reordered = S.Grid(optimizer=["momentum", "sgd"], learning_rate=[1e-1, 1e-2], batch_size=[8])
    resumed = _run(reordered, chunk_size=4, strategy="bucket", out=tmp_path, resume=True, plots=False)
    assert calls["n"] == -100 + 1  # the one unfinished chunk, at the folder's chunk size
    full = _run(grid, chunk_size=2, strategy="bucket", plots=False)
    _assert_same(resumed, full)  # the folder's config ids and order
    assert schema.read_definition(tmp_path / "sweep.toml")["sweep"]["chunk_size"] == 2


def test_epoch_budget_becomes_steps_per_batch_size():
    grid = S.Grid(optimizer=["sgd"], learning_rate=[0.05], batch_size=[64, 128])
    for strategy in ("bucket", "mask"):
        table = S.sweep(
            {**SPEC, "epochs": 2, "eval_every": 10}, grid, strategy=strategy, progress=False
        ).table
        n = 1438  # digits' training set: 80% of 1797
        last = table.groupby("batch_size")["step"].max()
        assert last[64] == 2 * (n // 64) and last[128] == 2 * (n // 128)
        assert table.groupby("batch_size")["examples_seen"].max()[128] == 2 * (n // 128) * 128


def test_grid_drops_hyperparameters_an_optimizer_does_not_take():
    configs = S.Grid(optimizer=["sgd", "adam"], b1=[0.8, 0.9], learning_rate=[0.1]).configs()
    assert len(configs) == 3  # sgd once, adam twice
    assert configs.loc[configs.optimizer == "sgd", "b1"].isna().all()


def test_a_grid_axis_may_be_a_one_dimensional_array():
    lrs = np.logspace(-3, -1, 3)
    by_array = S.Grid(optimizer=["sgd"], learning_rate=lrs, seed=np.arange(2)).configs()
    by_list = S.Grid(optimizer=["sgd"], learning_rate=[1e-3, 1e-2, 1e-1], seed=[0, 1]).configs()
    pd.testing.assert_frame_equal(by_array, by_list, check_dtype=False)
    with pytest.raises(ValueError, match="learning_rate=array"):
        S.Grid(learning_rate=lrs.reshape(3, 1))


@pytest.mark.parametrize(
    "axes, match",
    [
        (dict(learning_rate=[]), "grid axis 'learning_rate' is empty"),
        (dict(optimizer=["sgd"], lr=[0.1]), "grid axis 'lr' is invalid: expected one of"),
        (dict(optimizer=["adagradx"]), "optimizer='adagradx' is invalid: expected one of 'sgd'"),
        (dict(learning_rate=[0.1, -1.0]), "learning_rate=-1.0 is invalid"),
        (dict(batch_size=[0]), "batch_size=0 is invalid"),
        # a NaN would read as "not given" and run with the default
        (dict(beta=[0.9, float("nan")]), "beta=nan is invalid: expected a finite number"),
        (dict(weight_decay=[float("inf")]), "weight_decay=inf is invalid: expected a finite number"),
        (dict(learning_rate=[float("inf")]), "learning_rate=inf is invalid: expected a finite number"),
        (dict(b1=["0.9"]), "b1='0.9' is invalid: expected a number"),
        (dict(seed=[2**32]), r"seed=4294967296 is invalid: expected an integer in \[0, 2\*\*32\)"),
        (dict(seed=[1.5]), "seed=1.5 is invalid: expected an integer"),
    ],
)
def test_bad_grids_raise(axes, match):
    with pytest.raises(ValueError, match=match):
        S.Grid(**axes)


def test_an_axis_no_family_takes_is_refused_once_the_specs_family_is_known(tmp_path):
    grid = S.Grid(lr=[0.1])  # without an optimizer axis it may be the spec's family's own
    with pytest.raises(InputError, match="grid axis 'lr' is invalid: expected one of .*'learning_rate'"):
        S.sweep(SPEC, grid, out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match="clip=nan is invalid: expected a finite number"):
        family = Optimizer(
            lambda learning_rate, clip: optax.sgd(learning_rate), {"learning_rate": 0.1, "clip": 1.0}
        )
        S.Grid(clip=[float("nan")]).configs(T.TrainSpec(optimizer=family))


def test_bad_sweep_options_raise_before_writing(tmp_path):
    out = tmp_path / "out"
    grid = S.Grid(learning_rate=[0.1], batch_size=[5000])
    with pytest.raises(ValueError, match=r"batch_size=5000 is larger than the training set \(1438"):
        S.sweep(SPEC, grid, out=out)
    with pytest.raises(ValueError, match="strategy='fast' is invalid"):
        S.sweep(SPEC, S.Grid(learning_rate=[0.1]), strategy="fast", out=out)
    with pytest.raises(ValueError, match="b1=1.5"):
        S.sweep(SPEC, S.Grid(optimizer=["adam"], b1=[1.5]), out=out)
    assert not out.exists()


class _Device:
    """A device description: what chunk sizing reads of a device."""

    def __init__(self, platform, bytes_limit=None):
        self.platform, self._limit = platform, bytes_limit

    def memory_stats(self):
        return {"bytes_limit": self._limit} if self._limit else None


@pytest.mark.parametrize(
    "fit, devices, expected",
    [
        (5, 1, 5),  # one CPU device: as many as fit the cache budget, at most 8
        (100, 1, 8),
        (0, 1, 1),  # at least one
        (100, 4, 8),  # one device per core: 2 configs each, whatever fits
        (1, 2, 4),
    ],
)
def test_the_cpu_chunk_width_is_a_function_of_the_config_alone(monkeypatch, fit, devices, expected):
    step_bytes = C._CPU_CHUNK_BYTES // fit if fit else 2 * C._CPU_CHUNK_BYTES  # 0: not even one fits
    monkeypatch.setattr(C, "_step_bytes", lambda spec, dataset: step_bytes)
    monkeypatch.setattr(C, "_CPU_CONFIGS_PER_DEVICE", 2)
    assert C.default_chunk_size(None, None, [_Device("cpu")] * devices) == expected


@pytest.mark.parametrize(
    "bytes_limit, devices, expected",
    [
        (200 << 20, 1, 100),  # half of one device's 200 MiB, 1 MiB per config
        (200 << 20, 4, 400),  # the budget is each device's: not divided by the count again
        (10 << 30, 2, 2 * 256),  # capped per device
        (None, 1, 2048),  # no memory stats: the 2 GiB default budget
    ],
)
def test_accelerator_chunks_are_sized_from_one_devices_memory(monkeypatch, bytes_limit, devices, expected):
    monkeypatch.setattr(C, "_per_config_bytes", lambda spec, dataset: 1 << 20)
    monkeypatch.setattr(C, "_ACCELERATOR_MAX_CONFIGS_PER_DEVICE", 256 if bytes_limit == 10 << 30 else 10**6)
    assert C.default_chunk_size(None, None, [_Device("gpu", bytes_limit)] * devices) == expected


def test_adding_configs_to_a_sweep_does_not_change_those_already_in_it():
    """RMSProp with batch norm amplifies last-bit differences between programs of different
    widths; the default width depends on the config alone, so a config of a 2-config sweep and
    the same config inside a 16-config sweep agree bit for bit."""
    spec = {**SPEC, "optimizer": "rmsprop", "steps": 300, "eval_every": 100, "batch_size": 32}
    small = S.sweep(spec, S.Grid(learning_rate=[1e-3, 1e-2]), progress=False).table
    large = S.sweep(
        spec, S.Grid(learning_rate=list(np.logspace(-4, -1, 14)) + [1e-3, 1e-2]), progress=False
    ).table
    for lr in (1e-3, 1e-2):
        a = small[small.learning_rate == lr].reset_index(drop=True)
        b = large[large.learning_rate == lr].reset_index(drop=True)
        np.testing.assert_array_equal(a[METRICS].to_numpy(), b[METRICS].to_numpy())


# ------------------------------------------------------------------ the engine's wiring, end to end
# Each sweep below is compared, config by config, with a plain optax loop written in
# tests/_reference.py (optax's own optimizers, the loss and the reduction written again).

import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from _reference import assert_config_matches, model_fns, optax_loop  # noqa: E402

from jaxopt_lab import data as D  # noqa: E402
from jaxopt_lab.errors import InputError  # noqa: E402
from jaxopt_lab.nn import models as M  # noqa: E402

REG = {"n": 256, "dim": 4, "n_test": 64, "noise": 0.1}


def _linear_regression_loop(tx, batch_size, steps, seed=0, reduction="mean", eval_every=10, options=REG):
    ds = D.load("regression", **options)
    return optax_loop(
        ds,
        *model_fns(M.create("linear", 1)),
        tx,
        batch_size=batch_size,
        steps=steps,
        eval_every=eval_every,
        seed=seed,
        reduction=reduction,
    )


def test_sum_reduction_and_lr_rules_across_batch_sizes_equal_an_optax_loop():
    spec = dict(dataset="regression", dataset_options=REG, model="linear", steps=30, eval_every=10)
    grid = S.Grid(
        optimizer=["sgd"],
        reduction=["mean", "sum"],
        lr_rule=["linear", "sqrt"],  # "none" is every other test's
        base_batch_size=[16],
        batch_size=[8, 32],
        learning_rate=[0.004],
    )
    table = S.sweep(spec, grid, strategy="mask", progress=False).table  # one program per rule
    assert len(table) == 8 * 3
    factor = {"linear": lambda b: b / 16, "sqrt": lambda b: np.sqrt(b / 16)}
    for reduction in ("mean", "sum"):
        for rule, scale in factor.items():
            for b in (8, 32):
                curves = _linear_regression_loop(optax.sgd(0.004 * scale(b)), b, 30, reduction=reduction)
                assert_config_matches(table, dict(reduction=reduction, lr_rule=rule, batch_size=b), curves)


@pytest.mark.parametrize("flags", ["nesterov", "ema_bias_correction"])
def test_optimizer_flags_equal_optax(flags):
    options = {"nesterov": {"nesterov": True}, "ema_bias_correction": {"ema": True, "bias_correction": True}}
    spec = dict(
        dataset="regression",
        dataset_options=REG,
        model="linear",
        steps=30,
        eval_every=10,
        optimizer="momentum",
        optimizer_flags=options[flags],
        batch_size=16,
    )
    grid = S.Grid(learning_rate=[0.01, 0.05], beta=[0.5, 0.9])
    table = S.sweep(spec, grid, progress=False).table
    for lr in (0.01, 0.05):
        for beta in (0.5, 0.9):
            if flags == "nesterov":
                tx = optax.sgd(lr, momentum=beta, nesterov=True)
            else:  # a bias-corrected moving average of the gradients, times -lr
                tx = optax.chain(optax.ema(beta, debias=True), optax.scale_by_learning_rate(lr))
            assert_config_matches(
                table, dict(learning_rate=lr, beta=beta), _linear_regression_loop(tx, 16, 30)
            )


def test_a_flag_that_an_optimizer_of_the_grid_does_not_take_is_one_line():
    spec = dict(
        dataset="regression",
        dataset_options=REG,
        model="linear",
        steps=10,
        optimizer_flags={"nesterov": True},
    )
    grid = S.Grid(optimizer=["momentum", "adam"], learning_rate=[0.01])
    with pytest.raises(
        InputError,
        match=r"^optimizer flag 'nesterov' is invalid for optimizer='adam': "
        r"expected one of 'bias_correction'$",
    ):
        S.sweep(spec, grid, progress=False)
    with pytest.raises(InputError, match=r"optimizer flag 'centered' is invalid for optimizer='sgd'"):
        T.train(
            T.TrainSpec(
                dataset="regression",
                model="linear",
                optimizer="sgd",
                optimizer_flags={"centered": True},
                steps=2,
            )
        )


@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
def test_cnn1d_sweep_equals_an_optax_loop(batchnorm):
    options = {"channels": (4, 4), "batchnorm": batchnorm}
    spec = dict(
        dataset="digits",
        model="cnn1d",
        model_options=options,
        steps=20,
        eval_every=10,
        optimizer="momentum",
        batch_size=32,
    )
    grid = S.Grid(learning_rate=[0.01, 0.05], bn_momentum=[0.9], seed=[3])
    table = S.sweep(spec, grid, progress=False).table
    ds = D.load("digits")
    model = M.create("cnn1d", 10, **options)
    for lr in (0.01, 0.05):
        for seed in (3,):
            curves = optax_loop(
                ds,
                *model_fns(model, 0.9),
                optax.sgd(lr, momentum=0.9),
                batch_size=32,
                steps=20,
                eval_every=10,
                seed=seed,
            )
            assert_config_matches(table, dict(learning_rate=lr, seed=seed), curves, accuracy_atol=1.5e-3)


class _FlaxNet(nn.Module):  # the README's example, narrower
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(16)(x))
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        return nn.Dense(10)(x)


def test_a_flax_module_with_batchnorm_in_a_sweep_equals_a_flax_optax_loop():
    module = _FlaxNet()
    spec = {"dataset": "digits", "model": M.from_flax(module), "steps": 20, "eval_every": 10}
    grid = S.Grid(optimizer=["momentum"], learning_rate=[0.01, 0.1], batch_size=[16, 32])
    result = S.sweep(spec, grid, progress=False)
    assert result.strategy == "bucket"  # a flax module cannot be told which rows are padding

    def init(key, x):
        variables = module.init(key, x, train=False)
        return variables["params"], variables["batch_stats"]

    def apply(params, stats, x, train):
        variables = {"params": params, "batch_stats": stats}
        if train:
            out, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
            return out, updates["batch_stats"]
        return module.apply(variables, x, train=False), stats

    ds = D.load("digits")
    for name, make in (("momentum", lambda lr: optax.sgd(lr, momentum=0.9)),):
        for lr in (0.01, 0.1):
            for b in (16, 32):
                curves = optax_loop(ds, init, apply, make(lr), batch_size=b, steps=20, eval_every=10, seed=0)
                assert_config_matches(
                    result.table,
                    dict(optimizer=name, learning_rate=lr, batch_size=b),
                    curves,
                    accuracy_atol=1.5e-3,
                )


@pytest.mark.parametrize(
    "batch_sizes, steps, expected",
    [((8, 9), 30, "mask"), ((8, 256), 450, "bucket")],
    ids=["close-sizes-mask", "far-sizes-bucket"],
)
def test_auto_chooses_each_strategy_and_both_equal_an_optax_loop(batch_sizes, steps, expected):
    options = {**REG, "n": 512}
    spec = dict(
        dataset="regression",
        dataset_options=options,
        model="linear",
        steps=steps,
        eval_every=steps // 3,
        optimizer="sgd",
    )
    grid = S.Grid(learning_rate=[0.01, 0.03], batch_size=list(batch_sizes))
    result = S.sweep(spec, grid, progress=False)
    assert result.strategy == expected
    for lr in (0.01, 0.03):
        for b in batch_sizes:
            curves = _linear_regression_loop(optax.sgd(lr), b, steps, eval_every=steps // 3, options=options)
            assert_config_matches(result.table, dict(learning_rate=lr, batch_size=b), curves)


def test_an_epochs_budget_equals_an_optax_loop_of_that_many_steps():
    spec = dict(dataset="regression", dataset_options=REG, model="linear", eval_every=8, optimizer="adam")
    grid = S.Grid(learning_rate=[0.01], batch_size=[16, 32])
    table = S.sweep(spec, grid, epochs=2, progress=False).table
    for b in (16, 32):
        steps = 2 * (256 // b)
        curves = _linear_regression_loop(optax.adam(0.01), b, steps, eval_every=8)
        assert_config_matches(table, dict(batch_size=b), curves)


def _npz(tmp_path, rng):
    arrays = {
        "x_train": rng.normal(size=(200, 6)).astype(np.float32),
        "y_train": rng.integers(0, 3, size=200).astype(np.int64),
        "x_test": rng.normal(size=(50, 6)).astype(np.float32),
        "y_test": rng.integers(0, 3, size=50).astype(np.int64),
    }
    arrays["x_train"][:, 0] += arrays["y_train"]  # something to learn
    arrays["x_test"][:, 0] += arrays["y_test"]
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    # the dataset as the file defines it: raw arrays (npz is not standardized), 3 classes
    ds = D.Dataset(
        jnp.asarray(arrays["x_train"]),
        jnp.asarray(arrays["y_train"], jnp.int32),
        jnp.asarray(arrays["x_test"]),
        jnp.asarray(arrays["y_test"], jnp.int32),
        3,
        "npz",
    )
    return path, ds


def test_an_npz_dataset_from_the_command_equals_an_optax_loop(tmp_path):
    """`jaxopt-lab sweep` on a user's .npz with sum reduction, the sqrt rule and an epochs budget."""
    from jaxopt_lab import cli

    path, ds = _npz(tmp_path, np.random.default_rng(0))
    out = tmp_path / "out"
    code = cli.main(
        [
            "sweep",
            "--dataset",
            f"npz:{path}",
            "--model",
            "mlp",
            "--hidden",
            "8",
            "--optimizer",
            "sgd",
            "--lr",
            "0.002,0.005",
            "--batch-size",
            "16,32",
            "--seeds",
            "1",
            "--reduction",
            "sum",
            "--lr-rule",
            "sqrt",
            "--base-batch-size",
            "16",
            "--epochs",
            "2",
            "--eval-every",
            "5",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    table = pd.read_parquet(out / "results.parquet")
    model = M.create("mlp", 3, hidden=(8,))
    for lr in (0.002, 0.005):
        for b in (16, 32):
            tx = optax.sgd(lr * np.sqrt(b / 16))
            curves = optax_loop(
                ds,
                *model_fns(model),
                tx,
                batch_size=b,
                steps=2 * (200 // b),
                eval_every=5,
                seed=0,
                reduction="sum",
            )
            assert_config_matches(table, dict(learning_rate=lr, batch_size=b), curves, accuracy_atol=1e-6)


# ------------------------------------------------------------------ the output folder is the user's


def _tree_bytes(folder):
    """Every file under ``folder`` with its bytes: a folder left alone has the same."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


TINY_GRID = dict(optimizer=["sgd"], learning_rate=[1e-2, 1e-1], batch_size=[8])


def test_overwrite_replaces_only_a_sweeps_own_files(tmp_path):
    out = tmp_path / "out"
    _run(S.Grid(**TINY_GRID), out=out, plots=False)
    (out / "notes.txt").write_text("my notes")
    before = _tree_bytes(out)
    with pytest.raises(InputError, match=r"holds files a sweep does not write \('notes.txt'\)"):
        _run(S.Grid(**TINY_GRID), out=out, overwrite=True, plots=False)
    assert _tree_bytes(out) == before  # nothing touched
    (out / "notes.txt").unlink()
    (out / "chunks" / "mine.parquet").write_bytes(b"x")
    with pytest.raises(InputError, match=r"'chunks/mine.parquet'"):
        _run(S.Grid(**TINY_GRID), out=out, overwrite=True, plots=False)
    (out / "chunks" / "mine.parquet").unlink()
    # the pictures of a measured sweep with a target, and of `jaxopt-lab report`, are its own too
    for name in (
        "heatmap.png",
        "curves_sharpness.png",
        "curves_sharpness_by_step.png",
        "heatmap_steps_to_target.png",
    ):
        (out / name).write_bytes(b"png")
    # a folder holding only a sweep's files is replaced by the new sweep
    other = S.Grid(optimizer=["sgd"], learning_rate=[0.05], batch_size=[8])
    table = _run(other, out=out, overwrite=True, plots=False)
    assert sorted(p.name for p in out.iterdir()) == ["chunks", "results.parquet", "summary.csv", "sweep.toml"]
    assert list(pd.read_parquet(out / "results.parquet")["learning_rate"].unique()) == [0.05]
    assert len(table) == 2


def test_resume_sets_a_corrupt_chunk_aside_recomputes_it_and_removes_stray_temporary_files(tmp_path):
    grid = S.Grid(optimizer=["sgd"], learning_rate=[1e-2, 3e-2, 1e-1, 3e-1], batch_size=[8])
    full = _run(grid, chunk_size=4, out=tmp_path, plots=False)
    chunks = sorted((tmp_path / "chunks").iterdir())
    assert len(chunks) == 1
    good = chunks[0].read_bytes()
    chunks[0].write_bytes(good[: len(good) // 2])  # a chunk file cut short by a kill
    (tmp_path / "results.parquet").unlink()
    stray = tmp_path / "chunks" / ".group000-chunk0001.parquet.0123abcd.tmp"
    stray.write_bytes(b"half a write")
    with pytest.warns(
        UserWarning, match=r"chunk file .*group000-chunk0000.parquet is unreadable.*moved it to"
    ):
        resumed = _run(grid, chunk_size=4, out=tmp_path, resume=True, plots=False)
    _assert_same(resumed, full)
    assert not stray.exists()
    assert (tmp_path / "chunks" / "group000-chunk0000.parquet.corrupt").read_bytes() == good[: len(good) // 2]
    assert len(pd.read_parquet(chunks[0])) == len(full)  # computed again and written whole


def test_an_output_folder_that_cannot_be_created_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file")
    with pytest.raises(InputError, match=r"out='.*file/sub' is invalid: cannot create that folder"):
        _run(S.Grid(**TINY_GRID), out=blocker / "sub", plots=False)
    assert blocker.read_text() == "a regular file"


@pytest.mark.parametrize(
    "options, match",
    [
        (
            dict(model="linear", model_options={"hidden": (64,)}),
            "option 'hidden' is invalid for model='linear': it takes none",
        ),
        (dict(model_options={"hidden": (0,)}), "hidden="),
        (dict(model_options={"widths": (8,)}), "option 'widths' is invalid for model='mlp': expected one of"),
    ],
)
def test_bad_model_options_raise_before_anything_is_written(tmp_path, options, match):
    out = tmp_path / "out"
    with pytest.raises(InputError, match=match):
        S.sweep({**SPEC, **options}, S.Grid(**TINY_GRID), out=out, progress=False)
    assert not out.exists()


def test_a_chunk_is_never_padded_beyond_the_configs_that_exist(monkeypatch):
    widths = []
    real = S.run_chunk

    def recording(group, configs, *args, **kwargs):
        widths.append(len(configs))
        return real(group, configs, *args, **kwargs)

    monkeypatch.setattr(S, "run_chunk", recording)
    grid = S.Grid(optimizer=["sgd"], learning_rate=[0.01], batch_size=[8])
    table = _run(grid, chunk_size=1_000_000, plots=False)
    assert widths == [len(jax.devices())]  # one config per device at most, not a million
    assert table["config_id"].nunique() == 1


def test_a_sweep_that_cannot_fit_the_machine_is_refused_with_the_numbers(monkeypatch):
    monkeypatch.setattr(G, "_host_memory_bytes", lambda: 1 << 20)  # a 1 MiB machine
    with pytest.raises(
        InputError,
        match=r"too large for this machine: 400 configs x 1 evaluation points need "
        r"about 0\.0 GiB .* than half of its 0\.0 GiB",
    ):
        S.Grid(learning_rate=list(np.logspace(-3, 0, 20)), seed=list(range(20))).configs()
    with pytest.raises(InputError, match=r"2 configs x 2,000 evaluation points"):
        S.sweep({**SPEC, "steps": 2000, "eval_every": 1}, S.Grid(learning_rate=[0.1, 0.2]), progress=False)


@pytest.mark.parametrize("progress", [True, "lines"])
def test_progress_off_a_terminal_is_one_line_per_group_without_carriage_returns(capsys, progress):
    grid = S.Grid(optimizer=["sgd", "momentum"], learning_rate=[0.01], batch_size=[8])
    S.sweep(SPEC, grid, strategy="bucket", progress=progress)
    err = capsys.readouterr().err  # captured: not a terminal
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("group 1/2 done (optimizer=sgd, batch_size=8, 1 configs): 1/2 configs in ")
    assert lines[1].startswith("group 2/2 done (optimizer=momentum, batch_size=8, 1 configs): 2/2 configs")
    S.sweep(SPEC, grid, strategy="bucket", progress=False)
    assert capsys.readouterr().err == ""
    with pytest.raises(InputError, match=r"progress='bar' is invalid: expected one of True, False, 'lines'"):
        S.sweep(SPEC, grid, progress="bar")


class _Recorder:
    """A progress object of one's own: records what the engine reports."""

    def __init__(self):
        self.steps, self.configs, self.groups, self.closed = 0, 0, [], 0

    def advance(self, config_steps, configs_done):
        self.steps, self.configs = self.steps + config_steps, self.configs + configs_done

    def group_done(self, index, group):
        self.groups.append((index, group.spec.optimizer.name, len(group.config_ids)))

    def close(self):
        self.closed += 1


def test_a_folder_and_a_progress_of_ones_own(tmp_path):
    """sweep(out=Folder(...)) names the options as the folder says and draws only if asked;
    a progress object hears every config-step: 2 optimizers x 2 learning rates x 40 steps."""
    from jaxopt_lab.outputs.folder import Folder

    grid = S.Grid(optimizer=["sgd", "momentum"], learning_rate=[1e-2, 1e-1], batch_size=[8])
    recorder = _Recorder()
    table = S.sweep(SPEC, grid, strategy="bucket", out=Folder(tmp_path, plots=False), progress=recorder).table
    assert (recorder.steps, recorder.configs, recorder.closed) == (4 * 40, 4, 1)
    assert recorder.groups == [(0, "sgd", 2), (1, "momentum", 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "chunks",
        "results.parquet",
        "summary.csv",
        "sweep.toml",
    ]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "results.parquet"), table)
    with pytest.raises(
        InputError, match=r"not empty: pass --resume to finish it or --overwrite to replace it$"
    ):
        S.sweep(SPEC, grid, out=Folder(tmp_path, names={"resume": "--resume", "overwrite": "--overwrite"}))
    with pytest.raises(InputError, match=r"not empty: pass resume=True to finish it or overwrite=True"):
        S.sweep(SPEC, grid, out=tmp_path, progress=False)


def test_a_segment_runs_without_a_host_round_trip():
    """Inside a compiled segment nothing goes to or comes from the host: with every argument
    already on the devices, the call runs under jax.transfer_guard("disallow")."""
    spec = T.TrainSpec(**{**SPEC, "optimizer": "adam", "steps": 20, "eval_every": 10})
    devices = tuple(jax.devices())
    init_p, segment_p, _, arrays, by_config = C.programs(spec, False, devices)
    n = len(devices)
    hparams = {k: np.full(n, v, np.float32) for k, v in T.default_hparams("adam").items()}
    keys = np.arange(n, dtype=np.uint32)  # seeds: init makes the keys
    hparams, keys = jax.device_put((hparams, keys), by_config)
    state = init_p(arrays, hparams, keys)
    replicated = jax.sharding.NamedSharding(by_config.mesh, jax.sharding.PartitionSpec())
    scalars = jax.device_put((np.int32(0), np.int32(10)), replicated)
    per_config = jax.device_put(
        (np.full(n, 20, np.int32), np.zeros(n, np.int32), np.ones(n, bool)), by_config
    )
    with jax.transfer_guard("disallow"):
        new_state, metrics = segment_p(arrays, hparams, state, *scalars, *per_config)
        jax.block_until_ready((new_state, metrics))
    assert np.all(np.isfinite(np.asarray(metrics.test_loss)))


# ------------------------------------------------------------------ losses


def test_label_smoothing_is_a_traced_axis_equal_to_optax_smoothed_labels():
    """Cross-entropy against optax.smooth_labels(one_hot(y), a); the test loss stays plain."""
    spec = dict(
        dataset="digits",
        model="mlp",
        model_options={"hidden": (16,)},
        steps=20,
        eval_every=10,
        optimizer="sgd",
        batch_size=32,
    )
    grid = S.Grid(label_smoothing=[0.0, 0.2], learning_rate=[0.1])
    result = S.sweep(spec, grid, progress=False)
    ds = D.load("digits")
    model = M.create("mlp", 10, hidden=(16,))
    for a in (0.0, 0.2):

        def smoothed(out, y, a=a):
            return optax.softmax_cross_entropy(out, optax.smooth_labels(jax.nn.one_hot(y, 10), a))

        curves = optax_loop(
            ds,
            *model_fns(model),
            optax.sgd(0.1),
            batch_size=32,
            steps=20,
            eval_every=10,
            seed=0,
            loss_fn=smoothed,
        )
        assert_config_matches(result.table, dict(label_smoothing=a), curves, accuracy_atol=1.5e-3)
    smooth = result.table[result.table.label_smoothing == 0.2]
    plain = result.table[result.table.label_smoothing == 0.0]
    assert (smooth.train_loss.to_numpy() > plain.train_loss.to_numpy()).all()  # the smoothing is applied


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_a_named_or_callable_loss_equals_an_optax_loop(loss):
    fn = "mse" if loss == "mse" else (lambda out, y: jnp.sum(optax.huber_loss(out, y, delta=0.5), axis=-1))
    reference = (lambda out, y: jnp.mean(jnp.square(out - y), axis=-1)) if loss == "mse" else fn
    spec = dict(
        dataset="regression",
        dataset_options=REG,
        model="linear",
        steps=30,
        eval_every=10,
        optimizer="sgd",
        batch_size=16,
        loss=fn,
    )
    table = S.sweep(spec, S.Grid(learning_rate=[0.01, 0.1]), progress=False).table
    for lr in (0.01, 0.1):
        ds = D.load("regression", **REG)
        curves = optax_loop(
            ds,
            *model_fns(M.create("linear", 1)),
            optax.sgd(lr),
            batch_size=16,
            steps=30,
            eval_every=10,
            seed=0,
            loss_fn=reference,
            test_loss_fn=reference,
        )
        assert_config_matches(table, dict(learning_rate=lr), curves)


def test_bad_losses_are_one_line_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(
        InputError,
        match=r"loss='cross_entropy' is invalid for dataset='regression': it has no "
        r"classes",
    ):
        S.sweep(
            dict(dataset="regression", model="linear", loss="cross_entropy"),
            S.Grid(learning_rate=[0.1]),
            out=out,
            progress=False,
        )
    with pytest.raises(
        InputError, match=r"label_smoothing=1\.0 is invalid: expected 0 <= label_smoothing < 1"
    ):
        S.sweep(SPEC, S.Grid(label_smoothing=[1.0]), out=out, progress=False)
    assert not out.exists()


def test_a_sweep_on_arrays_from_python_equals_an_optax_loop_and_records_them(tmp_path, capsys):
    _, ds = _npz(tmp_path, np.random.default_rng(1))
    spec = dict(
        dataset=D.from_arrays(*(np.asarray(a) for a in ds[:4]), name="mine"),
        model="mlp",
        model_options={"hidden": (8,)},
        steps=20,
        eval_every=10,
        optimizer="sgd",
        batch_size=16,
    )
    out = tmp_path / "out"
    table = S.sweep(spec, S.Grid(learning_rate=[0.01, 0.1]), out=out, progress=False).table
    model = M.create("mlp", 3, hidden=(8,))
    for lr in (0.01, 0.1):
        curves = optax_loop(
            ds, *model_fns(model), optax.sgd(lr), batch_size=16, steps=20, eval_every=10, seed=0
        )
        assert_config_matches(table, dict(learning_rate=lr), curves, accuracy_atol=1e-6)
    definition = schema.read_definition(out / "sweep.toml")
    assert definition["spec"]["dataset"] == "arrays:mine"
    recorded = definition["dataset_options"]["arrays"]
    assert recorded["shapes"] == {"x_train": [200, 6], "y_train": [200], "x_test": [50, 6], "y_test": [50]}
    assert len(recorded["sha256"]) == 64 and recorded["num_classes"] == 3
    # other arrays of the same shapes: a resume refuses them, naming the difference
    other = D.from_arrays(np.asarray(ds.x_train) + 1, *(np.asarray(a) for a in ds[1:4]), name="mine")
    with pytest.raises(InputError, match=r"cannot resume .*: \[dataset_options\] arrays is"):
        S.sweep(
            {**spec, "dataset": other},
            S.Grid(learning_rate=[0.01, 0.1]),
            out=out,
            resume=True,
            progress=False,
        )
    # the command cannot rebuild arrays given in Python, and says so
    from jaxopt_lab import cli

    assert cli.main(["sweep", "--config", str(out / "sweep.toml"), "--out", str(tmp_path / "again")]) == 2
    assert not (tmp_path / "again").exists()
    assert "came from arrays given in Python (data.from_arrays)" in capsys.readouterr().err


class _ThreeOutputs(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x)


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            dict(dataset="digits", model=M.from_flax(_ThreeOutputs())),
            r"model outputs of shape \(2, 3\) for 2 examples are invalid for 10 classes: expected \(2, 10\)",
        ),
        (
            dict(dataset="regression", dataset_options=REG, model=M.from_flax(_ThreeOutputs())),
            r"model outputs of shape \(2, 3\) .* targets of shape \(2, 1\) under loss='squared_error'",
        ),
        (
            dict(dataset="regression", dataset_options=REG, model="linear", loss=lambda o, y: jnp.sum(o - y)),
            r"loss='<lambda>' returned shape \(\) for 2 examples: expected per-example losses of shape",
        ),
        (
            dict(dataset="regression", dataset_options=REG, model="linear", loss=lambda o, y: o @ y),
            r"loss='<lambda>' cannot take outputs of shape \(2, 1\) and targets of shape \(2, 1\): TypeError",
        ),
    ],
)
def test_a_model_or_loss_that_does_not_fit_the_targets_is_one_line_and_writes_nothing(
    tmp_path, spec, message
):
    out = tmp_path / "out"
    with pytest.raises(InputError, match=message):
        S.sweep({**spec, "steps": 2, "eval_every": 1}, S.Grid(learning_rate=[0.1]), out=out, progress=False)
    assert not out.exists()
    with pytest.raises(InputError, match=message):
        T.train(T.TrainSpec(**{**spec, "steps": 2, "eval_every": 1}))


def test_clear_caches_frees_programs_and_datasets_and_the_next_sweep_gives_the_same_table(monkeypatch):
    """Our caches are emptied and JAX's are cleared (counted here, so that the rest of the
    suite keeps its compiled programs)."""
    import jaxopt_lab
    from jaxopt_lab.engine import train as T

    cleared = []
    monkeypatch.setattr(jax, "clear_caches", lambda: cleared.append(True))
    spec = dict(dataset="regression", model="linear", optimizer="sgd", steps=10, eval_every=5)
    first = S.sweep(spec, S.Grid(learning_rate=[0.01, 0.1]), progress=False).table
    assert C.programs.cache_info().currsize > 0 and T.load_dataset.cache_info().currsize > 0
    jaxopt_lab.clear_caches()
    assert C.programs.cache_info().currsize == 0 and T.load_dataset.cache_info().currsize == 0
    assert cleared == [True]
    again = S.sweep(spec, S.Grid(learning_rate=[0.01, 0.1]), progress=False).table
    pd.testing.assert_frame_equal(again, first)


def test_a_chunk_whose_configs_all_diverged_ends_early_and_keeps_their_nan_rows(monkeypatch):
    """Two configs that diverge at the first point: their chunk stops computing there, and the
    table still holds every point, NaN and diverged, with the learning rate the schedule gives
    (optax's warmup-cosine schedule, step - 1 at each point)."""
    segments = []
    to_host = C._to_host
    monkeypatch.setattr(C, "_to_host", lambda tree: segments.append(1) or to_host(tree))
    spec = dict(dataset="regression", model="linear", optimizer="sgd", steps=40, eval_every=5)
    grid = S.Grid(learning_rate=[1e4, 1e5], schedule=["warmup_cosine"], warmup_steps=[10])
    table = S.sweep(spec, grid, chunk_size=2, progress=False).table
    assert len(segments) == 2  # one segment of 8 and its replay (the configs diverged in it)
    assert table.groupby("config_id")["step"].apply(list).tolist() == [list(range(5, 41, 5))] * 2
    assert table["diverged"].all() and table["test_loss"].isna().all()
    for lr, rows in table.groupby("learning_rate"):
        schedule = optax.warmup_cosine_decay_schedule(0.0, lr, 10, 40, 0.0)
        expected = [float(schedule(s - 1)) for s in rows["step"]]
        np.testing.assert_allclose(rows["applied_lr"], expected, rtol=1e-6)
