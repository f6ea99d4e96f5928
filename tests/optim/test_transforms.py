"""Tests for jaxopt_lab.optim.transforms against optax's own optimizers and float64 NumPy.

Every alias runs on a nested pytree (dict and tuple, leaves of several shapes)
fed a fixed random gradient sequence, with hyperparameters drawn at random, and
its parameter trajectory is compared with optax's alias on the same sequence.
Where optax has no counterpart (EMA momentum with bias correction, Adam without
it) the reference is the update rule written out in float64 NumPy.
"""

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_lab.optim import transforms as T

STEPS = 100
OPT_RTOL, OPT_ATOL = 2e-5, 2e-6  # float32 rounding, accumulated over STEPS steps


@contextlib.contextmanager
def _reference_promotion():
    """optax itself relies on implicit promotion (``decay**count``); allow it for reference calls."""
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        yield


# ------------------------------------------------------------------ data


def _params(rng) -> dict:
    """A nested dict/tuple pytree with a matrix, a vector, a 3-D array and a scalar."""
    return {
        "dense": {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,))},
        "conv": (rng.normal(size=(2, 3, 2)), np.asarray(rng.normal())),
    }


def _f32(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def _grads(rng, params, steps=STEPS):
    """A random gradient sequence, leaves at different scales, stacked along axis 0."""
    return jax.tree.map(
        lambda p: rng.normal(size=(steps, *np.shape(p))) * rng.choice([0.01, 0.3, 3.0]), params
    )


RNG = np.random.default_rng(0)
PARAMS_NP = _params(RNG)
GRADS_NP = _grads(RNG, PARAMS_NP)
PARAMS = _f32(PARAMS_NP)
GRADS = _f32(GRADS_NP)


def _step_fn(tx):
    def step(carry, g):
        params, state = carry
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), params

    return step


def _scan(tx, params, grads):
    """The parameters after each step of ``tx`` on the gradient sequence ``grads``."""
    _, trajectory = jax.lax.scan(_step_fn(tx), (params, tx.init(params)), grads)
    return trajectory


# Two compiled entry points: a transformation built from Python numbers (static),
# and a maker (static) called with traced hyperparameters, which compiles once
# per maker however many hyperparameter draws it runs.
_trajectory = jax.jit(_scan, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _trajectory_of(make, lr, hp, params, grads):
    return _scan(make(lr, **hp), params, grads)


def _reference(fn, *args):
    with _reference_promotion():
        return fn(*args)


def _assert_trees_close(actual, expected, rtol=OPT_RTOL, atol=OPT_ATOL):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=rtol, atol=atol)


# ------------------------------------------------------------------ cases: ours vs optax


def _loguniform(rng, low, high):
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


class Case(NamedTuple):
    ours: Callable  # (learning_rate, **hyperparameters) -> our transformation
    ref: Callable  # the same arguments -> optax's transformation
    draw: Callable  # rng -> hyperparameters (without the learning rate)


def _draw_beta(rng):
    return {"beta": float(rng.uniform(0.0, 0.99))}


def _draw_rms(rng):
    return {"decay": float(rng.uniform(0.5, 0.999)), "eps": _loguniform(rng, 1e-8, 1e-3)}


def _draw_adam(rng):
    return {
        "b1": float(rng.uniform(0.0, 0.99)),
        "b2": float(rng.uniform(0.9, 0.9999)),
        "eps": _loguniform(rng, 1e-8, 1e-3),
        # large enough to matter next to g**2 ~ 1e-4 on the smallest-scale leaves
        "eps_root": float(rng.choice([0.0, _loguniform(rng, 1e-6, 1e-3)])),
    }


def _ema_ref(nesterov):
    """v_ema = (1 - beta) v_heavy_ball, so EMA momentum at lr is heavy ball at lr * (1 - beta)."""

    def ref(lr, beta):
        scaled = (lambda c: lr(c) * (1 - beta)) if callable(lr) else lr * (1 - beta)
        return optax.sgd(scaled, momentum=beta, nesterov=nesterov)

    return ref


