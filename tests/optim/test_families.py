"""Optimizer families in sweeps: every registered family, a user's own chain and swept flags,
config by config against a plain optax loop written here."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_lab import TrainSpec
from jaxopt_lab import data as D
from jaxopt_lab.engine import sweep as S
from jaxopt_lab.errors import InputError
from jaxopt_lab.optim import families as O

REG = {"n": 128, "dim": 3, "n_test": 32, "noise": 0.1}
SPEC = dict(dataset="regression", dataset_options=REG, model="linear", batch_size=16, steps=24, eval_every=8)
POINTS = (8, 16, 24)


@functools.cache
def _reference_program(make):
    """A plain optax loop on linear regression, vmapped over the configs' hyperparameters.

    ``make(**hparams) -> optax.GradientTransformation`` is optax's own alias (or a chain of
    its parts); the model, loss, batches and evaluation are written here. The key split and
    the initial weights follow the engine's documented convention (``split(key(seed))``,
    a dense layer from flax's default initializers; read off the engine's first state).
    """
    ds = D.load("regression", **REG)
    n = ds.x_train.shape[0]

    def run(hparams, params, data_key):
        tx = make(**hparams)

        def loss(p, x, y):
            return 0.5 * jnp.mean(jnp.sum(jnp.square(x @ p["kernel"] + p["bias"] - y), -1))

        def step(carry, t):
            p, state = carry
            idx, _ = D.batch_indices(data_key, t, n, SPEC["batch_size"])
            value, g = jax.value_and_grad(loss)(p, ds.x_train[idx], ds.y_train[idx])
            updates, state = tx.update(g, state, p)
            return (optax.apply_updates(p, updates), state), value

        carry = (params, tx.init(params))
        train, test = [], []
        start = 0
        for end in POINTS:
            carry, values = jax.lax.scan(step, carry, jnp.arange(start, end))
            train.append(values.mean())
            test.append(loss(carry[0], ds.x_test, ds.y_test))
            start = end
        return jnp.stack(train), jnp.stack(test)

    return jax.jit(jax.vmap(run))


def _initial_params(seeds):
    """The linear model's initial parameters for each seed, as the engine draws them."""
    from jaxopt_lab.nn import models as M

    ds = D.load("regression", **REG)
    model = M.create("linear", 1)
    init_keys = [jax.random.split(jax.random.key(int(s)))[0] for s in seeds]
    params = [model.init(k, ds.x_train[:1])[0] for k in init_keys]
    leaves = jax.tree.leaves(params[0], is_leaf=lambda p: isinstance(p, dict) and "kernel" in p)
    assert len(leaves) == 1  # one dense layer
    stacked = jax.tree.map(
        lambda *x: jnp.stack(x),
        *[jax.tree.leaves(p, is_leaf=lambda q: isinstance(q, dict) and "kernel" in q)[0] for p in params],
    )
    data_keys = jnp.stack([jax.random.split(jax.random.key(int(s)))[1] for s in seeds])
    return stacked, data_keys


