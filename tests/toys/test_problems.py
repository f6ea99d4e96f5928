"""Tests for jaxopt_lab.toys.problems against closed forms and float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_lab.optim.transforms as T
from jaxopt_lab.analysis.critical_batch import crossing_batch_size, fit_critical_batch_size
from jaxopt_lab.toys import problems as P

# --------------------------------------------------------------------------- references


def _np_rosenbrock_grad(x, a, b):
    return np.array([-2 * (a - x[0]) - 4 * b * x[0] * (x[1] - x[0] ** 2), 2 * b * (x[1] - x[0] ** 2)])


def _np_nqm_cov_loss(h, x0, lr, batch, steps, beta=0.0, p=0.0):
    """Expected loss by propagating the 2x2 covariance of (x, v): Σ' = A Σ Aᵀ + b bᵀ."""
    h = np.asarray(h, np.float64)
    eta = lr * h**-p
    A = np.zeros((h.size, 2, 2))
    A[:, 0, 0], A[:, 0, 1], A[:, 1, 0], A[:, 1, 1] = 1 - eta * h, -eta * beta, h, beta
    noise = np.sqrt(h / batch)[:, None] * np.stack([-eta, np.ones_like(h)], -1)
    cov = np.zeros((h.size, 2, 2))
    cov[:, 0, 0] = np.broadcast_to(np.asarray(x0, np.float64), h.shape) ** 2
    losses = [0.5 * np.sum(h * cov[:, 0, 0])]
    for _ in range(steps):
        cov = A @ cov @ A.transpose(0, 2, 1) + noise[:, :, None] * noise[:, None, :]
        losses.append(0.5 * np.sum(h * cov[:, 0, 0]))
    return np.array(losses)


def _np_nqm_monte_carlo(h, x0, lr, batch, steps, beta, p, draws, seed):
    """Heavy ball with preconditioner h^-p on the NQM, simulated draw by draw in float64."""
    rng = np.random.default_rng(seed)
    h = np.asarray(h, np.float64)
    x = np.tile(np.asarray(x0, np.float64), (draws, 1))
    v = np.zeros_like(x)
    losses = [0.5 * np.sum(h * x**2, axis=1)]
    for _ in range(steps):
        g = h * x + np.sqrt(h / batch) * rng.standard_normal(x.shape)
        v = beta * v + g
        x = x - lr * h**-p * v
        losses.append(0.5 * np.sum(h * x**2, axis=1))
    return np.stack(losses, 1)  # (draws, steps + 1)


# --------------------------------------------------------------------------- objectives


def test_quadratic_and_rosenbrock_against_closed_forms():
    x = np.array([0.7, -1.3])
    h = np.array([2.0, 0.05])
    H = np.array([[2.0, 0.3], [0.3, 0.5]])
    xj = jnp.asarray(x, jnp.float32)
    diag, full = P.quadratic(jnp.asarray(h, jnp.float32)), P.quadratic(jnp.asarray(H, jnp.float32))
    np.testing.assert_allclose(diag(xj), 0.5 * np.sum(h * x**2), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(diag)(xj), h * x, rtol=1e-6)
    np.testing.assert_allclose(full(xj), 0.5 * x @ H @ x, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(full)(xj), H @ x, rtol=1e-6)
    f = P.rosenbrock(1.5, 20.0)
    np.testing.assert_allclose(f(xj), (1.5 - x[0]) ** 2 + 20 * (x[1] - x[0] ** 2) ** 2, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(f)(xj), _np_rosenbrock_grad(x, 1.5, 20.0), rtol=1e-5)
    assert float(P.rosenbrock()(jnp.array([1.0, 1.0]))) == 0.0
    with pytest.raises(ValueError, match="h has shape"):
        P.quadratic(jnp.ones((2, 3)))


# --------------------------------------------------------------------------- loops