CASES = {
    "sgd": Case(lambda lr: T.sgd(lr), lambda lr: optax.sgd(lr), lambda rng: {}),
    "momentum": Case(
        lambda lr, beta: T.momentum(lr, beta),
        lambda lr, beta: optax.sgd(lr, momentum=beta),
        _draw_beta,
    ),
    "nesterov": Case(
        lambda lr, beta: T.momentum(lr, beta, nesterov=True),
        lambda lr, beta: optax.sgd(lr, momentum=beta, nesterov=True),
        _draw_beta,
    ),
    "ema": Case(lambda lr, beta: T.momentum(lr, beta, ema=True), _ema_ref(False), _draw_beta),
    "ema_nesterov": Case(
        lambda lr, beta: T.momentum(lr, beta, ema=True, nesterov=True), _ema_ref(True), _draw_beta
    ),
    "rmsprop": Case(
        lambda lr, decay, eps: T.rmsprop(lr, decay, eps),
        lambda lr, decay, eps: optax.rmsprop(lr, decay=decay, eps=eps),
        _draw_rms,
    ),
    "rmsprop_centered": Case(
        lambda lr, decay, eps: T.rmsprop(lr, decay, eps, centered=True),
        lambda lr, decay, eps: optax.rmsprop(lr, decay=decay, eps=eps, centered=True),
        _draw_rms,
    ),
    "adam": Case(
        lambda lr, b1, b2, eps, eps_root: T.adam(lr, b1, b2, eps, eps_root),
        lambda lr, b1, b2, eps, eps_root: optax.adam(lr, b1=b1, b2=b2, eps=eps, eps_root=eps_root),
        _draw_adam,
    ),
}


def _draw(name, seed):
    rng = np.random.default_rng(seed)
    return _loguniform(rng, 1e-3, 1e-1), CASES[name].draw(rng)


def _traced(lr, hp):
    return jnp.float32(lr), {k: jnp.float32(v) for k, v in hp.items()}


@pytest.mark.parametrize("name", CASES)
def test_alias_matches_optax_under_jit(name):
    """Three random hyperparameter draws, 100 jitted steps: trajectories equal to float32 rounding.

    The hyperparameters enter as traced float32 scalars (as in a sweep), for
    both sides; Python numbers are covered by the composition tests below.
    """
    case = CASES[name]
    for seed in range(3):
        lr, hp = _traced(*_draw(name, seed))
        ours = _trajectory_of(case.ours, lr, hp, PARAMS, GRADS)
        expected = _reference(_trajectory_of, case.ref, lr, hp, PARAMS, GRADS)
        _assert_trees_close(ours, expected)


@pytest.mark.parametrize("nesterov", [False, True])
def test_ema_momentum_equals_heavy_ball_with_scaled_learning_rate(nesterov):
    """v_ema = (1 - beta) v_hb exactly, so EMA at lr takes optax's heavy-ball steps at lr * (1 - beta)."""
    lr, beta = jnp.float32(0.1), jnp.float32(0.95)
    case = CASES["ema_nesterov" if nesterov else "ema"]
    ours = _trajectory_of(case.ours, lr, {"beta": beta}, PARAMS, GRADS)
    heavy_ball = CASES["nesterov" if nesterov else "momentum"].ref
    expected = _reference(_trajectory_of, heavy_ball, lr * (1 - beta), {"beta": beta}, PARAMS, GRADS)
    _assert_trees_close(ours, expected)
    # ... and not the heavy-ball steps at the same learning rate
    same_lr = _reference(_trajectory_of, heavy_ball, lr, {"beta": beta}, PARAMS, GRADS)
    assert not np.allclose(ours["dense"]["w"][-1], same_lr["dense"]["w"][-1], rtol=1e-2)


# ------------------------------------------------------------------ momentum and Adam by hand