def _compare(table, reference_make, names):
    """Every config of ``table`` against the reference loop at its hyperparameters ``names``."""
    summary = table.drop_duplicates("config_id").sort_values("config_id")
    hparams = {k: jnp.asarray(summary[k].to_numpy(np.float32)) for k in names}
    params, data_keys = _initial_params(summary["seed"].to_numpy())
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        train, test = _reference_program(reference_make)(hparams, params, data_keys)
    rows = table.sort_values(["config_id", "step"])
    assert list(rows["step"].unique()) == list(POINTS)
    ours_train = rows["train_loss"].to_numpy().reshape(len(summary), len(POINTS))
    ours_test = rows["test_loss"].to_numpy().reshape(len(summary), len(POINTS))
    assert np.all(np.isfinite(ours_test))
    np.testing.assert_allclose(ours_train, np.asarray(train), rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(ours_test, np.asarray(test), rtol=2e-4, atol=1e-6)
    # the swept values reach the optimizer: configs differ from each other
    assert len({tuple(np.round(r, 6)) for r in ours_test}) == len(summary)


def _lars(beta, **hparams):  # optax calls the momentum coefficient momentum
    return optax.lars(momentum=beta, **hparams)


def _signum(learning_rate, beta):
    return optax.signum(learning_rate, beta=beta)


def _momentum(learning_rate, beta):
    return optax.sgd(learning_rate, momentum=beta)


# family -> (optax's own alias for the reference, {two swept hyperparameters: values})
FAMILIES = {
    "sgd": (optax.sgd, {"learning_rate": [0.02, 0.1]}),
    "momentum": (_momentum, {"learning_rate": [0.01, 0.03], "beta": [0.5, 0.9]}),
    "rmsprop": (optax.rmsprop, {"learning_rate": [1e-3, 1e-2], "decay": [0.8, 0.95]}),
    "adam": (optax.adam, {"b1": [0.5, 0.9], "b2": [0.9, 0.999]}),
    "adamw": (optax.adamw, {"learning_rate": [0.01, 0.05], "weight_decay": [0.0, 0.5]}),
    "nadam": (optax.nadam, {"b1": [0.5, 0.9], "eps": [1e-8, 1e-2]}),
    "nadamw": (optax.nadamw, {"b2": [0.9, 0.999], "weight_decay": [0.0, 0.5]}),
    "lion": (optax.lion, {"b1": [0.5, 0.9], "weight_decay": [0.0, 0.5]}),
    "lamb": (optax.lamb, {"learning_rate": [0.01, 0.05], "weight_decay": [0.0, 0.5]}),
    "lars": (_lars, {"learning_rate": [0.1, 1.0], "trust_coefficient": [0.01, 0.1]}),
    "adagrad": (optax.adagrad, {"learning_rate": [0.05, 0.2], "initial_accumulator_value": [0.01, 0.5]}),
    "adabelief": (optax.adabelief, {"b1": [0.5, 0.9], "eps": [1e-16, 1e-3]}),
    "signum": (_signum, {"learning_rate": [1e-3, 1e-2], "beta": [0.5, 0.9]}),
    "sign_sgd": (optax.sign_sgd, {"learning_rate": [1e-3, 1e-2]}),
    "adafactor": (optax.adafactor, {"learning_rate": [0.01, 0.05], "decay_rate": [0.5, 0.8]}),
}


def test_every_registered_family_is_tested():
    assert set(FAMILIES) == set(O.REGISTRY)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_registered_family_in_a_sweep_equals_a_plain_optax_loop(name):
    reference, axes = FAMILIES[name]
    family = O.REGISTRY[name]
    fixed = {k: v for k, v in family.defaults.items() if k not in axes}
    table = S.sweep({**SPEC, "optimizer": name}, S.Grid(**axes, seed=[0, 1]), progress=False).table
    names = list(family.hparam_names)
    for k, v in fixed.items():  # the family's defaults, as columns for the reference
        table[k] = v
    _compare(table, reference, names)


def test_a_users_chain_with_its_own_hyperparameters_as_axes():
    """The issue's example: clipping + AdamW, the clip threshold and the weight decay swept."""

    def clipped_adamw(learning_rate, clip, weight_decay):
        return optax.chain(
            optax.clip_by_global_norm(clip), optax.adamw(learning_rate, weight_decay=weight_decay)
        )

    family = O.Optimizer(clipped_adamw, {"learning_rate": 0.05, "clip": 1.0, "weight_decay": 1e-4})
    grid = S.Grid(optimizer=[family], clip=[0.1, 10.0], weight_decay=[0.0, 0.5])
    table = S.sweep(SPEC, grid, progress=False).table
    assert set(table["optimizer"]) == {"clipped_adamw"}
    table["learning_rate"] = 0.05
    _compare(table, clipped_adamw, ["learning_rate", "clip", "weight_decay"])


def test_a_flag_swept_as_an_axis_makes_a_group_each():
    def nesterov_sgd(learning_rate, beta, nesterov):
        return optax.sgd(learning_rate, momentum=beta, nesterov=nesterov)

    grid = S.Grid(optimizer=["momentum"], nesterov=[False, True], learning_rate=[0.02], beta=[0.9])
    groups, _ = S.plan(TrainSpec(**SPEC), grid.configs(TrainSpec(**SPEC)), np.full(2, 24), "bucket")
    assert sorted(dict(g.spec.optimizer_flags)["nesterov"] for g in groups) == [False, True]
    table = S.sweep(SPEC, grid, progress=False).table
    for nesterov in (False, True):
        rows = table[table["nesterov"] == nesterov].copy()
        _compare(rows, functools.partial(nesterov_sgd, nesterov=nesterov), ["learning_rate", "beta"])
    a, b = (table[table["nesterov"] == v]["test_loss"].to_numpy() for v in (False, True))
    assert not np.allclose(a, b)


def _warmup_sgd(learning_rate, warmup):
    # optax's schedule builders branch in Python on their arguments: `warmup` cannot be traced.
    return optax.sgd(optax.linear_schedule(0.0, learning_rate, warmup))


def test_a_factory_that_cannot_take_a_traced_value_is_one_line_naming_it(tmp_path):
    family = O.Optimizer(_warmup_sgd, {"learning_rate": 0.1, "warmup": 10})
    with pytest.raises(
        InputError,
        match=r"^optimizer='_warmup_sgd': its factory cannot take a traced 'warmup' "
        r"\(it uses the value in Python\); declare it static",
    ):
        S.sweep(SPEC, S.Grid(optimizer=[family]), out=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    # declared static, it runs: one group per value
    family = O.Optimizer(_warmup_sgd, {"learning_rate": 0.1}, static={"warmup": 10})
    table = S.sweep(SPEC, S.Grid(optimizer=[family], warmup=[4, 8]), progress=False).table
    assert sorted(table["warmup"].unique()) == [4, 8]


@pytest.mark.parametrize(
    "build, match",
    [
        (
            lambda: O.Optimizer(optax.sgd, {"lr": 0.1}),
            r"hparams=\{'lr': 0\.1\} is invalid: expected a 'learning_rate'",
        ),
        (
            lambda: O.Optimizer(optax.sgd, {"learning_rate": "0.1"}),
            r"hparams\['learning_rate'\]='0\.1' is invalid",
        ),
        (
            lambda: O.Optimizer(optax.sgd, {"learning_rate": 0.1, "nesterov": True}),
            r"'nesterov'\]=True is invalid",
        ),
        (
            lambda: O.Optimizer(optax.sgd, {"learning_rate": 0.1, "m": 1.0}, {"m": 2}),
            r"'m' is in both hparams",
        ),
        (
            lambda: O.Optimizer("sgd", {"learning_rate": 0.1}),
            r"factory='sgd' is invalid: expected a callable",
        ),
        (
            lambda: O.Optimizer(optax.adamw, {"learning_rate": 0.1}, {"mask": {"w": True}}),
            r"static\['mask'\]=\{'w': True\} is invalid: a static value selects a compiled group",
        ),
        (lambda: S.Grid(optimizer=["adam"], clip=[1.0]), r"grid axis 'clip' is invalid: expected one of"),
        (
            lambda: S.Grid(
                optimizer=["adam", O.Optimizer(optax.adam, {"learning_rate": 0.1}, name="adam")]
            ).families(),
            r"optimizer name 'adam' is given to two different families",
        ),
        (
            lambda: O.REGISTRY["adam"].build({"momentum": 0.9}),
            r"hyperparameter 'momentum' is invalid for "
            r"optimizer='adam': expected one of 'learning_rate', 'b1'",
        ),
        (lambda: O.resolve("adamx"), r"optimizer='adamx' is invalid: expected one of 'sgd', 'momentum'"),
    ],
)
def test_bad_families_are_one_line(build, match):
    with pytest.raises(InputError, match=match):
        build()


def test_the_command_sweeps_optax_families_by_name(tmp_path, capsys):
    from jaxopt_lab import cli

    out = tmp_path / "out"
    argv = [
        "sweep",
        "--dataset",
        "regression",
        "--model",
        "linear",
        "--optimizer",
        "adamw,lion",
        "--lr",
        "1e-3,1e-2",
        "--batch-size",
        "16",
        "--seeds",
        "1",
        "--steps",
        "10",
        "--eval-every",
        "5",
        "--weight-decay",
        "0,0.1",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    import pandas as pd

    table = pd.read_parquet(out / "results.parquet")
    assert set(table["optimizer"]) == {"adamw", "lion"}
    assert len(table["config_id"].unique()) == 8
