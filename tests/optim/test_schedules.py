"""Schedules with traced parameters: equal to optax's builders at Python values over every
step of a run, and under vmap over their parameters equal to each value alone."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_lab.optim import schedules as S

RUN = 200  # steps of a run; every step is compared
STEPS = np.arange(RUN + 20)  # and some past its end


def _optax_warmup_linear(peak_lr, warmup_steps, decay_steps, final_lr_fraction):
    end = peak_lr * final_lr_fraction
    if warmup_steps == 0:
        return optax.linear_schedule(peak_lr, end, decay_steps)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak_lr, warmup_steps),
            optax.linear_schedule(peak_lr, end, decay_steps - warmup_steps),
        ],
        [warmup_steps],
    )


def _numpy_rsqrt(peak_lr, warmup_steps, warm):
    t = STEPS.astype(np.float64)
    w = max(warmup_steps, 1)
    after = peak_lr * np.sqrt(w / np.maximum(t, w))
    if not warm:
        return after
    return np.where(t < warmup_steps, peak_lr * t / max(warmup_steps, 1), after)


# (schedule, parameters, the matching optax builder at those Python values)
CASES = [
    (S.constant, dict(peak_lr=0.1), lambda p: optax.constant_schedule(p["peak_lr"])),
    (S.linear_warmup, dict(peak_lr=0.1, warmup_steps=50), lambda p: optax.linear_schedule(0.0, 0.1, 50)),
    (S.linear_warmup, dict(peak_lr=0.1, warmup_steps=0), lambda p: optax.constant_schedule(0.1)),
    (
        S.cosine_decay,
        dict(peak_lr=0.1, decay_steps=RUN, final_lr_fraction=0.1),
        lambda p: optax.cosine_decay_schedule(0.1, RUN, alpha=0.1),
    ),
    (
        S.cosine_decay,
        dict(peak_lr=0.3, decay_steps=50, final_lr_fraction=0.0),
        lambda p: optax.cosine_decay_schedule(0.3, 50, alpha=0.0),
    ),
    (
        S.linear_decay,
        dict(peak_lr=0.1, decay_steps=RUN, final_lr_fraction=0.0),
        lambda p: optax.linear_schedule(0.1, 0.0, RUN),
    ),
    (
        S.linear_decay,
        dict(peak_lr=0.1, decay_steps=80, final_lr_fraction=0.25),
        lambda p: optax.linear_schedule(0.1, 0.025, 80),
    ),
    (
        S.exponential,
        dict(peak_lr=0.1, decay_rate=0.5, transition_steps=40),
        lambda p: optax.exponential_decay(0.1, 40, 0.5),
    ),
    (
        S.step_decay,
        dict(peak_lr=0.1, decay_rate=0.1, transition_steps=60),
        lambda p: optax.exponential_decay(0.1, 60, 0.1, staircase=True),
    ),
    *[
        (
            S.warmup_cosine,
            dict(peak_lr=0.1, warmup_steps=w, decay_steps=d, final_lr_fraction=f),
            lambda p, w=w, d=d, f=f: optax.warmup_cosine_decay_schedule(0.0, 0.1, w, d, 0.1 * f),
        )
        for w, d, f in [(0, RUN, 0.0), (20, RUN, 0.1), (50, 120, 0.0)]
    ],
    # warmup = decay = the whole run: optax's builder refuses a zero-length cosine; its
    # warmup joined to the final value is the same schedule
    (
        S.warmup_cosine,
        dict(peak_lr=0.1, warmup_steps=RUN, decay_steps=RUN, final_lr_fraction=0.1),
        lambda p: optax.join_schedules(
            [optax.linear_schedule(0.0, 0.1, RUN), optax.constant_schedule(0.01)], [RUN]
        ),
    ),
    *[
        (
            S.warmup_linear,
            dict(peak_lr=0.1, warmup_steps=w, decay_steps=d, final_lr_fraction=f),
            lambda p, w=w, d=d, f=f: _optax_warmup_linear(0.1, w, d, f),
        )
        for w, d, f in [(0, RUN, 0.0), (20, RUN, 0.1), (50, 120, 0.5)]
    ],
]


@pytest.mark.parametrize(
    "schedule, params, builder", CASES, ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)]
)
def test_equal_to_optax_at_python_values_over_every_step(schedule, params, builder):
    ours = jax.jit(jax.vmap(lambda t: schedule(t, **params)))(jnp.asarray(STEPS))
    with jax.numpy_dtype_promotion("standard"):
        theirs = np.array([float(builder(params)(int(t))) for t in STEPS])
    assert ours.dtype == jnp.float32
    # float32: absolute rounding of a few ulps of the peak where a cosine nears zero
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("warmup", [0, 1, 40, RUN])
@pytest.mark.parametrize("schedule, warm", [(S.inverse_sqrt, False), (S.warmup_rsqrt, True)])
def test_inverse_square_root_by_hand(schedule, warm, warmup):
    ours = np.asarray(jax.vmap(lambda t: schedule(t, peak_lr=0.2, warmup_steps=warmup))(jnp.asarray(STEPS)))
    np.testing.assert_allclose(ours, _numpy_rsqrt(0.2, warmup, warm), rtol=2e-6)


@pytest.mark.parametrize("name", S.SCHEDULES)
def test_under_vmap_over_every_parameter_each_row_equals_the_value_alone(name):
    """One compiled program for a stack of parameter settings: each row is that setting alone."""
    schedule = S.SCHEDULES[name]
    settings = {
        "peak_lr": [0.1, 0.03, 1.0],
        "warmup_steps": [0.0, 25.0, 100.0],
        "decay_steps": [150.0, 200.0, 60.0],
        "final_lr_fraction": [0.0, 0.1, 0.5],
        "decay_rate": [0.5, 0.9, 0.1],
        "transition_steps": [10.0, 40.0, 7.0],
    }
    names = [p for p in inspect.signature(schedule).parameters if p != "step"]
    stacked = {k: jnp.asarray(settings[k], jnp.float32) for k in names}
    rows = jax.jit(jax.vmap(lambda p: jax.vmap(lambda t: schedule(t, **p))(jnp.asarray(STEPS))))(stacked)
    for i in range(3):
        alone = jax.vmap(lambda t, i=i: schedule(t, **{k: settings[k][i] for k in names}))(jnp.asarray(STEPS))
        np.testing.assert_allclose(np.asarray(rows[i]), np.asarray(alone), rtol=1e-5, atol=1e-9)
    assert not np.allclose(rows[0], rows[1])  # the parameters are used


def test_docstring_example():
    out = jax.vmap(lambda w: S.warmup_cosine(5, peak_lr=0.1, warmup_steps=w, decay_steps=100))(
        jnp.array([0.0, 10.0, 50.0])
    )
    expected = [optax.warmup_cosine_decay_schedule(0.0, 0.1, w, 100)(5) for w in (0, 10, 50)]
    with jax.numpy_dtype_promotion("standard"):
        np.testing.assert_allclose(out, np.asarray(expected, np.float32), rtol=1e-6)