def _np_momentum(grads, lr, beta, *, nesterov, ema, bias_correction):
    """float64 NumPy transcription of the documented momentum rule; returns the trajectory."""
    p = np.asarray(0.0)  # parameters start at 0: the trajectory is the sum of the steps
    v = 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        v = beta * v + (1 - beta) * g if ema else g + beta * v
        v_hat = v / (1 - beta**t) if bias_correction else v
        if nesterov:
            u = ((1 - beta) if ema else 1.0) * g + beta * v_hat
        else:
            u = v_hat
        p = p - lr * u
        out.append(p)
    return np.stack(out)


def _np_adam(grads, lr, b1, b2, eps, eps_root, *, bias_correction):
    p, m, v = 0.0, 0.0, 0.0
    out = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = (m / (1 - b1**t), v / (1 - b2**t)) if bias_correction else (m, v)
        p = p - lr * m_hat / (np.sqrt(v_hat + eps_root) + eps)
        out.append(p)
    return np.stack(out)


# The hand computations run on one leaf: the tree handling is checked against optax above.
G_NP = GRADS_NP["dense"]["w"]
G = jnp.asarray(G_NP, jnp.float32)
ZEROS = jnp.zeros(G.shape[1:], jnp.float32)


@pytest.mark.parametrize("bias_correction", [False, True])
@pytest.mark.parametrize("ema", [False, True])
@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_matches_float64_numpy(nesterov, ema, bias_correction):
    lr, beta = 0.03, 0.8
    tx = T.momentum(lr, beta, nesterov=nesterov, ema=ema, bias_correction=bias_correction)
    expected = _np_momentum(G_NP, lr, beta, nesterov=nesterov, ema=ema, bias_correction=bias_correction)
    np.testing.assert_allclose(_trajectory(tx, ZEROS, G), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bias_correction", [False, True])
def test_adam_matches_float64_numpy(bias_correction):
    # eps and eps_root comparable to the gradients' scale, so that misplacing either shows
    mean_square = float(np.mean(G_NP**2))
    hp = {"lr": 0.01, "b1": 0.8, "b2": 0.99, "eps": 0.1 * mean_square**0.5, "eps_root": 0.3 * mean_square}
    tx = T.adam(hp["lr"], hp["b1"], hp["b2"], hp["eps"], hp["eps_root"], bias_correction=bias_correction)
    expected = _np_adam(G_NP, *hp.values(), bias_correction=bias_correction)
    np.testing.assert_allclose(_trajectory(tx, ZEROS, G), expected, rtol=1e-4, atol=1e-6)


def test_adam_without_bias_correction_takes_smaller_first_steps():
    """First step (1 - b1) g / sqrt((1 - b2) g^2) = (1 - b1) / sqrt(1 - b2) sign(g), not sign(g)."""
    b1, b2 = 0.9, 0.99
    g = jnp.array([2.0, -0.5, 4.0])
    tx = T.scale_by_adam(b1, b2, 0.0, 0.0, bias_correction=False)
    u, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(u, (1 - b1) / np.sqrt(1 - b2) * np.sign(g), rtol=1e-6)


# ------------------------------------------------------------------ composition


@pytest.mark.parametrize("name", ["momentum", "ema_nesterov", "rmsprop_centered", "adam"])
def test_inside_chain_with_clipping_and_weight_decay(name):
    """Python-number hyperparameters, after optax's clipping and weight decay."""
    case = CASES[name]
    lr, hp = _draw(name, 11)

    def chain(tx):
        return optax.chain(optax.clip_by_global_norm(1.0), optax.add_decayed_weights(1e-2), tx)

    ours = _trajectory(chain(case.ours(lr, **hp)), PARAMS, GRADS)
    _assert_trees_close(ours, _reference(_trajectory, chain(case.ref(lr, **hp)), PARAMS, GRADS))


@pytest.mark.parametrize("name", ["ema_nesterov", "adam"])
def test_under_multisteps(name):
    case = CASES[name]
    lr, hp = _draw(name, 12)

    def multi(tx):
        return optax.MultiSteps(tx, every_k_schedule=3).gradient_transformation()

    with _reference_promotion():  # MultiSteps's own bookkeeping promotes implicitly
        ours = _trajectory(multi(case.ours(lr, **hp)), PARAMS, GRADS)
    _assert_trees_close(ours, _reference(_trajectory, multi(case.ref(lr, **hp)), PARAMS, GRADS))
    # the accumulation is real: parameters only move every third step
    w = ours["dense"]["w"]
    np.testing.assert_array_equal(w[1], PARAMS["dense"]["w"])
    assert not np.allclose(w[2], w[1])


@pytest.mark.parametrize("name", ["momentum", "ema", "rmsprop", "adam"])
def test_under_vmap_over_traced_hyperparameters(name):
    """One program builds the optimizer from stacked hyperparameters; each row equals optax alone."""
    case = CASES[name]
    draws = [_traced(*_draw(name, seed)) for seed in range(3)]
    lrs = jnp.stack([lr for lr, _ in draws])
    hps = jax.tree.map(lambda *xs: jnp.stack(xs), *[hp for _, hp in draws])

    @jax.jit
    @jax.vmap
    def run(lr, hp):
        return _scan(case.ours(lr, **hp), PARAMS, GRADS)

    stacked = run(lrs, hps)
    for i, (lr, hp) in enumerate(draws):
        row = jax.tree.map(lambda x, i=i: x[i], stacked)
        _assert_trees_close(row, _reference(_trajectory_of, case.ref, lr, hp, PARAMS, GRADS))


def _loss_after(tx, params, grads):
    """A smooth function of the parameters after two updates (unrolled: cheaper to compile)."""
    state = tx.init(params)
    for t in range(2):
        updates, state = tx.update(jax.tree.map(lambda g, t=t: g[t], grads), state, params)
        params = optax.apply_updates(params, updates)
    return sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(params))


