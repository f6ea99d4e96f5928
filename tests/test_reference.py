"""The references of the engine's tests are checked here against closed forms and float64.

``_reference.gradient_descent_sharpness`` is the independent reference of the engine's
full-batch ``sharpness`` measurement (tests/measure/test_measurements.py): full-batch GD on a
quadratic follows its closed form on both sides of 2/lambda, and on an MLP it follows
optax.sgd and the float64 Hessian.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _reference import LOSSES, full_batch_loss, gradient_descent_sharpness
from jax.flatten_util import ravel_pytree

from jaxopt_lab.nn import models

KEY = jax.random.key(0)


def _f64(x):
    return np.asarray(x, np.float64)


def _quadratic(eigenvalues, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(len(eigenvalues),) * 2))
    h = q @ np.diag(eigenvalues) @ q.T
    theta0 = rng.normal(size=len(eigenvalues))
    return h, q, theta0


@functools.cache
def _gd_fn(num_steps, every, num_warm_iters, num_iters):
    def run(h, theta0, lr):
        return gradient_descent_sharpness(
            lambda p: 0.5 * p["w"] @ (h @ p["w"]),
            {"w": theta0},
            lr,
            num_steps=num_steps,
            sharpness_every=every,
            num_warm_iters=num_warm_iters,
            num_iters=num_iters,
        )

    return jax.jit(run)


@pytest.mark.parametrize("factor", [1.8, 2.2])
def test_gd_on_a_quadratic_follows_the_closed_form_on_both_sides_of_two_over_lambda(factor):
    lam = np.array([10.0, 6.0, 3.0, 1.0, 0.5])
    h, q, theta0 = _quadratic(lam, 0)
    lr = factor / lam.max()
    out = _gd_fn(20, 5, 20, 100)(jnp.asarray(h, jnp.float32), jnp.asarray(theta0, jnp.float32), lr)
    c = q.T @ theta0
    t = np.arange(20)[:, None]
    expected = 0.5 * np.sum(lam * c**2 * (1 - lr * lam) ** (2 * t), axis=1)
    np.testing.assert_allclose(out.loss, expected, rtol=2e-4)
    np.testing.assert_allclose(out.sharpness, np.full(5, np.linalg.eigvalsh(h).max()), rtol=1e-4)
    np.testing.assert_array_equal(out.step, [0, 5, 10, 15, 20])
    growth = out.loss[-1] / out.loss[0]
    # |1 - ηλ_max| = 0.8 or 1.2: the top component shrinks or grows by that per step.
    assert (growth < 1) if factor < 2 else (growth > 10)


def test_sharpness_is_warm_started_from_the_previous_eigenvector():
    # λ_2/λ_1 = 0.95: two cold power iterations are far off, forty warm ones are not.
    lam = np.array([10.0, 9.5, 5.0, 2.0])
    h, _, theta0 = _quadratic(lam, 3)
    out = _gd_fn(40, 2, 2, 2)(jnp.asarray(h, jnp.float32), jnp.asarray(theta0, jnp.float32), 1e-3)
    assert abs(out.sharpness[0] - 10) > 0.05
    np.testing.assert_allclose(out.sharpness[-1], 10.0, rtol=2e-3)
    assert out.residual[-1] < out.residual[0]


def test_gd_on_an_mlp_follows_optax_sgd_and_the_float64_hessian():
    model = models.create("mlp", 3, hidden=(5,), activation="tanh")
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(30, 4)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, 30), jnp.int32)
    params, _ = model.init(KEY, x[:1])
    loss_fn = full_batch_loss(model, x, y, loss="mse")

    @jax.jit
    def run(p):
        out = gradient_descent_sharpness(loss_fn, p, 0.3, num_steps=12, sharpness_every=4, num_warm_iters=200)
        flat, unravel = ravel_pytree(out.params)
        return out, jax.hessian(lambda f: loss_fn(unravel(f)))(flat)

    out, hessian = run(params)
    tx = optax.sgd(0.3)

    @jax.jit
    def sgd_step(p, opt_state):
        loss, g = jax.value_and_grad(loss_fn)(p)
        updates, opt_state = tx.update(g, opt_state)
        return optax.apply_updates(p, updates), opt_state, loss

    p, opt_state, losses = params, tx.init(params), []
    for _ in range(12):
        p, opt_state, loss = sgd_step(p, opt_state)
        losses.append(loss)
    np.testing.assert_allclose(out.loss, losses, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), out.params, p)
    hessian = _f64(hessian)
    eig = np.linalg.eigvalsh((hessian + hessian.T) / 2)
    assert eig.max() > -eig.min()  # the top eigenvalue is also the largest in magnitude
    np.testing.assert_allclose(out.sharpness[-1], eig.max(), rtol=1e-3)


def test_full_batch_loss_matches_float64_numpy():
    model = models.create("mlp", 3, hidden=(4,), activation="tanh")
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(10, 2)), jnp.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    params, _ = model.init(KEY, x[:1])
    a = np.tanh(_f64(x) @ _f64(params["dense_0"]["kernel"]))
    logits = a @ _f64(params["dense_1"]["kernel"]) + _f64(params["dense_1"]["bias"])
    onehot = np.eye(3)[y]
    mse = np.mean(0.5 * np.sum((logits - onehot) ** 2, axis=1))
    logp = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
    xent = -np.mean(logp[np.arange(10), y])
    y = jnp.asarray(y, jnp.int32)
    losses = jax.jit(lambda p: [full_batch_loss(model, x, y, loss=name)(p) for name in LOSSES])
    np.testing.assert_allclose(losses(params), [mse, xent], rtol=1e-5)
    with pytest.raises(ValueError, match="loss='l1'"):
        full_batch_loss(model, x, y, loss="l1")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_steps=10, sharpness_every=3), "multiple"),
        (dict(num_steps=0, sharpness_every=1), "num_steps"),
        (dict(num_steps=4, sharpness_every=2, num_warm_iters=0), "num_warm_iters"),
    ],
)
def test_gradient_descent_sharpness_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gradient_descent_sharpness(lambda p: jnp.sum(p**2), jnp.ones(2), 0.1, **kwargs)
