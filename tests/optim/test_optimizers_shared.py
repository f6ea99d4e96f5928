"""One test for every optimizer of ``transforms.OPTIMIZERS``: it descends, compiles once, scans.

Each optimizer (and the momentum variants) minimizes a 2-D parabola and the
Rosenbrock function inside one ``jit`` + ``lax.scan`` program, with the learning
rate a traced argument, and must end near the known minimum. A second call with
another learning rate must reuse the compiled program, and the optimizer state
must keep its tree structure, shapes and dtypes across ``update`` (the scan
carry requires it). The learning rates below sit inside each optimizer's stable
range; for most, a third or three times the rate also converges. Plain SGD on
Rosenbrock has the narrowest window: a third of its rate does not reach the
minimum in 10,000 steps, three times it oscillates across the valley.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_lab.optim import transforms

PARABOLA_X0, PARABOLA_STEPS = (2.0, -1.0), 200
ROSENBROCK_X0, ROSENBROCK_STEPS = (-1.2, 1.0), 10_000


def parabola(x):
    """Minimum 0 at (0, 0); condition number 10."""
    return 0.5 * (x[0] ** 2 + 10.0 * x[1] ** 2)


def rosenbrock(x):
    """Minimum 0 at (1, 1), at the end of a long curved valley."""
    return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


# (optimizer, flags, learning rate on the parabola, learning rate on Rosenbrock)
CASES = [
    ("sgd", {}, 0.1, 1e-3),
    ("momentum", {}, 0.01, 3e-4),
    ("momentum", {"nesterov": True}, 0.01, 3e-4),
    ("momentum", {"ema": True}, 0.1, 3e-3),
    ("momentum", {"ema": True, "nesterov": True}, 0.1, 3e-3),
    ("momentum", {"ema": True, "bias_correction": True}, 0.1, 3e-3),
    ("rmsprop", {}, 0.03, 1e-3),
    ("rmsprop", {"centered": True}, 0.01, 3e-4),
    ("adam", {}, 0.03, 1e-2),
    ("adam", {"bias_correction": False}, 0.03, 3e-3),
]
IDS = [name + "".join(f"-{k}" for k in flags) for name, flags, *_ in CASES]


def _minimize(tx, loss, x0, steps):
    def step(carry, _):
        x, state = carry
        updates, state = tx.update(jax.grad(loss)(x), state, x)
        return (x + updates, state), None

    (x, _), _ = jax.lax.scan(step, (x0, tx.init(x0)), None, length=steps)
    return x


def _make_run(name, flags, traces):
    """Both problems in one compiled program; ``traces`` counts how often Python traces it."""

    @jax.jit
    def run(lr_parabola, lr_rosenbrock):
        traces.append(1)
        make = lambda lr: transforms.OPTIMIZERS[name](lr, **flags)
        return (
            _minimize(make(lr_parabola), parabola, jnp.asarray(PARABOLA_X0), PARABOLA_STEPS),
            _minimize(make(lr_rosenbrock), rosenbrock, jnp.asarray(ROSENBROCK_X0), ROSENBROCK_STEPS),
        )

    return run


def _assert_near_minimum(loss, x, x0, minimum, tol):
    x = np.asarray(x, np.float64)
    assert np.all(np.isfinite(x)), x
    assert loss(x) < 1e-3 * loss(np.asarray(x0)), (loss(x), x)
    assert np.linalg.norm(x - np.asarray(minimum)) < tol, x


def _same_types(a, b):
    kind = lambda s: (s.shape, s.dtype, s.weak_type)
    return jax.tree.structure(a) == jax.tree.structure(b) and jax.tree.leaves(
        jax.tree.map(kind, a)
    ) == jax.tree.leaves(jax.tree.map(kind, b))


@pytest.mark.parametrize("name, flags, lr_parabola, lr_rosenbrock", CASES, ids=IDS)
def test_optimizer_minimizes_compiles_once_and_keeps_its_state_types(name, flags, lr_parabola, lr_rosenbrock):
    traces = []
    run = _make_run(name, flags, traces)
    x_parabola, x_rosenbrock = run(jnp.float32(lr_parabola), jnp.float32(lr_rosenbrock))
    _assert_near_minimum(parabola, x_parabola, PARABOLA_X0, (0.0, 0.0), 0.05)
    _assert_near_minimum(rosenbrock, x_rosenbrock, ROSENBROCK_X0, (1.0, 1.0), 0.05)

    # another learning rate, same shapes: no new trace, no new compile, a different result
    x_parabola_2, _ = run(jnp.float32(0.5 * lr_parabola), jnp.float32(0.5 * lr_rosenbrock))
    assert len(traces) == 1 and run._cache_size() == 1
    assert not np.allclose(x_parabola_2, x_parabola)

    # the state after `update` has the structure, shapes and dtypes of the state after `init`
    x0 = jnp.asarray(PARABOLA_X0)

    def init_and_update(lr):
        tx = transforms.OPTIMIZERS[name](lr, **flags)
        state = tx.init(x0)
        return state, tx.update(jax.grad(parabola)(x0), state, x0)[1]

    after_init, after_update = jax.eval_shape(init_and_update, jnp.float32(lr_parabola))
    assert _same_types(after_init, after_update), (after_init, after_update)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_the_convergence_check_rejects_a_sign_flipped_optimizer(name):
    """A step that ascends must fail the check above, or the check proves nothing."""
    _, flags, lr_parabola, _ = next(c for c in CASES if c[0] == name)
    flipped = optax.chain(transforms.OPTIMIZERS[name](lr_parabola, **flags), optax.scale(-1.0))
    x = jax.jit(lambda: _minimize(flipped, parabola, jnp.asarray(PARABOLA_X0), PARABOLA_STEPS))()
    with pytest.raises(AssertionError):
        _assert_near_minimum(parabola, x, PARABOLA_X0, (0.0, 0.0), 0.05)
