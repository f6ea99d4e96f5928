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
import pytest

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
