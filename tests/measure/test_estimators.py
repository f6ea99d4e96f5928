"""Tests for jaxopt_lab.measure.estimators against closed forms, float64 NumPy and hand-computed cases.

Noise scale: linear regression with Gaussian inputs, where the true gradient
and the per-example gradient covariance are known in closed form (derived in
:func:`_closed_form`, itself checked by Monte Carlo). Statistical comparisons
use tolerances of a few standard errors, computed from the closed form or from
the sample, and each such test also checks that the mistake it guards against
would land outside them. Exact formulas (the ``n - 1``, the appendix-A
solution) are checked on small samples against float64 NumPy.

Sharpness: a 41-parameter tanh MLP whose Hessian is formed in float64 by
``jax.hessian`` and diagonalized by ``np.linalg.eigvalsh``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from jax.flatten_util import ravel_pytree

from jaxopt_lab.measure import estimators as metrics
from jaxopt_lab.measure import targets

# ----------------------------------------------------------------- linear regression


def _closed_form(c, r, s):
    """Mean gradient ``G`` and per-example gradient covariance ``Σ`` of linear regression.

    Model: ``x ~ N(0, C)`` with ``C = diag(c)``, ``y = x·w* + ε``, ``ε ~ N(0, s²)``
    independent of ``x``; per-example loss ``½ (x·w - y)²``; ``r = w - w*``.

    The per-example gradient is ``g = x (x·w - y) = x (x·r - ε)``.

    * ``G = E[g] = E[x xᵀ] r - E[x] E[ε] = C r``.
    * ``E[g gᵀ] = E[x xᵀ (x·r - ε)²] = E[x xᵀ (x·r)²] - 2 E[ε] E[x xᵀ (x·r)] + E[ε²] E[x xᵀ]
      = E[x xᵀ (x·r)²] + s² C``.
    * Isserlis for zero-mean Gaussians: ``E[x_i x_j x_k x_l] = C_ij C_kl + C_ik C_jl + C_il C_jk``,
      so ``Σ_kl E[x_i x_j x_k x_l] r_k r_l = C_ij (rᵀ C r) + 2 (C r)_i (C r)_j``, i.e.
      ``E[x xᵀ (x·r)²] = (rᵀ C r) C + 2 C r rᵀ C``.
    * ``Σ = E[g gᵀ] - G Gᵀ = (rᵀ C r + s²) C + C r rᵀ C``.
    * ``tr(Σ) = (rᵀ C r + s²) tr(C) + |C r|²`` and ``|G|² = |C r|²``.

    For ``C = I``: ``tr(Σ) = d (|r|² + s²) + |r|²`` and ``|G|² = |r|²``.
    """
    cr = c * r
    sigma = (r @ cr + s**2) * np.diag(c) + np.outer(cr, cr)
    return cr, sigma


def _sample(rng, n, c, w_star, s):
    x = rng.normal(size=(n, c.size)) * np.sqrt(c)
    return x, x @ w_star + s * rng.normal(size=n)


def _example_loss(w, example):
    x, y = example
    return 0.5 * jnp.square(jnp.dot(x, w) - y)


def _batch_loss(w, batch):
    x, y = batch
    return 0.5 * jnp.mean(jnp.square(x @ w - y))


def _numpy_grads(x, y, w):
    return x * (x @ w - y)[:, None]


def _f32(*arrays):
    return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


# Regime of the two-batch estimator: few parameters, B_simple ~ 28, so batches
# of 8 and 128 straddle it, and 10000 draws pin tr(Σ) to about 1 % and |G|² to
# about 0.5 % (one standard error).
D_B = 8
C_B = np.linspace(0.5, 2.0, D_B)
S_B = 1.0
W_STAR_B = np.random.default_rng(10).normal(size=D_B)
W_B = W_STAR_B + np.random.default_rng(11).normal(size=D_B) / np.sqrt(D_B)
SMALL, BIG, DRAWS = 8, 128, 10_000


def _truth_b():
    g, sigma = _closed_form(C_B, W_B - W_STAR_B, S_B)
    return np.trace(sigma), g @ g


def test_closed_form_matches_monte_carlo():
    rng = np.random.default_rng(0)
    n = 400_000
    x, y = _sample(rng, n, C_B, W_STAR_B, S_B)
    g = _numpy_grads(x, y, W_B)
    mean, sigma = _closed_form(C_B, W_B - W_STAR_B, S_B)
    emp_cov = np.cov(g.T)
    # Standard errors of the sample mean and covariance entries, from the sample itself.
    se_mean = g.std(axis=0) / np.sqrt(n)
    centered = g - g.mean(axis=0)
    se_cov = np.sqrt(np.maximum(centered.T**2 @ centered**2 / n - emp_cov**2, 0) / n)
    np.testing.assert_array_less(np.abs(g.mean(axis=0) - mean), 5 * se_mean)
    np.testing.assert_array_less(np.abs(emp_cov - sigma), 5 * se_cov)
    # The check can fail: a Σ missing the C r rᵀ C term (one Isserlis pairing short) does.
    assert np.any(np.abs(emp_cov - (sigma - np.outer(mean, mean))) > 5 * se_cov)


def test_per_example_grads_match_numpy():
    rng = np.random.default_rng(1)
    x, y = _sample(rng, 16, C_B, W_STAR_B, S_B)
    # A pytree of parameters and a batch-loss adapted by example_loss give the same gradients.
    params = {"a": W_B[:3], "b": W_B[3:]}

    def batch_loss(p, batch):
        x, y = batch
        return 0.5 * jnp.mean(jnp.square(x[:, :3] @ p["a"] + x[:, 3:] @ p["b"] - y))

    grads = jax.jit(lambda p, b: metrics.per_example_grads(metrics.example_loss(batch_loss), p, b))(
        jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params), _f32(x, y)
    )
    expected = _numpy_grads(x, y, W_B)
    np.testing.assert_allclose(grads["a"], expected[:, :3], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads["b"], expected[:, 3:], rtol=1e-5, atol=1e-5)


def test_noise_scale_from_per_example_exact_formula():
    # n = 64: dividing by n instead of n - 1 would be off by 1.6 %, far above float32 error.
    rng = np.random.default_rng(2)
    g = rng.normal(size=(64, 5)) + 0.3
    h = rng.normal(size=(64, 2, 3)) - 0.2
    ns = jax.jit(metrics.noise_scale_from_per_example)(
        {"g": jnp.asarray(g, jnp.float32), "h": (jnp.asarray(h, jnp.float32),)}
    )
    flat = np.concatenate([g, h.reshape(64, 6)], axis=1)
    trace = flat.var(axis=0, ddof=1).sum()
    grad_sq = np.sum(flat.mean(axis=0) ** 2) - trace / 64
    np.testing.assert_allclose(ns.trace_cov, trace, rtol=1e-5)
    np.testing.assert_allclose(ns.grad_sq_norm, grad_sq, rtol=1e-4)
    np.testing.assert_allclose(ns.b_simple, trace / grad_sq, rtol=1e-4)
    assert isinstance(ns, metrics.NoiseScaleEstimate)


@pytest.mark.parametrize("chunk_size", [None, 1, 16, 40, 30, 100])  # 30: a remainder; 100 > n
def test_noise_scale_chunked_matches_numpy(chunk_size):
    x, y = _sample(np.random.default_rng(3), 80, C_B, W_STAR_B, S_B)
    # A constant 1000 added to every per-example gradient makes the mean large next
    # to the spread: variances from sums of squares lose about 1 % in float32
    # (checked below), centred moments merged pairwise do not.
    offset = 1000.0
    loss = lambda w, example: _example_loss(w, example) + offset * jnp.sum(w)
    ns = metrics.noise_scale(loss, jnp.asarray(W_B, jnp.float32), _f32(x, y), chunk_size=chunk_size)
    g = _numpy_grads(x, y, W_B) + offset
    trace = g.var(axis=0, ddof=1).sum()
    np.testing.assert_allclose(ns.trace_cov, trace, rtol=1e-4)
    np.testing.assert_allclose(ns.grad_sq_norm, np.sum(g.mean(axis=0) ** 2) - trace / 80, rtol=1e-4)
    g32 = g.astype(np.float32)
    sum_of_squares = np.sum(np.sum(g32**2, axis=0) - 80 * np.mean(g32, axis=0) ** 2) / 79
    assert abs(sum_of_squares / trace - 1) > 1e-3


def test_noise_scale_unbiased_gradient_norm():
    """The ``- tr(Σ)/n`` correction makes ``|G|²`` unbiased; without it the estimate is off by many σ.

    Ten independent samples of n = 2000 examples (vmapped) in d = 200 with
    B_simple ~ 2000: the bias ``tr(Σ)/n`` of the plain ``|mean|²`` is then as
    large as ``|G|²`` itself, while the standard deviation of the unbiased
    estimate, ``sqrt(4 GᵀΣG/n + 2 tr(Σ²)/n²)`` per sample (``mean`` being
    Gaussian with covariance ``Σ/n``), is a few percent of it.
    """
    reps, n, d, s = 10, 2000, 200, 1.0
    rng = np.random.default_rng(4)
    c = np.linspace(0.5, 1.5, d)
    w_star = rng.normal(size=d)
    r = rng.normal(size=d)
    r *= np.sqrt(0.1) / np.linalg.norm(c * r)  # |G|² = |Cr|² = 0.1
    g_true, sigma = _closed_form(c, r, s)
    x, y = _sample(rng, reps * n, c, w_star, s)
    batches = _f32(x.reshape(reps, n, d), y.reshape(reps, n))
    ns = jax.jit(jax.vmap(metrics.noise_scale, in_axes=(None, None, 0)), static_argnums=0)(
        _example_loss, jnp.asarray(w_star + r, jnp.float32), batches
    )
    grad_sq = float(np.mean(np.asarray(ns.grad_sq_norm, np.float64)))
    trace = float(np.mean(np.asarray(ns.trace_cov, np.float64)))

    truth_grad_sq, truth_trace = g_true @ g_true, np.trace(sigma)
    sd_grad_sq = np.sqrt((4 * g_true @ sigma @ g_true / n + 2 * np.trace(sigma @ sigma) / n**2) / reps)
    assert abs(grad_sq - truth_grad_sq) < 4 * sd_grad_sq
    biased = grad_sq + trace / n  # what |mean|² alone would have given
    assert abs(biased - truth_grad_sq) > 10 * sd_grad_sq

    per_example_sq = np.sum((_numpy_grads(x, y, w_star + r) - g_true) ** 2, axis=1)
    se_trace = per_example_sq.std() / np.sqrt(reps * n)
    assert abs(trace - truth_trace) < 4 * se_trace
    # B_simple as the ratio of the averaged parts, within the sum of their relative bands.
    rtol = 4 * (sd_grad_sq / truth_grad_sq + se_trace / truth_trace)
    np.testing.assert_allclose(trace / grad_sq, truth_trace / truth_grad_sq, rtol=rtol)


def _two_batch_draws(rng, draws, small, big):
    """Squared norms of independent batch gradients (float64) and the gradients as pytrees (float32)."""

    def batch_grads(size):
        x, y = _sample(rng, draws * size, C_B, W_STAR_B, S_B)
        g = _numpy_grads(x, y, W_B).reshape(draws, size, D_B).mean(axis=1)
        return np.sum(g**2, axis=1), {
            "a": jnp.asarray(g[:, :3], jnp.float32),
            "b": jnp.asarray(g[:, 3:], jnp.float32),
        }

    sq_small, grads_small = batch_grads(small)
    sq_big, grads_big = batch_grads(big)
    return sq_small, sq_big, grads_small, grads_big


def _appendix_a(sq_small, sq_big, small, big):
    grad_sq = (big * sq_big - small * sq_small) / (big - small)
    trace = (sq_small - sq_big) / (1 / small - 1 / big)
    return trace, grad_sq


def test_two_batch_exact_formula():
    rng = np.random.default_rng(5)
    sq_small, sq_big, grads_small, grads_big = _two_batch_draws(rng, 3, 4, 12)
    trace, grad_sq = _appendix_a(sq_small.mean(), sq_big.mean(), 4, 12)
    ns = metrics.noise_scale_two_batch(grads_small, grads_big, 4, 12, draw_axis=True)
    np.testing.assert_allclose(ns.trace_cov, trace, rtol=1e-5)
    np.testing.assert_allclose(ns.grad_sq_norm, grad_sq, rtol=1e-5)
    np.testing.assert_allclose(ns.b_simple, trace / grad_sq, rtol=1e-5)
    # One draw, no draw axis; batch sizes may be traced arrays.
    one = jax.tree.map(lambda a: a[0], (grads_small, grads_big))
    ns = jax.jit(metrics.noise_scale_two_batch)(*one, jnp.asarray(4), jnp.asarray(12.0))
    trace, grad_sq = _appendix_a(sq_small[0], sq_big[0], 4, 12)
    np.testing.assert_allclose(ns.trace_cov, trace, rtol=1e-5)
    np.testing.assert_allclose(ns.grad_sq_norm, grad_sq, rtol=1e-5)


class _TwoBatchDraws(NamedTuple):
    grads_small: dict
    grads_big: dict
    sq_small: np.ndarray
    sq_big: np.ndarray
    se_trace: float  # standard errors of the DRAWS-draw estimates, from the per-draw spread
    se_grad_sq: float


@pytest.fixture(scope="module")
def two_batch_draws():
    sq_small, sq_big, grads_small, grads_big = _two_batch_draws(np.random.default_rng(6), DRAWS, SMALL, BIG)
    per_draw_trace, per_draw_grad_sq = _appendix_a(sq_small, sq_big, SMALL, BIG)
    return _TwoBatchDraws(
        grads_small,
        grads_big,
        sq_small,
        sq_big,
        per_draw_trace.std() / np.sqrt(DRAWS),
        per_draw_grad_sq.std() / np.sqrt(DRAWS),
    )


def test_two_batch_and_per_example_agree_with_closed_form(two_batch_draws):
    truth_trace, truth_grad_sq = _truth_b()
    truth_b = truth_trace / truth_grad_sq
    draws = two_batch_draws
    two = jax.jit(metrics.noise_scale_two_batch, static_argnums=(2, 3), static_argnames="draw_axis")(
        draws.grads_small, draws.grads_big, SMALL, BIG, draw_axis=True
    )
    assert abs(float(two.trace_cov) - truth_trace) < 4 * draws.se_trace
    assert abs(float(two.grad_sq_norm) - truth_grad_sq) < 4 * draws.se_grad_sq
    # The test can tell a wrong solution, e.g. the batch sizes traded in the |G|² formula.
    wrong = _appendix_a(draws.sq_small.mean(), draws.sq_big.mean(), BIG, SMALL)[1]
    assert abs(wrong - truth_grad_sq) > 10 * draws.se_grad_sq
    # B_simple = T/G is within the sum of the relative bands of T and G.
    rtol_two = 4 * (draws.se_trace / truth_trace + draws.se_grad_sq / truth_grad_sq)
    np.testing.assert_allclose(two.b_simple, truth_b, rtol=rtol_two)

    n = 20_000
    x, y = _sample(np.random.default_rng(9), n, C_B, W_STAR_B, S_B)
    per_example = metrics.noise_scale(_example_loss, jnp.asarray(W_B, jnp.float32), _f32(x, y))
    g_true, sigma = _closed_form(C_B, W_B - W_STAR_B, S_B)
    se_trace = np.sum((_numpy_grads(x, y, W_B) - g_true) ** 2, axis=1).std() / np.sqrt(n)
    se_grad_sq = np.sqrt(4 * g_true @ sigma @ g_true / n + 2 * np.trace(sigma @ sigma) / n**2)
    assert abs(float(per_example.trace_cov) - truth_trace) < 4 * se_trace
    assert abs(float(per_example.grad_sq_norm) - truth_grad_sq) < 4 * se_grad_sq
    rtol_per_example = 4 * (se_trace / truth_trace + se_grad_sq / truth_grad_sq)
    np.testing.assert_allclose(per_example.b_simple, truth_b, rtol=rtol_per_example)
    # And the two estimators agree with each other.
    np.testing.assert_allclose(two.b_simple, per_example.b_simple, rtol=rtol_two + rtol_per_example)


def test_gradient_noise_scale_matches_dataset_moments(two_batch_draws):
    # Batches are drawn with replacement from a finite dataset, so the targets are
    # the dataset's own mean gradient and population (ddof=0) covariance. The
    # dataset is large enough for the standard errors of the previous test (same
    # distribution, batch sizes and draws) to hold.
    x, y = _sample(np.random.default_rng(7), 4000, C_B, W_STAR_B, S_B)
    g = _numpy_grads(x, y, W_B)
    trace, grad_sq = g.var(axis=0).sum(), np.sum(g.mean(axis=0) ** 2)
    fn = jax.jit(
        lambda w, data, key: metrics.gradient_noise_scale(
            _batch_loss, w, data, key, b_small=SMALL, b_big=BIG, num_draws=DRAWS
        )
    )
    ns = fn(jnp.asarray(W_B, jnp.float32), _f32(x, y), jax.random.key(0))
    se_trace, se_grad_sq = two_batch_draws.se_trace, two_batch_draws.se_grad_sq
    assert abs(float(ns.trace_cov) - trace) < 4 * se_trace
    assert abs(float(ns.grad_sq_norm) - grad_sq) < 4 * se_grad_sq
    rtol = 4 * (se_trace / trace + se_grad_sq / grad_sq)
    np.testing.assert_allclose(ns.b_simple, trace / grad_sq, rtol=rtol)


def test_noise_scale_errors():
    ok = jnp.zeros((4, 3), jnp.float32)
    with pytest.raises(ValueError, match="grads needs at least 2 examples"):
        metrics.noise_scale_from_per_example(jnp.zeros((1, 3), jnp.float32))
    with pytest.raises(ValueError, match="leading example axis"):
        metrics.noise_scale_from_per_example((ok, jnp.zeros((5, 3), jnp.float32)))
    with pytest.raises(ValueError, match="chunk_size must be a positive int or None, got 0"):
        metrics.noise_scale(_example_loss, ok[0], (ok, ok[:, 0]), chunk_size=0)
    with pytest.raises(ValueError, match="b_small=8, b_big=8"):
        metrics.noise_scale_two_batch(ok, ok, 8, 8)
    with pytest.raises(ValueError, match="num_draws must be a positive int, got 0"):
        metrics.gradient_noise_scale(
            _batch_loss,
            jnp.zeros(3, jnp.float32),
            (ok, ok[:, 0]),
            jax.random.key(0),
            b_small=1,
            b_big=2,
            num_draws=0,
        )


# ------------------------------------------------------------------------ sharpness


def _mlp_params(seed, dtype):
    rng = np.random.default_rng(seed)
    params = {
        "w1": rng.normal(size=(3, 8)) / np.sqrt(3),
        "b1": 0.1 * rng.normal(size=8),
        "w2": rng.normal(size=(8, 1)) / np.sqrt(8),
        "b2": 0.1 * rng.normal(size=1),
    }
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), params)


def _mlp_data(dtype):
    rng = np.random.default_rng(100)
    # Inputs off the origin make the top eigenvalue stand apart (|λ|/λ_max < 0.3 for seeds 1, 6, 7).
    x = rng.normal(size=(32, 3)) + 1.0
    y = np.sin(x @ np.array([1.0, -2.0, 0.5]))
    return jnp.asarray(x, dtype), jnp.asarray(y, dtype)


def _mlp_loss(params, x, y):
    hidden = jnp.tanh(x @ params["w1"] + params["b1"][None, :])
    out = hidden @ params["w2"] + params["b2"][None, :]
    return 0.5 * jnp.mean(jnp.square(out[:, 0] - y))


def _reference_eigh(seed):
    """Eigenvalues and eigenvectors of the float64 Hessian of the MLP loss on raveled params."""
    with jax.enable_x64(True):
        flat, unravel = ravel_pytree(_mlp_params(seed, jnp.float64))
        x, y = _mlp_data(jnp.float64)
        hessian = jax.jit(jax.hessian(lambda f: _mlp_loss(unravel(f), x, y)))(flat)
        return np.linalg.eigh(np.asarray(hessian, np.float64))


MLP_SEEDS = (1, 6, 7)


@pytest.fixture(scope="module")
def mlp_sharpness():
    """Top eigenpairs of three MLPs by jit(vmap(...)) over their stacked float32 params,
    after 60 power iterations and after one."""
    params = jax.tree.map(lambda *a: jnp.stack(a), *[_mlp_params(seed, jnp.float32) for seed in MLP_SEEDS])
    x, y = _mlp_data(jnp.float32)

    def both(p):
        loss = lambda q: _mlp_loss(q, x, y)
        return (
            metrics.hessian_top_eigenvalue(loss, p, num_iters=60),
            metrics.hessian_top_eigenvalue(loss, p, num_iters=1),
        )

    return jax.jit(jax.vmap(both))(params)


@pytest.mark.parametrize("index", range(len(MLP_SEEDS)))
def test_hessian_top_eigenvalue_matches_eigh(mlp_sharpness, index):
    eigvals, eigvecs = _reference_eigh(MLP_SEEDS[index])
    assert eigvals[-1] > 3 * max(abs(eigvals[-2]), abs(eigvals[0]))  # well separated
    result, unconverged = jax.tree.map(lambda a: a[index], mlp_sharpness)
    np.testing.assert_allclose(result.eigenvalue, eigvals[-1], rtol=1e-3)
    v = np.asarray(ravel_pytree(result.eigenvector)[0], np.float64)
    np.testing.assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-5)
    assert abs(v @ eigvecs[:, -1]) > 1 - 1e-4
    assert float(result.residual) < 1e-3 * eigvals[-1]
    # One iteration from a random start is not converged, and the residual says so.
    assert float(unconverged.residual) > 1e-2 * eigvals[-1]


def test_hessian_shift_finds_top_algebraic_eigenvalue():
    # Quadratic ½ pᵀAp over a pytree; A's eigenvalue of largest magnitude is negative.
    rng = np.random.default_rng(8)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    spectrum = np.array([-5.0, 4.0, 1.0, 0.5, -1.0, 0.0])
    a = jnp.asarray(q @ np.diag(spectrum) @ q.T, jnp.float32)
    params = {"u": jnp.ones(2, jnp.float32), "v": jnp.ones((2, 2), jnp.float32)}

    def loss(p):
        flat, _ = ravel_pytree(p)
        return 0.5 * flat @ a @ flat

    key = jax.random.key(3)
    largest = metrics.hessian_top_eigenvalue(loss, params, num_iters=100, key=key)
    np.testing.assert_allclose(largest.eigenvalue, -5.0, rtol=1e-4)
    top = metrics.hessian_top_eigenvalue(loss, params, num_iters=100, key=key, shift=largest.eigenvalue)
    np.testing.assert_allclose(top.eigenvalue, 4.0, rtol=1e-4)
    v = np.asarray(ravel_pytree(top.eigenvector)[0], np.float64)
    assert abs(v @ q[:, 1]) > 1 - 1e-4
    with pytest.raises(ValueError, match="num_iters must be a positive int, got 0"):
        metrics.hessian_top_eigenvalue(loss, params, num_iters=0)


# ------------------------------------------------------------------- steps to target


def test_steps_to_target_by_hand():
    steps = np.array([0, 10, 20, 30, 40])
    losses = np.array([3.0, 2.0, 1.0, 0.5, 0.7])
    assert targets.steps_to_target(steps, losses, 1.0) == 20.0  # reaching means <=
    assert targets.steps_to_target(steps, losses, 0.9) == 30.0
    assert np.isnan(targets.steps_to_target(steps, losses, 0.1))
    accuracies = np.array([0.1, 0.5, 0.9, 0.8, 0.95])
    assert targets.steps_to_target(steps, accuracies, 0.9, mode="max") == 20.0
    assert targets.steps_to_target(steps, accuracies, 0.92, mode="max") == 40.0
    assert np.isnan(targets.steps_to_target(steps, accuracies, 0.99, mode="max"))


def test_steps_to_target_non_finite_never_reached():
    steps = np.array([0, 10, 20, 30])
    assert targets.steps_to_target(steps, np.array([np.nan, np.nan, 0.5, np.nan]), 1.0) == 20.0
    assert np.isnan(targets.steps_to_target(steps, np.full(4, np.nan), 1.0))
    assert np.isnan(targets.steps_to_target(steps, np.array([2.0, -np.inf, np.nan, np.nan]), 1.0))
    assert targets.steps_to_target(steps, np.array([0.1, np.inf, 0.95, 0.5]), 0.9, mode="max") == 20.0


def test_steps_to_target_sweep_jax_vmap_and_pandas():
    steps = np.array([0, 100, 200, 300])
    values = np.array(
        [
            [2.0, 1.5, 0.8, 0.4],  # reaches 1.0 at 200
            [2.0, 0.9, np.nan, np.nan],  # reaches at 100, then diverges
            [2.0, np.nan, np.nan, np.nan],  # diverges before reaching
            [0.5, 0.4, 0.3, 0.2],  # reached at the first evaluation
        ]
    )
    expected = np.array([200.0, 100.0, np.nan, 0.0])
    np.testing.assert_array_equal(targets.steps_to_target(steps, values, 1.0), expected)
    jitted = jax.jit(targets.steps_to_target)(jnp.asarray(steps), jnp.asarray(values, jnp.float32), 1.0)
    np.testing.assert_array_equal(jitted, expected)
    vmapped = jax.jit(jax.vmap(targets.steps_to_target, in_axes=(None, 0, None)))(
        jnp.asarray(steps), jnp.asarray(values, jnp.float32), jnp.float32(1.0)
    )
    np.testing.assert_array_equal(vmapped, expected)
    # One target per config; steps given per config too.
    per_config = targets.steps_to_target(np.tile(steps, (4, 1)), values, np.array([0.5, 2.0, 2.0, 0.1]))
    np.testing.assert_array_equal(per_config, [300.0, 0.0, 0.0, np.nan])

    frame = pd.DataFrame({"step": steps, "loss": pd.array([2.0, None, 0.8, 0.4], dtype="Float64")})
    assert targets.steps_to_target(frame["step"], frame["loss"], 1.0) == 200.0


def test_examples_to_target_exact_for_large_counts():
    examples = np.array([0, 2**24 + 1, 2**25 + 3])  # not representable in float32
    accuracies = np.array([0.1, 0.95, 0.97])
    result = targets.examples_to_target(examples, accuracies, 0.9, mode="max")
    assert result == 2**24 + 1
    assert result.dtype == np.float64
    assert np.isnan(targets.examples_to_target(examples, accuracies, 0.99, mode="max"))


def test_steps_to_target_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        targets.steps_to_target([0, 1], [1.0, 0.5], 0.7, mode="best")
    with pytest.raises(ValueError, match=r"steps must broadcast to the shape of values \(2, 3\)"):
        targets.steps_to_target([0, 1], np.zeros((2, 3)), 0.7)
    with pytest.raises(ValueError, match="target must be a scalar or broadcast"):
        targets.steps_to_target([0, 1, 2], np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="non-empty last"):
        targets.examples_to_target([], [], 0.7)


def test_noise_scale_of_a_finite_population_by_hand():
    """population_size=N: n examples drawn without replacement from N estimate that set's
    tr(Σ) = s²(N-1)/N and |G|² = |ḡ|² - s²(N-n)/(nN); with n = N these are the set's own,
    tr(Σ) = Σ|g_i - ḡ|²/N and |G|² = |ḡ|², by hand in float64."""
    g = np.random.default_rng(4).normal(size=(40, 3)) + 0.5
    loss = lambda w, example: jnp.vdot(w, example)  # noqa: E731: the gradient is the example
    w = jnp.zeros(3, jnp.float32)
    whole = metrics.noise_scale(loss, w, jnp.asarray(g, jnp.float32), population_size=40)
    mean = g.mean(axis=0)
    np.testing.assert_allclose(whole.trace_cov, np.sum((g - mean) ** 2) / 40, rtol=1e-5)
    np.testing.assert_allclose(whole.grad_sq_norm, mean @ mean, rtol=1e-5)
    part = metrics.noise_scale(loss, w, jnp.asarray(g[:10], jnp.float32), chunk_size=4, population_size=40)
    s2 = g[:10].var(axis=0, ddof=1).sum()
    np.testing.assert_allclose(part.trace_cov, s2 * 39 / 40, rtol=1e-5)
    np.testing.assert_allclose(part.grad_sq_norm, g[:10].mean(0) @ g[:10].mean(0) - s2 * 30 / 400, rtol=1e-5)
    with pytest.raises(ValueError, match=r"population_size=5 is invalid: expected an integer >= n = 10"):
        metrics.noise_scale(loss, w, jnp.asarray(g[:10], jnp.float32), population_size=5)
