"""An independent reference for the engine's tests: a plain optax Python loop, one step per call.

It shares with the engine only what a user's own loop would take from the
package: the data arrays, a model's ``init``/``apply`` (or a flax module's) and
the documented batch order of :func:`jaxopt_lab.data.batch_indices`. Gradient
reduction, learning-rate rules, the optimizer (optax's own), the loop, the
running means and the evaluation are written here again.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_lab import data


class Curves(NamedTuple):
    step: np.ndarray
    train_loss: np.ndarray  # mean training loss over each segment between evaluations
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    measured: dict | None = None  # at_points' values per evaluation point, by name


def per_example_loss(outputs, y, num_classes):
    if num_classes:
        return optax.softmax_cross_entropy_with_integer_labels(outputs, y)
    return 0.5 * jnp.sum(jnp.square(outputs - y), axis=-1)


def optax_loop(
    dataset,
    init,
    apply,
    tx,
    *,
    batch_size,
    steps,
    eval_every,
    seed,
    reduction="mean",
    loss_fn=None,
    test_loss_fn=None,
    at_points=None,
    on_step=None,
    points=None,
):
    """Train with ``tx`` and return :class:`Curves` at every ``eval_every`` steps and the last.

    ``init(key, x) -> (params, state)`` and ``apply(params, state, x, train) -> (out, state)``.
    ``loss_fn(outputs, targets)`` is the per-example training loss (default: cross-entropy or
    half the squared error); ``test_loss_fn`` the test one (default: ``loss_fn``'s default).
    The key is split as the engine documents: ``init_key, data_key = split(key(seed))``.
    ``at_points(params, state) -> dict`` is called at every evaluation point (its values
    come back in ``Curves.measured``), ``on_step(params, state, xb, yb, updates)`` after
    every step with the state the step started from. ``points`` lists the evaluation steps
    instead of every ``eval_every``.
    """
    init_key, data_key = jax.random.split(jax.random.key(seed))
    params, state = init(init_key, dataset.x_train[:1])
    opt_state = tx.init(params)
    n = dataset.x_train.shape[0]

    def default_loss(out, y):
        return per_example_loss(out, y, dataset.num_classes)

    @jax.jit
    def step(params, state, opt_state, xb, yb):
        def objective(p):
            out, new_state = apply(p, state, xb, True)
            losses = (loss_fn or default_loss)(out, yb)
            loss = jnp.sum(losses) if reduction == "sum" else jnp.mean(losses)
            return loss, (new_state, jnp.mean(losses))

        grads, (new_state, mean_loss) = jax.grad(objective, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state, opt_state, mean_loss, updates

    @jax.jit
    def evaluate(params, state):
        out, _ = apply(params, state, dataset.x_test, False)
        loss = jnp.mean((test_loss_fn or default_loss)(out, dataset.y_test))
        if not dataset.num_classes:
            return loss, jnp.nan
        return loss, jnp.mean((jnp.argmax(out, -1) == dataset.y_test).astype(jnp.float32))

    points = points or sorted(set(range(eval_every, steps + 1, eval_every)) | {steps})
    rows, losses, measured = [], [], []
    # optax and flax are written for standard dtype promotion; the suite runs strict.
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        for t in range(steps):
            idx, _ = data.batch_indices(data_key, t, n, batch_size)
            xb, yb = dataset.x_train[idx], dataset.y_train[idx]
            before = (params, state)
            params, state, opt_state, loss, updates = step(params, state, opt_state, xb, yb)
            if on_step is not None:
                on_step(*before, xb, yb, updates)
            losses.append(float(loss))
            if t + 1 in points:
                test_loss, accuracy = evaluate(params, state)
                rows.append((t + 1, np.mean(losses), float(test_loss), float(accuracy)))
                losses = []
                if at_points is not None:
                    measured.append(at_points(params, state))
    columns = {k: np.asarray([m[k] for m in measured], np.float64) for k in (measured[0] if measured else ())}
    return Curves(*map(np.asarray, zip(*rows, strict=True)), measured=columns)


def model_fns(model, bn_momentum=0.99):
    """``(init, apply)`` of a jaxopt_lab Model for :func:`optax_loop`."""
    return model.init, lambda p, s, x, train: model.apply(p, s, x, train=train, bn_momentum=bn_momentum)


def assert_config_matches(table, config, curves, rtol=1e-4, atol=1e-6, accuracy_atol=None):
    """The rows of ``table`` where ``config`` holds equal ``curves``."""
    rows = table
    for name, value in config.items():
        rows = rows[rows[name] == value]
    assert len(rows) == len(curves.step), (config, len(rows))
    rows = rows.sort_values("step")
    np.testing.assert_array_equal(rows["step"], curves.step)
    np.testing.assert_allclose(rows["train_loss"], curves.train_loss, rtol=rtol, atol=atol)
    np.testing.assert_allclose(rows["test_loss"], curves.test_loss, rtol=rtol, atol=atol)
    if not np.all(np.isnan(curves.test_accuracy)):
        atol = 1e-6 if accuracy_atol is None else accuracy_atol
        np.testing.assert_allclose(rows["test_accuracy"], curves.test_accuracy, atol=atol)