@functools.partial(jax.jit, static_argnums=0)
def _grads_of_loss(make, lr, hp, grads):
    """d(loss)/d(learning rate) and d(loss)/d(gradient inputs), through the updates."""
    return jax.grad(lambda lr_, g: _loss_after(make(lr_, **hp), PARAMS, g), argnums=(0, 1))(lr, grads)


@pytest.mark.parametrize("name", ["nesterov", "rmsprop", "rmsprop_centered", "adam"])
def test_grad_through_the_update(name):
    """Gradients w.r.t. the learning rate and the gradient input, through two updates, equal optax's."""
    case = CASES[name]
    lr, hp = _traced(*_draw(name, 13))
    grads = jax.tree.map(lambda g: g[:2], GRADS)
    ours_lr, ours_g = _grads_of_loss(case.ours, lr, hp, grads)
    ref_lr, ref_g = _reference(_grads_of_loss, case.ref, lr, hp, grads)
    assert abs(float(ref_lr)) > 1e-3
    np.testing.assert_allclose(ours_lr, ref_lr, rtol=1e-4)
    _assert_trees_close(ours_g, ref_g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["nesterov", "adam"])
def test_schedule_learning_rate(name):
    """An optax schedule is evaluated at the count of previous updates, as optax does."""
    case = CASES[name]
    _, hp = _draw(name, 14)
    schedule = optax.exponential_decay(0.05, transition_steps=10, decay_rate=0.5)
    ours = _trajectory(case.ours(schedule, **hp), PARAMS, GRADS)
    _assert_trees_close(ours, _reference(_trajectory, case.ref(schedule, **hp), PARAMS, GRADS))
    # the schedule is used: a constant at its first value ends elsewhere
    constant = _trajectory_of(case.ours, *_traced(0.05, hp), PARAMS, GRADS)
    assert not np.allclose(constant["dense"]["w"][-1], ours["dense"]["w"][-1], rtol=1e-3)


# ------------------------------------------------------------------ states and dtypes


