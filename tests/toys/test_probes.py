"""Tests for jaxopt_lab.toys.probes against hand computations, float64 NumPy and the training engine.

Batch-norm probes: the running statistics of a constant population follow
``(1 - m^t)·row`` and ``m^t`` exactly; a random population is checked step by
step against a float64 NumPy EMA on the documented batch indices, and
statistically against the closed forms (spread of the running mean, the
``(B - 1)/B`` of the biased variance). Full-set statistics and per-batch
accuracies are recomputed by a float64 NumPy forward pass.

Gradient descent with sharpness: on a quadratic ``½ θᵀHθ`` the loss after
``t`` steps is ``½ Σ λ_i c_i² (1 - ηλ_i)^{2t}`` and the sharpness is
``λ_max(H)`` (``np.linalg.eigvalsh``), for ``η`` on both sides of ``2/λ_max``;
on a small tanh MLP the trajectory follows an optax SGD loop and the final
sharpness the eigenvalues of the float64 Hessian.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from jaxopt_lab import measure
from jaxopt_lab.nn import batchnorm, models
from jaxopt_lab.toys import probes

KEY = jax.random.key(0)
EPS = 1e-5


def _f64(a):
    return np.asarray(a, np.float64)


# ------------------------------------------------- running statistics, frozen


@functools.cache
def _ema_fn(batch_size, num_chains):
    return jax.jit(
        lambda pop, key, m, n, b: probes.ema_running_statistics(
            pop, key, batch_size=batch_size, momentum=m, num_steps=n, burn_in=b, num_chains=num_chains
        )
    )


def test_ema_of_a_constant_population_follows_the_geometric_series():
    row = np.array([2.0, -3.0, 0.5])
    population = jnp.asarray(np.tile(row, (7, 1)), jnp.float32)
    m, n, burn_in = 0.9, 25, 10
    out = _ema_fn(4, 2)(population, KEY, m, n, burn_in)
    t = np.arange(1, n + 1)
    # The batch mean is the row and the batch variance 0 at every step.
    np.testing.assert_allclose(out.state.mean, np.tile((1 - m**n) * row, (2, 1)), rtol=1e-5)
    np.testing.assert_allclose(out.state.var, np.full((2, 3), m**n), rtol=1e-5)
    avg = t > burn_in
    np.testing.assert_allclose(
        out.time_average.mean, np.tile(np.mean(1 - m ** t[avg]) * row, (2, 1)), rtol=1e-5
    )
    np.testing.assert_allclose(out.time_average.var, np.full((2, 3), np.mean(m ** t[avg])), rtol=1e-5)


def test_ema_matches_a_float64_reference_on_the_documented_batches():
    rng = np.random.default_rng(0)
    population = rng.normal(1.0, 2.0, size=(50, 3))
    m, n, burn_in, batch_size, chains = 0.8, 30, 10, 4, 3
    out = _ema_fn(batch_size, chains)(jnp.asarray(population, jnp.float32), KEY, m, n, burn_in)
    for c, chain_key in enumerate(jax.random.split(KEY, chains)):
        mean, var = np.zeros(3), np.ones(3)
        total_mean, total_var = np.zeros(3), np.zeros(3)
        for t in range(n):
            idx = np.asarray(jax.random.randint(jax.random.fold_in(chain_key, t), (batch_size,), 0, 50))
            batch = population[idx]
            mean = m * mean + (1 - m) * batch.mean(0)
            var = m * var + (1 - m) * batch.var(0)  # ddof=0: the biased variance
            if t >= burn_in:
                total_mean, total_var = total_mean + mean, total_var + var
        np.testing.assert_allclose(out.state.mean[c], mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.state.var[c], var, rtol=1e-5)
        np.testing.assert_allclose(out.time_average.mean[c], total_mean / (n - burn_in), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.time_average.var[c], total_var / (n - burn_in), rtol=1e-5)


def test_ema_check_matches_the_closed_forms():
    # Gaussian population: running-mean spread sqrt((1-m)/(1+m))·σ/sqrt(B), variance (B-1)/B·σ².
    rng = np.random.default_rng(1)
    sigma = np.linspace(0.5, 2.0, 8)
    population = jnp.asarray(rng.normal(0.0, 1.0, size=(20000, 8)) * sigma + 3.0, jnp.float32)
    m, batch_size, chains = 0.8, 4, 256
    check = probes.ema_check(
        population, KEY, batch_size=batch_size, momentum=m, num_chains=chains, window=150
    )
    assert check.mean_steps == 25 and check.z.shape == (chains, 8) and check.var_ratio.shape == (chains,)
    # 2048 near-independent z's: their RMS is 1 within a few percent (start-up bias m^25·3 ≈ 0.07 spread).
    assert abs(np.sqrt(np.mean(check.z**2)) - 1) < 0.08
    # Standard error ≈ sqrt(2/B / (chains·150 steps·8 features)) ≈ 1e-3; 1 (unbiased) is far.
    assert abs(np.mean(check.var_ratio) - (batch_size - 1) / batch_size) < 0.01
    # z is the documented run, standardized by the float64 population statistics.
    pop = np.asarray(population, np.float64)
    first = _ema_fn(batch_size, chains)(population, jax.random.split(KEY)[0], m, 25, 0)
    z = (_f64(first.state.mean) - pop.mean(0)) / (np.sqrt((1 - m) / (1 + m)) * pop.std(0) / 2)
    np.testing.assert_allclose(check.z, z, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="momentum=1.5"):
        probes.ema_check(population, KEY, batch_size=4, momentum=1.5, num_chains=2, window=10)


def test_ema_mean_spread_is_the_geometric_sum():
    m, sigma, b = 0.95, np.array([0.5, 3.0]), 16
    series = (1 - m) ** 2 * np.sum(m ** (2 * np.arange(5000))) * sigma**2 / b
    np.testing.assert_allclose(probes.ema_mean_spread(m, sigma, b), np.sqrt(series), rtol=1e-10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(population=np.zeros(5)), "population"),
        (dict(batch_size=0), "batch_size"),
        (dict(num_chains=0), "num_chains"),
        (dict(burn_in=10, num_steps=10), "burn_in"),
    ],
)
def test_ema_rejects_bad_input(kwargs, match):
    args = dict(population=np.zeros((5, 2)), batch_size=2, momentum=0.9, num_steps=10, burn_in=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        probes.ema_running_statistics(key=KEY, **args)


# ---------------------------------------------- running statistics, training


def _bn_mlp_variables(model, x, seed):
    """Parameters drawn away from their init (non-unit scales, nonzero biases)."""
    params, state = model.init(KEY, x[:1])
    rng = np.random.default_rng(seed)
    params = jax.tree.map(
        lambda a: jnp.asarray(rng.normal(0, 0.5, a.shape) + (np.asarray(a) == 1), jnp.float32), params
    )
    return params, state


def _np_forward(params, x, hidden_layers, stats_fn):
    """Float64 forward of ``mlp(batchnorm=True)`` with ``stats_fn(h) -> (mean, var)``; also the stats."""
    h, stats = _f64(x), []
    for i in range(hidden_layers):
        h = h @ _f64(params[f"dense_{i}"]["kernel"])
        mean, var = stats_fn(h)
        stats.append((h.mean(0), h.var(0)))
        bn = params[f"bn_{i}"]
        h = np.maximum((h - mean) / np.sqrt(var + EPS) * _f64(bn.scale) + _f64(bn.bias), 0)
    last = params[f"dense_{hidden_layers}"]
    return h @ _f64(last["kernel"]) + _f64(last["bias"]), stats


def test_full_set_statistics_are_those_of_a_float64_forward():
    model = models.create("mlp", 4, hidden=(16, 8), batchnorm=True)
    x = jnp.asarray(np.random.default_rng(0).normal(0.5, 2.0, (200, 5)), jnp.float32)
    params, state = _bn_mlp_variables(model, x, 0)
    stats = jax.jit(functools.partial(measure.full_set_bn_statistics, model))(params, state, x)
    _, ref = _np_forward(params, x, 2, lambda h: (h.mean(0), h.var(0)))
    for i, (mean, var) in enumerate(ref):
        np.testing.assert_allclose(stats[f"bn_{i}"].mean, mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stats[f"bn_{i}"].var, var, rtol=1e-4)


def test_batch_stats_accuracy_normalizes_each_batch_by_its_own_statistics():
    model = models.create("mlp", 3, hidden=(6,), batchnorm=True)
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(0, 1, (50, 4)) + np.arange(50)[:, None] / 10, jnp.float32)
    params, state = _bn_mlp_variables(model, x, 1)
    # Running statistics far from any batch's: they must play no part.
    state = {"bn_0": batchnorm.BatchNormState(mean=jnp.full((6,), 50.0), var=jnp.full((6,), 1e-3))}
    preds = []
    for start in range(0, 50, 20):  # batches of 20, 20 and the last 10
        logits, _ = _np_forward(params, x[start : start + 20], 1, lambda h: (h.mean(0), h.var(0)))
        preds.append(logits.argmax(-1))
    preds = np.concatenate(preds)
    y = np.where(np.arange(50) % 2 == 0, preds, (preds + 1) % 3)  # half right, by construction
    accuracy = jax.jit(lambda labels: probes.batch_stats_accuracy(model, params, state, x, labels, 20))
    np.testing.assert_allclose(accuracy(jnp.asarray(y, jnp.int32)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(accuracy(jnp.asarray(preds, jnp.int32)), 1.0)
    with pytest.raises(ValueError, match="batch_size"):
        probes.batch_stats_accuracy(model, params, state, x, jnp.asarray(y, jnp.int32), 0)


# ---------------------------------------------------------- edge of stability


def _quadratic(eigenvalues, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(len(eigenvalues),) * 2))
    h = q @ np.diag(eigenvalues) @ q.T
    theta0 = rng.normal(size=len(eigenvalues))
    return h, q, theta0


@functools.cache
def _gd_fn(num_steps, every, num_warm_iters, num_iters):
    def run(h, theta0, lr):
        return probes.gradient_descent_sharpness(
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
    loss_fn = probes.full_batch_loss(model, x, y, loss="mse")

    @jax.jit
    def run(p):
        out = probes.gradient_descent_sharpness(
            loss_fn, p, 0.3, num_steps=12, sharpness_every=4, num_warm_iters=200
        )
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
    losses = jax.jit(lambda p: [probes.full_batch_loss(model, x, y, loss=name)(p) for name in probes.LOSSES])
    np.testing.assert_allclose(losses(params), [mse, xent], rtol=1e-5)
    with pytest.raises(ValueError, match="loss='l1'"):
        probes.full_batch_loss(model, x, y, loss="l1")


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
        probes.gradient_descent_sharpness(lambda p: jnp.sum(p**2), jnp.ones(2), 0.1, **kwargs)
