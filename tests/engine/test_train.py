"""One run: train() against independent float64 NumPy and optax references."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _reference import model_fns, optax_loop

from jaxopt_lab import data
from jaxopt_lab.engine import train as T
from jaxopt_lab.nn import models

REG = (("n", 256), ("dim", 4), ("n_test", 64), ("noise", 0.1))


def _numpy_sgd_linear(spec, lr, seed, weight_decay=0.0):
    """SGD (+ L2 weight decay on w and b) on linear regression in float64 NumPy, with the
    batch order from data.batch_indices."""
    ds = T.load_dataset(spec.dataset, spec.dataset_options)
    key = jax.random.key(seed)
    init_key, data_key = jax.random.split(key)
    model = T.get_model(spec, ds)
    params, _ = model.init(init_key, ds.x_train[:1])
    ((w, b),) = [
        (np.asarray(p["kernel"], np.float64), np.asarray(p["bias"], np.float64))
        for p in jax.tree.leaves(params, is_leaf=lambda p: isinstance(p, dict) and "kernel" in p)
    ]
    x, y = np.asarray(ds.x_train, np.float64), np.asarray(ds.y_train, np.float64)
    xt, yt = np.asarray(ds.x_test, np.float64), np.asarray(ds.y_test, np.float64)
    n = x.shape[0]
    train_losses, test_losses, acc = [], [], []
    for step in range(spec.steps):
        idx, _ = data.batch_indices(data_key, step, n, spec.batch_size)
        idx = np.asarray(idx)
        r = x[idx] @ w + b - y[idx]
        acc.append(0.5 * np.mean(np.sum(r**2, -1)))
        w = w - lr * (x[idx].T @ r / len(idx) + weight_decay * w)
        b = b - lr * (r.mean(0) + weight_decay * b)
        if (step + 1) % spec.eval_every == 0:
            train_losses.append(np.mean(acc))
            acc = []
            test_losses.append(0.5 * np.mean(np.sum((xt @ w + b - yt) ** 2, -1)))
    return np.array(train_losses), np.array(test_losses)


@pytest.mark.parametrize("weight_decay", [0.0, 0.5])  # 0 is left out of the program
def test_train_equals_float64_numpy_sgd_on_linear_regression(weight_decay):
    spec = T.TrainSpec(
        dataset="regression",
        dataset_options=REG,
        model="linear",
        optimizer="sgd",
        batch_size=16,
        steps=60,
        eval_every=20,
    )
    history = T.train(spec, {"learning_rate": 0.05, "weight_decay": weight_decay}, 3)
    ref_train, ref_test = _numpy_sgd_linear(spec, 0.05, 3, weight_decay)
    np.testing.assert_array_equal(history.step, [20, 40, 60])
    np.testing.assert_array_equal(history.examples_seen, [320, 640, 960])
    np.testing.assert_allclose(history.train_loss, ref_train, rtol=2e-4)
    np.testing.assert_allclose(history.test_loss, ref_test, rtol=2e-4)
    assert np.all(np.isnan(history.test_accuracy))  # regression has no accuracy
    assert not np.any(history.diverged)


def test_train_equals_an_optax_python_loop_with_batchnorm_mlp():
    """Adam on an MLP with batch norm: train() against a plain optax loop."""
    spec = T.TrainSpec(
        dataset="digits",
        model="mlp",
        model_options={"hidden": (16,), "batchnorm": True},
        optimizer="adam",
        batch_size=32,
        steps=30,
        eval_every=10,
    )
    lr = 3e-3
    history = T.train(spec, {"learning_rate": lr, "bn_momentum": 0.9}, 1)

    ds = T.load_dataset("digits")
    model = models.create("mlp", 10, hidden=(16,), batchnorm=True)
    init_key, data_key = jax.random.split(jax.random.key(1))
    params, state = model.init(init_key, ds.x_train[:1])
    tx = optax.adam(lr)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, state, opt_state, xb, yb):
        def loss_fn(p):
            out, new_state = model.apply(p, state, xb, train=True, bn_momentum=0.9)
            return optax.softmax_cross_entropy_with_integer_labels(out, yb).mean(), new_state

        (loss, new_state), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, loss

    losses, test_losses, accs = [], [], []
    # optax's own Adam is not written for strict dtype promotion; only the reference runs without it.
    with jax.numpy_dtype_promotion("standard"):
        for t in range(spec.steps):
            idx, _ = data.batch_indices(data_key, t, ds.x_train.shape[0], spec.batch_size)
            params, state, opt_state, loss = step(params, state, opt_state, ds.x_train[idx], ds.y_train[idx])
            losses.append(float(loss))
            if (t + 1) % spec.eval_every == 0:
                out, _ = model.apply(params, state, ds.x_test, train=False)
                test_losses.append(
                    float(optax.softmax_cross_entropy_with_integer_labels(out, ds.y_test).mean())
                )
                accs.append(float(jnp.mean(jnp.argmax(out, -1) == ds.y_test)))
    np.testing.assert_allclose(history.train_loss, np.reshape(losses, (3, 10)).mean(1), rtol=1e-4)
    np.testing.assert_allclose(history.test_loss, test_losses, rtol=1e-4)
    np.testing.assert_allclose(history.test_accuracy, accs, atol=1.5e-3)  # one example of 360


def test_divergence_freezes_the_config_and_nans_its_metrics():
    spec = T.TrainSpec(
        dataset="regression",
        dataset_options=REG,
        model="linear",
        optimizer="sgd",
        batch_size=16,
        steps=60,
        eval_every=10,
    )
    history = T.train(spec, {"learning_rate": 50.0}, 0)
    diverged = np.asarray(history.diverged)
    assert diverged[-1]
    first = int(np.argmax(diverged))
    assert np.all(diverged[first:])  # once diverged, always diverged
    assert np.all(np.isnan(history.test_loss[first:]))
    assert np.all(np.isfinite(history.test_loss[:first]))


def test_eval_points_include_the_last_step():
    assert T.eval_steps(10, 4) == [4, 8, 10]
    assert T.eval_steps(8, 4) == [4, 8]
    assert T.eval_steps(3, 10) == [3]


def test_default_hparams_follow_the_optimizer_signatures():
    assert T.default_hparams("momentum") == {
        "learning_rate": 0.01,
        "beta": 0.9,
        "weight_decay": 0.0,
        "bn_momentum": 0.99,
        "label_smoothing": 0.0,
    }
    assert set(T.default_hparams("rmsprop")) == {
        "learning_rate",
        "decay",
        "eps",
        "weight_decay",
        "bn_momentum",
        "label_smoothing",
    }
    # a family that applies its own weight decay has its own default for it
    assert T.default_hparams("adamw")["weight_decay"] == 1e-4
    with pytest.raises(ValueError, match="'b1' is invalid for optimizer='sgd'"):
        T.default_hparams("sgd", b1=0.9)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("optimizer", "adamx", "optimizer='adamx' is invalid: expected one of 'sgd'"),
        ("model", "resnet", "model='resnet' is invalid: expected one of 'linear'"),
        ("reduction", "avg", "reduction='avg' is invalid"),
        ("lr_rule", "cubic", "lr_rule='cubic' is invalid"),
        ("steps", 0, "steps=0 is invalid"),
        ("batch_size", -1, "batch_size=-1 is invalid"),
        ("loss", "hinge", "loss='hinge' is invalid: expected one of 'auto', 'cross_entropy'"),
    ],
)
def test_trainspec_rejects_bad_fields(field, value, match):
    with pytest.raises(ValueError, match=match):
        T.TrainSpec(**{field: value})


def test_fast_segment_restores_configs_frozen_before_it_and_matches_the_select():
    """run_segment(freeze=False) under a named vmap: a config diverged or finished before
    the segment gets its entry state back; an active one equals the select version."""
    spec = T.TrainSpec(
        dataset="regression",
        dataset_options=REG,
        model="linear",
        optimizer="momentum",
        batch_size=16,
        steps=30,
        eval_every=10,
    )
    ds = T.load_dataset(spec.dataset, spec.dataset_options)
    hp = {k: jnp.full((3,), v, jnp.float32) for k, v in T.default_hparams("momentum").items()}
    state = jax.vmap(lambda h, k: T.init_state(spec, ds, h, k))(hp, jax.random.split(jax.random.key(0), 3))
    state = state._replace(diverged=jnp.array([False, True, False]))
    stops = jnp.array([30, 30, 10], jnp.int32)  # config 2 finished at step 10

    def run(freeze):
        fn = jax.vmap(
            lambda h, s, stop: T.run_segment(spec, ds, h, s, 10, 10, stop, axis_name="c", freeze=freeze),
            axis_name="c",
        )
        return jax.jit(fn)(hp, state, stops)[0]

    fast, select = run(False), run(True)
    for before, f, s in zip(
        jax.tree.leaves(state.params),
        jax.tree.leaves(fast.params),
        jax.tree.leaves(select.params),
        strict=True,
    ):
        np.testing.assert_array_equal(f[1:], before[1:])  # frozen: exactly the entry state
        np.testing.assert_allclose(f[0], s[0], rtol=1e-6, atol=1e-8)  # float32 rounding of a near-zero bias
        assert not np.allclose(f[0], before[0])  # the active config did train
    np.testing.assert_array_equal(
        jax.tree.leaves(fast.opt_state)[-1][1:], jax.tree.leaves(state.opt_state)[-1][1:]
    )


def test_a_training_loss_past_the_ceiling_is_divergence():
    """SGD at lr 2 on linear regression: the loss grows 1e5-fold and stays finite. The
    per-step losses of a plain optax loop say where each ceiling is passed."""
    spec = T.TrainSpec(
        dataset="regression",
        dataset_options=REG,
        model="linear",
        optimizer="sgd",
        batch_size=16,
        steps=30,
        eval_every=1,
    )
    ds = T.load_dataset(spec.dataset, spec.dataset_options)
    losses = optax_loop(
        ds,
        *model_fns(models.create("linear", 1)),
        optax.sgd(2.0),
        batch_size=16,
        steps=30,
        eval_every=1,
        seed=0,
    ).train_loss
    assert np.all(np.isfinite(losses)) and losses.max() > 1e4 * losses[0]
    for ceiling, expected_first in [
        (None, np.argmax(losses > T.DIVERGE_FACTOR * losses[0])),
        (5.0, np.argmax(losses > 5.0)),
        (math.inf, 30),
    ]:
        history = T.train(dataclasses.replace(spec, diverge_above=ceiling), {"learning_rate": 2.0}, 0)
        np.testing.assert_array_equal(history.diverged, np.arange(30) >= expected_first, err_msg=str(ceiling))
        finite = slice(0, expected_first)
        np.testing.assert_allclose(history.train_loss[finite], losses[finite], rtol=1e-4)
        assert np.all(np.isnan(history.train_loss[expected_first:]))
    assert 0 < np.argmax(losses > 5.0) < np.argmax(losses > T.DIVERGE_FACTOR * losses[0]) < 30


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "10x", True])
def test_a_bad_loss_ceiling_is_refused(bad):
    with pytest.raises(ValueError, match=r"diverge_above=.* is invalid: expected a positive number"):
        T.TrainSpec(diverge_above=bad)