def test_states_are_named_after_their_transforms():
    g = {"a": jnp.ones((2,)), "b": (jnp.ones((3, 1)),)}

    def states(tx):
        state = tx.init(g)
        _, new = jax.jit(tx.update)(g, state, g)
        return state, new

    s0, s1 = states(T.adam(0.1))
    assert isinstance(s1[0], T.ScaleByAdamState) and s1[0]._fields == ("count", "mu", "nu")
    assert int(s0[0].count) == 0 and int(s1[0].count) == 1 and s1[0].count.dtype == jnp.int32
    assert isinstance(s1[1], optax.EmptyState)
    s0, s1 = states(T.momentum(0.1, ema=True))
    assert isinstance(s1[0], T.ScaleByMomentumState) and s1[0]._fields == ("count", "trace")
    assert int(s1[0].count) == 1
    # after one step from zero the EMA buffer is (1 - beta) g
    np.testing.assert_allclose(s1[0].trace["a"], 0.1 * np.ones(2), rtol=1e-6)
    assert isinstance(states(T.rmsprop(0.1))[1][0], T.ScaleByRmsState)
    assert T.ScaleByRmsState._fields == ("nu",)
    centered = states(T.rmsprop(0.1, centered=True))[1][0]
    assert isinstance(centered, T.ScaleByCenteredRmsState) and centered._fields == ("mu", "nu")
    sched = states(T.sgd(optax.constant_schedule(0.1)))[1][0]
    assert isinstance(sched, T.ScaleByLearningRateState) and int(sched.count) == 1