def test_optimize_sgd_follows_the_closed_form():
    h = np.array([1.0, 0.02])
    x0 = np.array([1.0, 5.0])
    loss_fn = P.quadratic(jnp.asarray(h, jnp.float32))
    tr = jax.jit(lambda: P.optimize(loss_fn, T.sgd(0.7), jnp.asarray(x0, jnp.float32), 30))()
    t = np.arange(31)[:, None]
    expected = (1 - 0.7 * h) ** t * x0
    np.testing.assert_allclose(tr.params, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(tr.loss, 0.5 * np.sum(h * expected**2, axis=1), rtol=1e-5)


def test_optimize_heavy_ball_on_rosenbrock_matches_numpy_loop():
    lr, beta, steps = 1e-3, 0.9, 50
    tr = P.optimize(P.rosenbrock(), T.momentum(lr, beta), jnp.array([-1.2, 1.0]), steps)
    x, v, path = np.array([-1.2, 1.0]), np.zeros(2), [np.array([-1.2, 1.0])]
    for _ in range(steps):
        v = _np_rosenbrock_grad(x, 1.0, 100.0) + beta * v
        x = x - lr * v
        path.append(x)
    np.testing.assert_allclose(tr.params, np.stack(path), rtol=1e-4, atol=1e-5)


def test_sweep_learning_rates_and_best_learning_rate():
    h = np.array([1.0, 0.1])
    lrs = np.array([0.1, 1.0, 1.9, 2.5])
    tr = P.sweep_learning_rates(P.quadratic(jnp.asarray(h, jnp.float32)), T.sgd, jnp.ones(2), 40, lrs)
    t = np.arange(41)[None, :, None]
    expected = (1 - lrs[:, None, None] * h) ** t
    np.testing.assert_allclose(tr.params, expected, rtol=1e-4, atol=1e-6)
    # lr = 1 solves the stiff coordinate at once; 2.5 diverges.
    best = P.best_learning_rate(lrs, tr.loss, 1e-3)
    losses = 0.5 * np.sum(h * expected**2, axis=2)
    first = [np.flatnonzero(row <= 1e-3)[0] if np.any(row <= 1e-3) else np.inf for row in losses]
    assert best.index == int(np.argmin(first)) == 1 and best.steps == first[1]
    # Another start reuses the compiled program.
    loss_fn, compiled = P.quadratic(jnp.asarray(h, jnp.float32)), P._sweep._cache_size()
    P.sweep_learning_rates(loss_fn, T.sgd, jnp.ones(2), 5, lrs)
    again = P.sweep_learning_rates(loss_fn, T.sgd, jnp.array([2.0, -1.0]), 5, lrs)
    assert P._sweep._cache_size() == compiled + 1
    np.testing.assert_allclose(again.params[:, -1], (1 - lrs[:, None] * h) ** 5 * [2.0, -1.0], rtol=1e-4)


def test_best_learning_rate_ranks_by_steps_then_final_loss():
    losses = np.array(
        [
            [1.0, 0.5, 0.05, 0.04],  # reaches 0.1 at step 2, ends at 0.04
            [1.0, 0.5, 0.08, 0.01],  # step 2 too, lower final loss: wins the tie
            [1.0, 0.2, 0.15, 0.12],  # never reaches
            [1.0, np.nan, np.nan, np.nan],  # diverged
        ]
    )
    best = P.best_learning_rate([1.0, 2.0, 3.0, 4.0], losses, 0.1)
    assert best == P.BestLearningRate(1, 2.0, 2.0, 0.01)
    none_reach = P.best_learning_rate([1.0, 2.0, 3.0], losses[[2, 3, 0]][:, :2], 0.1)
    assert none_reach.index == 0 and none_reach.steps == np.inf  # 0.2 beats 0.5 and NaN
    with pytest.raises(ValueError, match="losses has shape"):
        P.best_learning_rate([1.0], losses, 0.1)


def test_steps_to_stay_below_by_hand():
    losses = np.array(
        [
            [1.0, 0.05, 0.2, 0.08, 0.01],  # dips at 1, settles from 3
            [0.01, 0.02, 0.03, 0.04, 0.05],  # below throughout
            [1.0, 0.05, 0.06, 0.07, 0.5],  # ends above
            [1.0, np.nan, 0.05, 0.05, 0.05],  # NaN counts as above
        ]
    )
    np.testing.assert_array_equal(P.steps_to_stay_below(losses, 0.1), [3.0, 0.0, np.inf, 2.0])


def test_optimize_bad_input():
    f = P.quadratic(jnp.ones(2))
    with pytest.raises(ValueError, match="steps=-1"):
        P.optimize(f, T.sgd(0.1), jnp.ones(2), -1)
    with pytest.raises(ValueError, match="grad_fn and key"):
        P.optimize(f, T.sgd(0.1), jnp.ones(2), 3, grad_fn=lambda x, k: x)


def test_step_and_impulse_responses_against_hand_formulas():
    t = np.arange(1, 41)
    np.testing.assert_allclose(P.step_response(T.scale_by_momentum(0.9, ema=True), 40), 1 - 0.9**t, rtol=1e-5)
    # optax's own heavy-ball trace: the step response is a geometric sum.
    np.testing.assert_allclose(P.step_response(optax.trace(0.8), 40), (1 - 0.8**t) / 0.2, rtol=1e-5)
    impulse = jnp.zeros((10, 3)).at[0].set(jnp.array([1.0, -2.0, 0.5]))
    out = P.response(optax.trace(0.5), impulse)
    np.testing.assert_allclose(out, 0.5 ** np.arange(10)[:, None] * np.array([1.0, -2.0, 0.5]), rtol=1e-6)


def test_scale_by_diagonal_then_sgd():
    d = jnp.array([2.0, 0.5, -1.0])
    g = jnp.array([1.0, 4.0, 3.0])
    tx = optax.chain(P.scale_by_diagonal(d), T.sgd(0.1))
    u, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(u, -0.1 * np.array([2.0, 2.0, -3.0]), rtol=1e-6)
    tree = {"a": jnp.ones(2), "b": jnp.ones(())}
    tx = P.scale_by_diagonal({"a": jnp.array([3.0, 4.0]), "b": jnp.array(5.0)})
    u, _ = tx.update(tree, tx.init(tree))
    np.testing.assert_allclose(u["a"], [3.0, 4.0])
    np.testing.assert_allclose(u["b"], 5.0)


def test_bias_batchnorm_gradient_is_constant_with_stopped_stats_and_zero_without():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(16, 3))
    y = rng.normal(loc=1.0, size=(16, 3))
    b = np.array([0.3, -2.0, 5.0])
    sigma = np.sqrt(u.var(0) + 1e-5)
    x_hat = (u - u.mean(0)) / sigma
    args = [jnp.asarray(a, jnp.float32) for a in (u, y, b)]
    stopped = jax.jit(P.bias_batchnorm_loss(*args[:2], stop_gradient_stats=True))
    true = jax.jit(P.bias_batchnorm_loss(*args[:2], stop_gradient_stats=False))
    np.testing.assert_allclose(stopped(args[2]), 0.5 * np.mean((x_hat - y) ** 2), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(stopped)(args[2]), -y.mean(0) / (3 * sigma), rtol=1e-4)
    np.testing.assert_allclose(jax.grad(true)(args[2]), 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="expected both"):
        P.bias_batchnorm_loss(args[0], args[1][:3], stop_gradient_stats=True)


