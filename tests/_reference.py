"""Independent references for the engine's tests: a plain optax Python loop, one step per call,
and full-batch gradient descent with its sharpness under ``lax.scan``.

It shares with the engine only what a user's own loop would take from the
package: the data arrays, a model's ``init``/``apply`` (or a flax module's) and
the documented batch order of :func:`jaxopt_lab.data.batch_indices`. Gradient
reduction, learning-rate rules, the optimizer (optax's own), the loop, the
running means and the evaluation are written here again.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxopt_lab import data
from jaxopt_lab.errors import InputError
from jaxopt_lab.nn.models import Model


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


# ------------------------------------------------- full-batch gradient descent with its sharpness
# The engine's full-batch `sharpness` measurement is checked against this loop, which is checked
# in turn against closed forms and float64 Hessians (tests/test_reference.py).

LOSSES = ("mse", "xent")


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name}={value!r} is invalid: expected a positive int")
    return int(value)


def full_batch_loss(
    model: Model, x: jax.Array, y: jax.Array, *, loss: str = "mse"
) -> Callable[[Any], jax.Array]:
    """The full-batch training loss of a model without batch norm, as a function of params.

    ::

      mse:  L(θ) = (1/n) Σ_i ½ |f_θ(x_i) - onehot(y_i)|²
      xent: L(θ) = (1/n) Σ_i -log softmax(f_θ(x_i))_{y_i}

    Args:
      model: a :class:`~jaxopt_lab.Model` without state (no batch norm).
      x: inputs ``(n, ...)``.
      y: integer labels ``(n,)``.
      loss: ``"mse"`` (squared error on one-hot targets, as Cohen et al.) or ``"xent"``.

    Returns:
      ``loss_fn(params) -> scalar``.
    """
    if loss not in LOSSES:
        raise InputError(f"loss={loss!r} is invalid: expected one of {', '.join(map(repr, LOSSES))}")

    def loss_fn(params):
        outputs, _ = model.apply(params, {}, x, train=False)
        if loss == "mse":
            targets = jax.nn.one_hot(y, outputs.shape[-1], dtype=outputs.dtype)
            return jnp.mean(0.5 * jnp.sum(jnp.square(outputs - targets), axis=-1))
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(outputs, y))

    return loss_fn


class SharpnessTrace(NamedTuple):
    """A gradient-descent run with its sharpness.

    Attributes:
      step: ``(num_steps // sharpness_every + 1,)`` steps at which sharpness was measured.
      sharpness: the Rayleigh quotient ``vᵀHv`` of the power-iteration vector there.
      residual: ``|Hv - sharpness·v|``, small next to ``sharpness`` once converged.
      loss: ``(num_steps,)`` the loss at the parameters before each step.
      params: the parameters after the last step.
    """

    step: jax.Array
    sharpness: jax.Array
    residual: jax.Array
    loss: jax.Array
    params: Any


def gradient_descent_sharpness(
    loss_fn: Callable[[Any], jax.Array],
    params,
    learning_rate: jax.typing.ArrayLike,
    *,
    num_steps: int,
    sharpness_every: int,
    num_iters: int = 100,
    num_warm_iters: int = 20,
    key: jax.Array | None = None,
) -> SharpnessTrace:
    """Full-batch gradient descent ``θ ← θ - η ∇L(θ)``, with the sharpness every few steps.

    The sharpness ``λ_max(∇²L(θ))`` is measured at steps ``0, k, 2k, ...,
    num_steps`` (``k = sharpness_every``) by power iteration on Hessian-vector
    products (forward-over-reverse, as
    :func:`jaxopt_lab.measure.estimators.hessian_top_eigenvalue`). The first measurement
    starts from a random unit vector and runs ``num_iters`` iterations;
    each later one starts from the previous eigenvector and runs
    ``num_warm_iters``, since the top eigenvector moves little in ``k`` steps.

    On a quadratic ``L = ½ θᵀHθ``, GD multiplies the component along each
    eigenvector ``λ_i`` by ``1 - ηλ_i`` per step, so it converges iff
    ``η < 2/λ_max``. Cohen et al. find that on neural networks the sharpness
    rises during training ("progressive sharpening") until it reaches ``2/η``
    and then hovers there while the loss keeps falling, non-monotonically
    ("edge of stability").

    Power iteration finds the eigenvalue of largest *magnitude*; this is
    ``λ_max`` as long as no negative eigenvalue is larger in magnitude (true
    for the squared loss near training, and for every quadratic with ``H ⪰ 0``).

    Args:
      loss_fn: ``loss_fn(params) -> scalar``, the full-batch loss (see :func:`full_batch_loss`).
      params: the initial parameters.
      learning_rate: ``η`` (may be traced: one compiled program serves every value).
      num_steps: gradient steps, a multiple of ``sharpness_every``.
      sharpness_every: steps between sharpness measurements.
      num_iters: power iterations of the first (cold) measurement.
      num_warm_iters: power iterations per warm-started measurement.
      key: PRNG key of the first starting vector; ``None`` uses ``jax.random.key(0)``.

    Returns:
      A :class:`SharpnessTrace`.

    References:
      Cohen, Kaur, Li, Kolter and Talwalkar, 2021, *Gradient Descent on Neural
      Networks Typically Occurs at the Edge of Stability* (arXiv:2103.00065).
    """
    num_steps = _check_positive_int("num_steps", num_steps)
    sharpness_every = _check_positive_int("sharpness_every", sharpness_every)
    num_warm_iters = _check_positive_int("num_warm_iters", num_warm_iters)
    num_iters = _check_positive_int("num_iters", num_iters)
    if num_steps % sharpness_every:
        raise InputError(
            f"num_steps={num_steps} is invalid: expected a multiple of sharpness_every={sharpness_every}"
        )
    flat, unravel = ravel_pytree(params)
    flat_loss = lambda p: loss_fn(unravel(p))
    value_and_grad = jax.value_and_grad(flat_loss)
    lr = jnp.asarray(learning_rate, flat.dtype)

    def measure(p, v, iters):  # power iteration, written here again: v <- Hv / |Hv|
        _, hvp = jax.linearize(jax.grad(flat_loss), p)

        def normalized(_, v):
            hv = hvp(v)
            return hv / jnp.linalg.norm(hv)

        v = jax.lax.fori_loop(0, iters, normalized, v)
        hv = hvp(v)
        eig = jnp.vdot(v, hv)
        return eig, v, jnp.linalg.norm(hv - eig * v)

    def gd_step(p, _):
        loss, grad = value_and_grad(p)
        return p - lr * grad, loss

    def block(carry, _):
        p, v = carry
        p, losses = jax.lax.scan(gd_step, p, None, length=sharpness_every)
        eig, v, res = measure(p, v, num_warm_iters)
        return (p, v), (eig, res, losses)

    key = jax.random.key(0) if key is None else key
    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    eig0, v, res0 = measure(flat, v0 / jnp.linalg.norm(v0), num_iters)
    (flat, _), (eigs, ress, losses) = jax.lax.scan(
        block, (flat, v), None, length=num_steps // sharpness_every
    )
    return SharpnessTrace(
        step=jnp.arange(0, num_steps + 1, sharpness_every, dtype=jnp.int32),
        sharpness=jnp.concatenate([eig0[None], eigs]),
        residual=jnp.concatenate([res0[None], ress]),
        loss=losses.reshape(-1),
        params=unravel(flat),
    )