def test_bfloat16_parameters_stay_bfloat16_with_float32_traced_hyperparameters():
    params = {"w": PARAMS["dense"]["w"].astype(jnp.bfloat16)}
    grads = {"w": G[:5].astype(jnp.bfloat16)}

    @jax.jit
    def run(lr, b1):
        tx = T.adam(lr, b1)
        (p, s), _ = jax.lax.scan(_step_fn(tx), (params, tx.init(params)), grads)
        return p, s

    params_out, state = run(jnp.float32(1e-2), jnp.float32(0.9))
    for leaf in jax.tree.leaves((params_out, state[0].mu, state[0].nu)):
        assert leaf.dtype == jnp.bfloat16
    # bfloat16 keeps 8 bits: compare with optax in float32 at that precision
    grads32 = jax.tree.map(lambda x: x.astype(jnp.float32), grads)
    expected = _reference(_trajectory, optax.adam(1e-2, b1=0.9), _f32(params), grads32)
    _assert_trees_close(_f32(params_out), jax.tree.map(lambda x: x[-1], expected), rtol=2e-2, atol=2e-2)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: T.adam(1e-3, b1=1.5), r"b1=1\.5 is invalid: expected 0 <= b1 < 1"),
        (lambda: T.adam(1e-3, b2=1.0), r"b2=1\.0 is invalid: expected 0 <= b2 < 1"),
        (lambda: T.adam(1e-3, b1=-0.1), r"b1=-0\.1 is invalid: expected 0 <= b1 < 1"),
        (lambda: T.adam(1e-3, eps=-1e-8), r"eps=-1e-08 is invalid: expected a finite eps >= 0"),
        (lambda: T.adam(1e-3, eps_root=-1.0), r"eps_root=-1\.0 is invalid: expected a finite eps_root >= 0"),
        (lambda: T.adam(1e-3, b2=np.float64(2.0)), r"b2=2\.0 is invalid: expected 0 <= b2 < 1"),
        (lambda: T.momentum(0.1, beta=1.0), r"beta=1\.0 is invalid: expected 0 <= beta < 1"),
        (lambda: T.momentum(0.1, beta=float("nan")), r"beta=nan is invalid: expected 0 <= beta < 1"),
        (lambda: T.rmsprop(0.1, decay=1.2), r"decay=1\.2 is invalid: expected 0 <= decay < 1"),
        (lambda: T.rmsprop(0.1, eps=-0.5), r"eps=-0\.5 is invalid: expected a finite eps >= 0"),
        (lambda: T.sgd(0.0), r"learning_rate=0\.0 is invalid: expected a finite learning_rate > 0"),
        (lambda: T.sgd(-1), r"learning_rate=-1 is invalid: expected a finite learning_rate > 0"),
        (lambda: T.momentum(-0.1), r"learning_rate=-0\.1 is invalid"),
        (lambda: T.scale_by_momentum(2.0), r"beta=2\.0 is invalid"),
        (lambda: T.scale_by_rms(0.9, -1.0), r"eps=-1\.0 is invalid"),
        (lambda: T.scale_by_adam(0.9, 1.5, 1e-8, 0.0), r"b2=1\.5 is invalid"),
        (lambda: T.scale_by_learning_rate(-3.0), r"learning_rate=-3\.0 is invalid"),
        # NaN and infinities are refused where they enter, like any other bad number
        (lambda: T.sgd(float("inf")), r"learning_rate=inf is invalid: expected a finite learning_rate > 0"),
        (lambda: T.sgd(float("nan")), r"learning_rate=nan is invalid"),
        (lambda: T.adam(1e-3, eps=float("inf")), r"eps=inf is invalid: expected a finite eps >= 0"),
        (lambda: T.adam(1e-3, eps_root=float("nan")), r"eps_root=nan is invalid"),
        (lambda: T.rmsprop(1e-3, decay=float("nan")), r"decay=nan is invalid: expected 0 <= decay < 1"),
        (lambda: T.adam(1e-3, b2=float("inf")), r"b2=inf is invalid"),
    ],
)
def test_bad_python_hyperparameters_raise(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_boundary_values_and_arrays_are_accepted():
    T.momentum(1e-3, beta=0.0)
    T.adam(1e-3, b1=0.0, b2=0.0, eps=0.0, eps_root=0.0)
    T.rmsprop(1e-3, decay=0, eps=0)
    T.sgd(optax.constant_schedule(-1.0))  # a schedule is a function: it cannot be checked
    # JAX arrays (and traced values) are documented as unchecked: building must not fail
    T.adam(jnp.float32(-1.0), b1=jnp.float32(2.0))


# ------------------------------------------------------------------ registry and docs


def test_registry_signatures_match_optax_defaults():
    assert T.OPTIMIZERS == {"sgd": T.sgd, "momentum": T.momentum, "rmsprop": T.rmsprop, "adam": T.adam}
    refs = {"rmsprop": optax.rmsprop, "adam": optax.adam}
    for name, alias in T.OPTIMIZERS.items():
        params = list(inspect.signature(alias).parameters.values())
        assert params[0].name == "learning_rate" and params[0].default is params[0].empty
        for p in params[1:]:
            if p.kind is p.KEYWORD_ONLY:  # flags, and sgd's optional momentum as in optax
                assert isinstance(p.default, bool) or (name, p.name) == ("sgd", "momentum")
                continue
            assert p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty
            if name in refs:
                assert p.default == inspect.signature(refs[name]).parameters[p.name].default
    assert inspect.signature(T.momentum).parameters["beta"].default == 0.9
    flags = {
        name: [p.name for p in inspect.signature(a).parameters.values() if p.kind is p.KEYWORD_ONLY]
        for name, a in T.OPTIMIZERS.items()
    }
    assert flags == {
        "sgd": ["momentum", "nesterov"],
        "momentum": ["nesterov", "ema", "bias_correction"],
        "rmsprop": ["centered"],
        "adam": ["bias_correction"],
    }


def test_public_names():
    assert set(T.__all__) == {
        "ScaleByMomentumState",
        "ScaleByRmsState",
        "ScaleByCenteredRmsState",
        "ScaleByAdamState",
        "ScaleByLearningRateState",
        "scale_by_momentum",
        "scale_by_rms",
        "scale_by_adam",
        "scale_by_learning_rate",
        "sgd",
        "momentum",
        "rmsprop",
        "adam",
        "OPTIMIZERS",
    }
    for name in T.__all__:
        assert getattr(T, name) is not getattr(optax, name, None)


# ------------------------------------------------------------------ every input optax accepts

# Each alias beside optax's own, built from Python numbers as an optax user writes them.
_PYTHON_CASES = {
    "sgd": (lambda: T.sgd(0.1), lambda: optax.sgd(0.1)),
    "momentum": (lambda: T.momentum(0.1, 0.9), lambda: optax.sgd(0.1, momentum=0.9)),
    "nesterov": (
        lambda: T.momentum(0.1, 0.9, nesterov=True),
        lambda: optax.sgd(0.1, momentum=0.9, nesterov=True),
    ),
    "rmsprop": (lambda: T.rmsprop(0.05, 0.8, 1e-4), lambda: optax.rmsprop(0.05, 0.8, 1e-4)),
    "rmsprop_centered": (
        lambda: T.rmsprop(0.05, 0.8, 1e-4, centered=True),
        lambda: optax.rmsprop(0.05, 0.8, 1e-4, centered=True),
    ),
    "adam": (lambda: T.adam(0.05, 0.8, 0.95, 1e-6), lambda: optax.adam(0.05, 0.8, 0.95, 1e-6)),
}
# The moment buffers by state field: ours and optax's name them alike.
_MOMENTS = ("trace", "mu", "nu")


def _moment_dtypes(state) -> dict:
    """{field: dtype tree} of every moment buffer in a (chained) optimizer state."""
    found = {}

    def visit(node):
        if hasattr(node, "_fields"):
            for name in node._fields:
                if name in _MOMENTS:
                    found[name] = jax.tree.map(lambda x: jnp.asarray(x).dtype, getattr(node, name))
        if isinstance(node, tuple):
            for child in node:
                visit(child)

    visit(state)
    return found


def _updates_of(tx, params, grads):
    """The updates of one call per gradient in ``grads``, and the final state."""
    state = tx.init(params)
    out = []
    for g in grads:
        updates, state = tx.update(g, state, params)
        out.append(updates)
    return out, state


_LEAVES = {
    "python_scalar": {"a": 1.0, "b": -2.0},
    "integer": {"a": jnp.arange(3), "b": jnp.array([[2, -1]], jnp.int32)},
    "float16": {"a": jnp.linspace(-1, 1, 4).astype(jnp.float16)},
    "bfloat16": {"a": jnp.linspace(-1, 1, 4).astype(jnp.bfloat16)},
    "empty": {},
    "none_leaf": {"a": jnp.linspace(-1, 1, 3), "b": None},
}


@pytest.mark.parametrize("leaves", _LEAVES)
@pytest.mark.parametrize("name", _PYTHON_CASES)
def test_leaves_that_optax_accepts_give_optax_updates_and_state_dtypes(name, leaves):
    """Python scalars, integer, float16 and bfloat16 arrays, empty trees and None leaves:
    the updates (values, dtypes, Python types) and the moments' dtypes are optax's."""
    ours_tx, ref_tx = _PYTHON_CASES[name]
    params = _LEAVES[leaves]
    with _reference_promotion():  # integer parameters get float gradients
        grads = [jax.tree.map(lambda p, t=t: p * 0.5 + 0.25 * t, params) for t in range(3)]
        ref, ref_state = _updates_of(ref_tx(), params, grads)
    ours, ours_state = _updates_of(ours_tx(), params, grads)
    for a, e in zip(ours, ref, strict=True):
        assert jax.tree.structure(a) == jax.tree.structure(e)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(e), strict=True):
            assert type(x) is type(y) and jnp.asarray(x).dtype == jnp.asarray(y).dtype
            np.testing.assert_array_equal(np.asarray(x, np.float64), np.asarray(y, np.float64))
    assert _moment_dtypes(ours_state) == _moment_dtypes(ref_state)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("name", CASES)