# --------------------------------------------------------------------------- noisy quadratic model


def test_nqm_gradient_mean_and_variance():
    h = P.nqm_curvatures(4)
    np.testing.assert_allclose(h, 1 / np.arange(1, 5), rtol=1e-7)
    x = jnp.array([1.0, -2.0, 3.0, 0.5])
    grad_fn = P.nqm_gradient(h, 8.0)
    g = np.asarray(jax.vmap(lambda k: grad_fn(x, k))(jax.random.split(jax.random.key(0), 5000)), np.float64)
    hn = 1 / np.arange(1, 5)
    se = np.sqrt(hn / 8 / 5000)
    assert np.all(np.abs(g.mean(0) - hn * np.asarray(x)) < 4 * se)
    np.testing.assert_allclose(g.var(0), hn / 8, rtol=0.1)  # 5 standard errors of a variance
    with pytest.raises(ValueError, match="dim=0"):
        P.nqm_curvatures(0)


@pytest.mark.parametrize("beta,p", [(0.0, 0.0), (0.8, 0.0), (0.0, 0.5), (0.6, 0.5)])
def test_nqm_expected_loss_matches_covariance_propagation(beta, p):
    h = np.array([1.0, 0.5, 0.1, 0.01])
    ref = _np_nqm_cov_loss(h, 2.0, 0.3, 4.0, 60, beta, p)
    with jax.enable_x64(True):
        got = P.nqm_expected_loss(jnp.asarray(h), 2.0, 0.3, 4.0, 60, beta=beta, precond_power=p)
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_nqm_expected_loss_matches_numpy_monte_carlo():
    h = 1 / np.arange(1, 6)
    x0 = np.array([1.0, -1.0, 2.0, 0.5, 1.5])
    for beta, p, lr in ((0.0, 0.0, 0.5), (0.9, 0.0, 0.05), (0.0, 0.5, 0.4)):
        mc = _np_nqm_monte_carlo(h, x0, lr, 2.0, 40, beta, p, draws=20000, seed=1)
        exact = np.asarray(
            P.nqm_expected_loss(
                jnp.asarray(h, jnp.float32),
                jnp.asarray(x0, jnp.float32),
                lr,
                2.0,
                40,
                beta=beta,
                precond_power=p,
            )
        )
        se = mc.std(0, ddof=1) / np.sqrt(mc.shape[0])
        z = np.abs(mc.mean(0) - exact)[1:] / se[1:]
        assert z.max() < 4.5, (beta, p, z.max())