def test_complex_parameters_follow_optax_for_100_steps(name, dtype):
    """Complex leaves: the second moments are of |g|^2 (optax's update_moment_per_elem_norm)."""
    case = CASES[name]
    lr, hp = _draw(name, 21)
    rng = np.random.default_rng(5)
    with jax.enable_x64(dtype == "complex128"), _reference_promotion():

        def complex_tree(tree, scale=1.0):
            return jax.tree.map(
                lambda x: jnp.asarray(scale * (x + 1j * rng.normal(size=np.shape(x))), dtype), tree
            )

        params, grads = complex_tree(PARAMS_NP), complex_tree(GRADS_NP, 0.3)
        ours = _trajectory(case.ours(lr, **hp), params, grads)
        expected = _trajectory(case.ref(lr, **hp), params, grads)
        for a, e in zip(jax.tree.leaves(ours), jax.tree.leaves(expected), strict=True):
            assert a.dtype == e.dtype == jnp.dtype(dtype)
            tol = (OPT_RTOL, OPT_ATOL) if dtype == "complex64" else (1e-12, 1e-13)
            np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=tol[0], atol=tol[1])
        # not the real part alone: the imaginary parts move
        w = ours["dense"]["w"]
        assert np.abs(np.imag(w[-1]) - np.imag(w[0])).max() > 1e-3