def test_toolkit_momentum_monte_carlo_matches_the_recurrence():
    h, steps, draws = P.nqm_curvatures(6), 30, 4000
    losses = P.nqm_monte_carlo(h, jnp.ones(6), T.momentum(0.1, 0.8), 2.0, steps, jax.random.key(3), draws)
    losses = np.asarray(losses, np.float64)
    exact = _np_nqm_cov_loss(1 / np.arange(1, 7), 1.0, 0.1, 2.0, steps, beta=0.8)
    se = losses.std(0, ddof=1) / np.sqrt(draws)
    assert losses.shape == (draws, steps + 1)
    assert np.all(np.abs(losses.mean(0) - exact)[1:] < 4.5 * se[1:])
    np.testing.assert_allclose(losses[:, 0], exact[0], rtol=1e-6)


def _first_crossing(losses, target):
    below = np.flatnonzero(losses <= target)
    return float(below[0]) if below.size else np.inf


_steps_jit = jax.jit(P.nqm_steps_to_target, static_argnames=("exact_steps", "max_log2_steps"))


@pytest.mark.parametrize(
    "lr,beta,p,target,exact_steps",
    [
        (0.5, 0.0, 0.0, 0.05, 0),  # SGD, binary lifting only
        (0.05, 0.9, 0.0, 0.05, 0),  # momentum, crossing long after the oscillations
        (0.05, 0.9, 0.0, 0.025, 44),  # lifting from step 44, crossing at 47
        (0.5, 0.95, 0.0, 0.2, 44),  # underdamped: dips below 0.2 at 40, above again at 41-48
        (0.2, 0.0, 0.5, 0.03, 0),  # preconditioned
        (2.5, 0.0, 0.0, 0.05, 44),  # diverges: inf
        (0.5, 0.0, 0.0, 1e-4, 0),  # below the noise floor: inf
        (0.5, 0.0, 0.0, 100.0, 0),  # reached at step 0
    ],
)
def test_nqm_steps_to_target_matches_step_by_step_search(lr, beta, p, target, exact_steps):
    h = 1 / np.arange(1, 21)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = _first_crossing(_np_nqm_cov_loss(h, 1.0, lr, 64.0, 3000, beta, p), target)
    with jax.enable_x64(True):
        got = _steps_jit(
            jnp.asarray(h),
            1.0,
            lr,
            64.0,
            target,
            beta=beta,
            precond_power=p,
            exact_steps=exact_steps,
            max_log2_steps=11,
        )
    # Beyond the horizon (exact_steps + 2**11 - 1 steps) counts as not reached.
    assert float(got) == (expected if expected < exact_steps + 2**11 else np.inf)
    assert expected in (0.0, np.inf) or 1 < expected < 2000  # each case tests what its comment says


def test_nqm_steps_to_target_pure_lifting_misses_an_early_dip():
    # Why the first steps are searched one by one: the underdamped case above
    # crosses 0.2 first at step 40, and lifting alone lands on a later crossing.
    h = 1 / np.arange(1, 21)
    first = _first_crossing(_np_nqm_cov_loss(h, 1.0, 0.5, 64.0, 200, 0.95), 0.2)
    with jax.enable_x64(True):
        lifted = P.nqm_steps_to_target(jnp.asarray(h), 1.0, 0.5, 64.0, 0.2, beta=0.95, exact_steps=0)
    assert first == 40 and float(lifted) > first
    with pytest.raises(ValueError, match="exact_steps=-1"):
        P.nqm_steps_to_target(jnp.asarray(h), 1.0, 0.5, 64.0, 0.2, exact_steps=-1)