def test_optax_style_calls_work_with_optax_defaults():
    """sgd's momentum and nesterov keywords, and building blocks called with no arguments."""
    pairs = [
        (T.sgd(0.1, momentum=0.9, nesterov=True), optax.sgd(0.1, momentum=0.9, nesterov=True)),
        (T.sgd(0.1, momentum=0.5), optax.sgd(0.1, momentum=0.5)),
        (T.scale_by_adam(), optax.scale_by_adam()),
        (T.scale_by_rms(), optax.scale_by_rms()),
        (T.scale_by_momentum(), optax.trace(0.9)),
    ]
    for ours, ref in pairs:
        _assert_trees_close(_trajectory(ours, PARAMS, GRADS), _reference(_trajectory, ref, PARAMS, GRADS))
    with pytest.raises(ValueError, match=r"momentum=1\.5 is invalid: expected 0 <= momentum < 1"):
        T.sgd(0.1, momentum=1.5)


@pytest.mark.parametrize("name", ["sgd", "momentum", "rmsprop", "adam"])
def test_under_optax_inject_hyperparams(name):
    """``optax.inject_hyperparams`` wraps our aliases as it wraps optax's, hyperparameters
    changed between steps included."""
    ref_alias = {"sgd": optax.sgd, "momentum": optax.sgd, "rmsprop": optax.rmsprop, "adam": optax.adam}[name]
    extra = {"momentum": {"momentum": 0.9}}.get(name, {})
    ours_kwargs = {"beta": 0.9} if name == "momentum" else {}
    ours_tx = optax.inject_hyperparams(T.OPTIMIZERS[name])(learning_rate=0.05, **ours_kwargs)
    ref_tx = optax.inject_hyperparams(ref_alias)(learning_rate=0.05, **extra)

    def run(tx):
        params, state = PARAMS, tx.init(PARAMS)
        for t in range(6):
            if t == 3:
                state.hyperparams["learning_rate"] = jnp.float32(0.01)
            grads = jax.tree.map(lambda g, t=t: g[t], GRADS)
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return params, state

    ours, ours_state = run(ours_tx)
    ref, _ = _reference(run, ref_tx)
    _assert_trees_close(ours, ref)
    assert float(ours_state.hyperparams["learning_rate"]) == pytest.approx(0.01)


@pytest.mark.parametrize("bad", [None, "0.1", [0.1]])
@pytest.mark.parametrize("name", ["sgd", "momentum", "rmsprop", "adam"])
def test_a_learning_rate_that_is_not_a_number_raises_at_construction(name, bad):
    with pytest.raises(ValueError, match=r"learning_rate=.* is invalid: expected a positive number"):
        T.OPTIMIZERS[name](bad)