def test_nqm_steps_grid_against_step_by_step_search():
    # The grid maps nqm_steps_to_target in vmapped chunks (and a remainder: 8 configs, chunk 3).
    h = 1 / np.arange(1, 11)
    lrs, batches, betas = np.array([0.2, 0.8]), np.array([8.0, 64.0]), np.array([0.0, 0.5])
    with jax.enable_x64(True):
        hj = jnp.asarray(h)
        plain = P.nqm_steps_grid(hj, 1.0, 0.05, lrs, batches, betas=betas, max_log2_steps=12)
        ema = P.nqm_steps_grid(
            hj,
            1.0,
            0.05,
            lrs,
            batches,
            betas=betas,
            ema_learning_rates=True,
            precond_power=0.5,
            max_log2_steps=12,
            chunk=3,
        )
    assert plain.shape == ema.shape == (2, 2, 2)
    for (i, b), (j, lr), (k, beta) in [
        (ib, jl, kb) for ib in enumerate(batches) for jl in enumerate(lrs) for kb in enumerate(betas)
    ]:
        assert plain[i, j, k] == _first_crossing(_np_nqm_cov_loss(h, 1.0, lr, b, 3000, beta), 0.05)
        lr_hb = lr * (1 - beta)
        assert ema[i, j, k] == _first_crossing(_np_nqm_cov_loss(h, 1.0, lr_hb, b, 3000, beta, 0.5), 0.05)
    # B = 8 with lr 0.8 sits above the target (noise floor): inf, the rest finite.
    assert np.isinf(plain[0, 1]).all() and np.isfinite(plain[1]).all() and np.isfinite(ema[:, 0]).all()


def test_nqm_best_steps_picks_the_grid_minimum():
    h = 1 / np.arange(1, 11)
    lrs, batches, betas = np.array([0.05, 0.2, 0.8]), np.array([8.0, 64.0]), np.array([0.5, 0.75])
    with jax.enable_x64(True):
        best = P.nqm_best_steps(
            jnp.asarray(h), 1.0, 0.05, lrs, batches, betas=betas, ema_learning_rates=True, max_log2_steps=12
        )
    for i, b in enumerate(batches):
        table = {
            (lr, beta): _first_crossing(_np_nqm_cov_loss(h, 1.0, lr * (1 - beta), b, 3000, beta), 0.05)
            for lr in lrs
            for beta in betas
        }
        lr, beta = min(table, key=lambda k: (table[k], k))
        assert (best.steps[i], best.learning_rate[i], best.beta[i]) == (table[lr, beta], lr, beta)
        assert best.at_edge[i] == (lr in (0.05, 0.8))
    assert np.all(np.isfinite(best.steps))


def test_nqm_best_steps_coarse_to_fine_equals_the_full_grid():
    h = 1 / np.arange(1, 21)
    lrs, batches, betas = 2.0 ** (np.arange(-24, 9) / 4), 2.0 ** np.arange(0, 12, 2), np.array([0.0, 0.75])
    with jax.enable_x64(True):
        args = (jnp.asarray(h), 1.0, 0.05, lrs, batches)
        full = P.nqm_best_steps(*args, betas=betas, ema_learning_rates=True, max_log2_steps=12)
        fine = P.nqm_best_steps(*args, betas=betas, ema_learning_rates=True, max_log2_steps=12, refine=4)
    for a, b in zip(full, fine, strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.all(np.isfinite(full.steps)) and len(set(full.learning_rate)) > 3  # the winner moves with B
    with pytest.raises(ValueError, match="refine=0"):
        P.nqm_best_steps(*args, refine=0)


def test_critical_batch_size():
    b = np.array([1.0, 2.0, 4.0, 8.0])
    # S·B / (S0·B0) = 1, 1, 1.5, 3: crosses 2 a third of the way (in log B) from 4 to 8.
    assert crossing_batch_size(b, [800.0, 400.0, 300.0, 300.0]) == pytest.approx(4 * 2 ** (1 / 3))
    assert crossing_batch_size(b, [800.0, 400.0, 200.0, 100.0]) == np.inf
    # McCandlish et al.'s S = S_min (1 + B_crit / B) on a fine grid: B_crit + 2 B0.
    dense = 2.0 ** np.arange(0, 14, 0.01)
    assert crossing_batch_size(dense, 100 * (1 + 1000 / dense)) == pytest.approx(1002, rel=1e-3)
    # ... which is what the fit of that model finds, plus 2 B0: the two estimators agree.
    fit = fit_critical_batch_size(dense, 100 * (1 + 1000 / dense))
    assert fit.b_crit + 2 * dense[0] == pytest.approx(
        crossing_batch_size(dense, 100 * (1 + 1000 / dense)), rel=1e-3
    )
    with pytest.raises(ValueError, match="increasing"):
        crossing_batch_size(b[::-1], [1.0, 2.0, 3.0, 4.0])
    # inf (not reached) after 1.25 at B = 4: the crossing is put at 4, a lower bound.
    assert crossing_batch_size(b, [800.0, 400.0, 250.0, np.inf]) == 4.0
    with pytest.raises(ValueError, match="steps\\[0\\]=inf"):
        crossing_batch_size(b, [np.inf, 1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="factor=1"):
        crossing_batch_size(b, [1.0, 2.0, 3.0, 4.0], factor=1)
