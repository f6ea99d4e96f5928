"""Small, exactly analysable problems and the pure loops that run an optimizer on them.

Objectives (each a function ``params -> scalar loss``):

* :func:`quadratic`: :math:`\\tfrac12 x^\\top H x` with a diagonal or full ``H``;
* :func:`rosenbrock`: :math:`(a - x_0)^2 + b (x_1 - x_0^2)^2`;
* :func:`bias_batchnorm_loss`: a bias ``b`` followed by batch normalization, the
  example of Ioffe and Szegedy (2015, section 2);
* the noisy quadratic model (NQM) of Zhang et al. (2019): :func:`nqm_curvatures`,
  :func:`nqm_gradient`, with its exact expected loss under SGD, heavy-ball
  momentum and diagonal preconditioning (:func:`nqm_expected_loss`), the
  steps to a target loss (:func:`nqm_steps_to_target`, over grids
  :func:`nqm_steps_grid` and :func:`nqm_best_steps`), and its Monte Carlo
  (:func:`nqm_monte_carlo`).

Loops, all ``lax.scan``, jittable and vmappable over hyperparameters (build the
optimizer inside the vmapped function from traced values) and over PRNG keys:

* :func:`optimize`: run an optax ``GradientTransformation`` on a loss, with
  exact or stochastic gradients, returning the :class:`Trajectory`;
* :func:`sweep_learning_rates` and :func:`best_learning_rate`: a vmapped
  learning-rate sweep and its winner (fewest steps to a tolerance), and
  :func:`steps_to_stay_below` (steps until the loss settles below it);
* :func:`response` and :func:`step_response`: the output of a transform fed a
  given gradient sequence (a filter's impulse/step response);
* :func:`scale_by_diagonal`: a fixed diagonal preconditioner as a transform.

The critical batch size of the steps they give is
:mod:`jaxopt_lab.analysis.critical_batch`'s.

References:
  Rosenbrock, 1960, "An automatic method for finding the greatest or least
  value of a function".
  Ioffe and Szegedy, 2015, "Batch Normalization: Accelerating Deep Network
  Training by Reducing Internal Covariate Shift".
  Zhang, Li, Nado, Martens, Sachdeva, Dahl, Shallue and Grosse, 2019, "Which
  Algorithmic Choices Matter at Which Batch Sizes? Insights From a Noisy
  Quadratic Model".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from jaxopt_lab.analysis import tables as tables_lib
from jaxopt_lab.errors import InputError
from jaxopt_lab.measure import targets
from jaxopt_lab.nn import batchnorm

__all__ = [
    "Trajectory",
    "BestLearningRate",
    "quadratic",
    "rosenbrock",
    "bias_batchnorm_loss",
    "optimize",
    "sweep_learning_rates",
    "best_learning_rate",
    "steps_to_stay_below",
    "response",
    "step_response",
    "scale_by_diagonal",
    "nqm_curvatures",
    "nqm_gradient",
    "nqm_expected_loss",
    "nqm_steps_to_target",
    "nqm_steps_grid",
    "BestSteps",
    "nqm_best_steps",
    "nqm_monte_carlo",
]

LossFn = Callable[[Any], jax.Array]


# --------------------------------------------------------------------------- objectives


def quadratic(h: jax.typing.ArrayLike) -> LossFn:
    r"""The quadratic :math:`f(x) = \tfrac12 x^\top H x`, minimum 0 at :math:`x = 0`.

    Args:
      h: the curvature: a 1-D array (``H = diag(h)``, so
        :math:`f(x) = \tfrac12 \sum_i h_i x_i^2`) or a symmetric 2-D matrix.

    Returns:
      ``loss_fn(x) -> scalar`` for ``x`` of shape ``(d,)``.

    Raises:
      ValueError: if ``h`` is not 1-D or square 2-D.
    """
    h = jnp.asarray(h)
    # The curvature takes the dtype of x: a float64 spectrum can drive float32 runs.
    if h.ndim == 1:
        return lambda x: 0.5 * jnp.sum(h.astype(x.dtype) * jnp.square(x))
    if h.ndim == 2 and h.shape[0] == h.shape[1]:
        return lambda x: 0.5 * jnp.dot(x, h.astype(x.dtype) @ x)
    raise InputError(f"h has shape {h.shape}: expected (d,) (diagonal) or (d, d) (a matrix)")


def rosenbrock(a: jax.typing.ArrayLike = 1.0, b: jax.typing.ArrayLike = 100.0) -> LossFn:
    r"""Rosenbrock's banana valley, :math:`f(x) = (a - x_0)^2 + b\,(x_1 - x_0^2)^2`.

    Minimum 0 at :math:`(a, a^2)`; the curved valley floor :math:`x_1 = x_0^2`
    is flat while the walls have curvature about :math:`2b(1 + 4 x_0^2)`.

    Args:
      a: position of the minimum along :math:`x_0`.
      b: steepness of the valley walls.

    Returns:
      ``loss_fn(x) -> scalar`` for ``x`` of shape ``(2,)``.

    References:
      Rosenbrock, 1960, "An automatic method for finding the greatest or least
      value of a function".
    """

    def loss_fn(x):
        a_, b_ = jnp.asarray(a, x.dtype), jnp.asarray(b, x.dtype)
        return jnp.square(a_ - x[0]) + b_ * jnp.square(x[1] - jnp.square(x[0]))

    return loss_fn


def bias_batchnorm_loss(u: jax.Array, y: jax.Array, *, stop_gradient_stats: bool) -> LossFn:
    r"""Loss of a bias followed by batch normalization: the drift example of Ioffe and Szegedy.

    .. math::

      x = u + b, \qquad \hat x = \mathrm{BN}(x) = \frac{x - \mu_B(x)}{\sqrt{\sigma_B^2(x)
      + \epsilon}}, \qquad \ell(b) = \tfrac12 \operatorname{mean}\,(\hat x - y)^2 .

    ``BN`` is :func:`jaxopt_lab.nn.batchnorm.apply` in training mode with its
    affine parameters at their initial values (scale 1, bias 0). The loss does
    not depend on ``b`` (normalization undoes any shift), so its true gradient is
    0. With ``stop_gradient_stats=True`` the batch statistics are constants in
    the backward pass and the gradient is
    :math:`\partial\ell/\partial b_c = \sum_n (\hat x_{nc} - y_{nc}) / (N C \sigma_c)
    = -\bar y_c / (C \sigma_c)`: a constant, so gradient descent moves ``b``
    linearly forever while the loss stays the same.

    Args:
      u: layer inputs, shape ``(N, C)``.
      y: regression targets, shape ``(N, C)``; a nonzero mean per feature makes
        the drift visible.
      stop_gradient_stats: treat the batch mean and variance as constants.

    Returns:
      ``loss_fn(b) -> scalar`` for ``b`` of shape ``(C,)``.

    Raises:
      ValueError: if ``u`` is not 2-D or ``y`` has another shape.

    References:
      Ioffe and Szegedy, 2015, "Batch Normalization: Accelerating Deep Network
      Training by Reducing Internal Covariate Shift", section 2.
    """
    u, y = jnp.asarray(u), jnp.asarray(y)
    if u.ndim != 2 or y.shape != u.shape:
        raise InputError(f"u has shape {u.shape} and y {y.shape}: expected both (N, C)")
    params, state = batchnorm.init(u.shape[1], u.dtype)

    def loss_fn(b):
        x_hat, _ = batchnorm.apply(
            params, state, u + b[None, :], train=True, stop_gradient_stats=stop_gradient_stats
        )
        return 0.5 * jnp.mean(jnp.square(x_hat - y))

    return loss_fn


# --------------------------------------------------------------------------- loops


class Trajectory(NamedTuple):
    """What :func:`optimize` records.

    Attributes:
      params: the iterates :math:`x_0, \\dots, x_T` stacked on a leading axis of
        length ``num_steps + 1`` (or only :math:`x_T` with ``keep_params=False``).
      loss: ``loss_fn`` at each iterate, shape ``(num_steps + 1,)``.
    """

    params: Any
    loss: jax.Array


class _Carry(NamedTuple):
    params: Any
    opt_state: optax.OptState


def optimize(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    x0: Any,
    num_steps: int,
    *,
    grad_fn: Callable[[Any, jax.Array], Any] | None = None,
    key: jax.Array | None = None,
    keep_params: bool = True,
) -> Trajectory:
    r"""Run ``tx`` on ``loss_fn`` from ``x0`` for ``num_steps`` steps, as one ``lax.scan``.

    .. math::

      u_t, s_{t+1} = \mathrm{tx.update}(g_t, s_t, x_t), \qquad x_{t+1} = x_t + u_t,

    with :math:`g_t = \nabla f(x_t)` or, given ``grad_fn``, the stochastic
    gradient :math:`g_t = \mathrm{grad\_fn}(x_t, k_t)` with
    :math:`k_0, \dots, k_{T-1}` = ``jax.random.split(key, num_steps)``.

    Pure and jittable (``num_steps`` and the flags static). To sweep a
    hyperparameter, build ``tx`` inside the vmapped function from the traced
    value, e.g. ``jax.vmap(lambda lr: optimize(f, sgd(lr), x0, n))(lrs)``; for
    Monte Carlo over gradient noise, vmap over keys.

    Args:
      loss_fn: ``params -> scalar``; recorded at every iterate, and
        differentiated when ``grad_fn`` is None.
      tx: the optimizer.
      x0: initial parameters (any pytree of float arrays).
      num_steps: number of updates, a Python int ``>= 0``.
      grad_fn: optional stochastic gradient ``(params, key) -> grads``.
      key: PRNG key for ``grad_fn`` (required with it, refused without it).
      keep_params: record every iterate (True) or only the last (False, for
        large Monte Carlo runs that need only the losses).

    Returns:
      A :class:`Trajectory`.

    Raises:
      ValueError: if ``num_steps`` is not a non-negative int, or only one of
        ``grad_fn`` and ``key`` is given.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_lab import optim
      >>> f = quadratic(jnp.array([1.0, 0.1]))
      >>> tr = optimize(f, optim.sgd(0.5), jnp.array([1.0, 1.0]), 2)
      >>> tr.params  # x_t = (1 - 0.5 h)^t x_0
      Array([[1.    , 1.    ],
             [0.5   , 0.95  ],
             [0.25  , 0.9025]], dtype=float32)
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
        raise InputError(f"num_steps={num_steps!r} is invalid: expected a Python int >= 0")
    if (grad_fn is None) != (key is None):
        raise InputError(
            "grad_fn and key must be given together: "
            f"got grad_fn={'set' if grad_fn is not None else None}, key={'set' if key is not None else None}"
        )

    def step(carry: _Carry, key_t):
        if grad_fn is None:
            loss, grads = jax.value_and_grad(loss_fn)(carry.params)
        else:
            loss, grads = loss_fn(carry.params), grad_fn(carry.params, key_t)
        updates, opt_state = tx.update(grads, carry.opt_state, carry.params)
        params = optax.apply_updates(carry.params, updates)
        return _Carry(params, opt_state), (carry.params if keep_params else None, loss)

    keys = None if key is None else jax.random.split(key, num_steps)
    final, (params, losses) = jax.lax.scan(step, _Carry(x0, tx.init(x0)), keys, length=num_steps)
    losses = jnp.concatenate([losses, jnp.reshape(loss_fn(final.params), (1,))])
    if keep_params:
        params = jax.tree.map(lambda path, last: jnp.concatenate([path, last[None]]), params, final.params)
    else:
        params = final.params
    return Trajectory(params=params, loss=losses)


def sweep_learning_rates(
    loss_fn: LossFn,
    make_optimizer: Callable[[jax.Array], optax.GradientTransformation],
    x0: Any,
    num_steps: int,
    learning_rates: jax.typing.ArrayLike,
) -> Trajectory:
    """:func:`optimize` for every learning rate at once: one ``jit(vmap(...))`` call.

    The program is compiled once per ``(loss_fn, make_optimizer, num_steps)`` (by
    identity of the callables): calling again with another ``x0`` or other
    learning rates of the same shapes does not recompile.

    Args:
      loss_fn: ``params -> scalar``.
      make_optimizer: ``learning_rate -> GradientTransformation``, e.g.
        ``jaxopt_lab.adam`` or ``lambda lr: jaxopt_lab.momentum(lr, 0.9)``; it
        receives a traced scalar.
      x0: initial parameters, shared by every run.
      num_steps: number of updates (static).
      learning_rates: 1-D array of learning rates.

    Returns:
      A :class:`Trajectory` whose leaves have a leading axis over the learning
      rates.

    Raises:
      ValueError: if ``learning_rates`` is not a non-empty 1-D array.
    """
    lrs = jnp.asarray(learning_rates)
    if lrs.ndim != 1 or lrs.shape[0] == 0:
        raise InputError(f"learning_rates has shape {lrs.shape}: expected a non-empty 1-D array")
    return _sweep(loss_fn, make_optimizer, x0, num_steps, lrs)


@functools.partial(jax.jit, static_argnames=("loss_fn", "make_optimizer", "num_steps"))
def _sweep(loss_fn, make_optimizer, x0, num_steps, lrs):
    # Compiled once per (loss_fn, make_optimizer, num_steps) objects: new starts or
    # learning rates of the same shapes reuse the program.
    return jax.vmap(lambda lr: optimize(loss_fn, make_optimizer(lr), x0, num_steps))(lrs)


class BestLearningRate(NamedTuple):
    """The winner of a learning-rate sweep (see :func:`best_learning_rate`)."""

    index: int  # position in the sweep
    learning_rate: float
    steps: float  # steps to reach the tolerance; inf if it never did
    final_loss: float


def best_learning_rate(
    learning_rates: jax.typing.ArrayLike, losses: jax.typing.ArrayLike, tol: float
) -> BestLearningRate:
    """The learning rate that reaches ``loss <= tol`` in the fewest steps; ties by final loss.

    Runs that never reach the tolerance (or diverge) rank after all that do,
    among themselves by final loss (non-finite last). The ranking is
    :func:`jaxopt_lab.analysis.tables.best_settings`'s (one seed per learning rate).

    Args:
      learning_rates: shape ``(L,)``.
      losses: shape ``(L, T + 1)``, the loss at every step, as from
        :func:`sweep_learning_rates`.
      tol: the tolerance on the loss.

    Returns:
      A :class:`BestLearningRate`.

    Raises:
      ValueError: if the shapes do not fit.
    """
    lrs = np.asarray(learning_rates, np.float64)
    losses = np.asarray(losses, np.float64)
    if losses.ndim != 2 or lrs.shape != losses.shape[:1]:
        raise InputError(
            f"losses has shape {losses.shape} and learning_rates {lrs.shape}: expected (L, T + 1) and (L,)"
        )
    steps = targets.steps_to_target(np.arange(losses.shape[1]), losses, tol)
    final = np.where(np.isfinite(losses[:, -1]), losses[:, -1], np.inf)
    runs = pd.DataFrame(
        {"learning_rate": lrs, "seed": 0, "steps": steps, "final_loss": final, "diverged": False}
    )
    hparams = ["learning_rate", "seed"]
    best = tables_lib.best_settings(runs, (), "steps", False, hparams=hparams, ties=["final_loss"]).iloc[0]
    if np.isnan(best["learning_rate"]):  # none reached the tolerance: the lowest final loss
        best = tables_lib.best_settings(runs, (), "final_loss", False, hparams=hparams).iloc[0]
    index = int(np.flatnonzero(lrs == best["learning_rate"])[0]) if np.isfinite(best["learning_rate"]) else 0
    return BestLearningRate(
        index, float(lrs[index]), float(np.nan_to_num(steps[index], nan=np.inf)), float(losses[index, -1])
    )


def steps_to_stay_below(losses: jax.typing.ArrayLike, tol: float) -> np.ndarray:
    """First step from which the loss stays ``<= tol`` to the end of the run; inf if it ends above.

    Unlike the first crossing (:func:`jaxopt_lab.measure.targets.steps_to_target`), a
    run that dips below ``tol`` and climbs back (a limit cycle, a chaotic
    orbit) does not count until it settles.

    Args:
      losses: shape ``(..., T + 1)``, the loss at steps ``0..T``.
      tol: the tolerance.

    Returns:
      A float64 array of shape ``losses.shape[:-1]``.
    """
    losses = np.asarray(losses, np.float64)
    below = np.isfinite(losses) & (losses <= tol)
    # Index of the last step above tol, counted from the end on the reversed array.
    last_above = losses.shape[-1] - 1 - np.argmin(below[..., ::-1], axis=-1)
    settled = np.where(np.all(below, axis=-1), 0.0, last_above + 1.0)
    return np.where(below[..., -1], settled, np.inf)


def response(tx: optax.GradientTransformation, inputs: Any, params: Any = None) -> Any:
    r"""The updates ``tx`` emits when fed the gradient sequence ``inputs``.

    :math:`u_t, s_t = \mathrm{tx.update}(g_t, s_{t-1}, \theta)` for
    :math:`t = 1, \dots, T`, with the parameters held fixed: the transform seen
    as a (possibly nonlinear) filter from gradients to updates.

    Args:
      tx: the transform.
      inputs: the gradients, a pytree whose leaves have a leading time axis.
      params: the fixed parameters (default: zeros shaped like one input).

    Returns:
      The updates, stacked on the same leading time axis.
    """
    first = jax.tree.map(lambda g: g[0], inputs)
    params = optax.tree.zeros_like(first) if params is None else params

    def step(state, g):
        u, state = tx.update(g, state, params)
        return state, u

    _, updates = jax.lax.scan(step, tx.init(params), inputs)
    return updates


def step_response(
    tx: optax.GradientTransformation, num_steps: int, *, dtype: jax.typing.DTypeLike = jnp.float32
) -> jax.Array:
    r"""The updates of ``tx`` for the unit step input :math:`g_t = 1`, :math:`t = 1..T`.

    E.g. for a moving average :math:`v_t = \beta v_{t-1} + (1 - \beta) g_t` from
    :math:`v_0 = 0` the step response is :math:`1 - \beta^t`.

    Args:
      tx: the transform (a scalar parameter is fed to it).
      num_steps: number of steps ``T``.
      dtype: dtype of the input.

    Returns:
      Shape ``(num_steps,)``: the update after step ``t`` at index ``t - 1``.
    """
    return response(tx, jnp.ones((num_steps,), dtype))


def scale_by_diagonal(diagonal: Any) -> optax.GradientTransformation:
    r"""Multiply the updates by a fixed diagonal preconditioner, :math:`u = P \odot g`.

    With :math:`P = h^{-p}` on the noisy quadratic model this is the
    preconditioner of Zhang et al. (2019); chain it before an optimizer, e.g.
    ``optax.chain(scale_by_diagonal(h ** -0.5), jaxopt_lab.sgd(lr))``.

    Args:
      diagonal: the scales, a pytree with the structure of the updates (an
        array for array parameters).

    Returns:
      A stateless :class:`optax.GradientTransformation`.
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return jax.tree.map(lambda g, d: g * jnp.asarray(d, g.dtype), updates, diagonal), state

    return optax.GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------- noisy quadratic model


def nqm_curvatures(dim: int, dtype: jax.typing.DTypeLike = jnp.float32) -> jax.Array:
    """The NQM spectrum of Zhang et al. (2019): :math:`h_i = 1 / i`, ``i = 1..dim``.

    Raises:
      ValueError: if ``dim`` is not a positive int.
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise InputError(f"dim={dim!r} is invalid: expected a positive int")
    return 1.0 / jnp.arange(1, dim + 1, dtype=dtype)


def nqm_gradient(
    h: jax.Array, batch_size: jax.typing.ArrayLike
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    r"""The NQM's stochastic gradient at batch size ``B``, for :func:`optimize`'s ``grad_fn``.

    .. math::

      g_i = h_i x_i + \sqrt{h_i / B}\; \xi_i, \qquad \xi_i \sim \mathcal N(0, 1),

    the gradient of :math:`\tfrac12 \sum_i h_i x_i^2` plus noise whose covariance
    :math:`H / B` is the Hessian over the batch size (as for a well-specified
    log-likelihood).

    Args:
      h: curvatures, shape ``(d,)``.
      batch_size: ``B > 0``; may be traced.

    Returns:
      ``grad_fn(x, key) -> g``.

    References:
      Zhang et al., 2019, "Which Algorithmic Choices Matter at Which Batch
      Sizes? Insights From a Noisy Quadratic Model", section 3.
    """

    def grad_fn(x, key):
        scale = jnp.sqrt(h / jnp.asarray(batch_size, h.dtype)).astype(x.dtype)
        return h.astype(x.dtype) * x + scale * jax.random.normal(key, x.shape, x.dtype)

    return grad_fn


class _Affine(NamedTuple):
    """Per-coordinate affine map ``m -> mat @ m + vec`` on the moments ``(E[x²], E[xv], E[v²])``.

    The coordinate axis is last, so the 3x3 products are elementwise
    multiply-adds over long contiguous rows (much faster on CPU than a batched
    ``dot_general`` of 3x3 blocks).
    """

    mat: jax.Array  # (3, 3, d)
    vec: jax.Array  # (3, d)


def _nqm_map(h, learning_rate, batch_size, beta, precond_power) -> _Affine:
    r"""One step of the exact second-moment recurrence, per coordinate.

    Heavy ball with a diagonal preconditioner, :math:`\eta_i = \eta h_i^{-p}`,
    noise :math:`n \sim \mathcal N(0, s^2)`, :math:`s^2 = h/B`:
    :math:`v' = \beta v + h x + n`, :math:`x' = x - \eta_i v'`. With
    :math:`a = 1 - \eta_i h`, and ``X, C, V`` = E[x²], E[xv], E[v²]:

      X' = a² X - 2 a η β C + η² β² V + η² s²
      C' = a h X + β (1 - 2 η h) C - η β² V - η s²
      V' = h² X + 2 h β C + β² V + s²
    """
    dtype = h.dtype
    lr = jnp.asarray(learning_rate, dtype) * h ** (-jnp.asarray(precond_power, dtype))
    beta = jnp.asarray(beta, dtype)
    s2 = h / jnp.asarray(batch_size, dtype)
    a = 1 - lr * h
    zero = jnp.zeros_like(h)
    mat = jnp.stack(
        [
            jnp.stack([a * a, -2 * a * lr * beta, jnp.square(lr * beta)]),
            jnp.stack([a * h, beta * (1 - 2 * lr * h), -lr * beta * beta]),
            jnp.stack([h * h, 2 * h * beta, beta * beta + zero]),
        ]
    )
    vec = jnp.stack([lr * lr * s2, -lr * s2, s2])
    return _Affine(mat, vec)


def _apply(f: _Affine, m: jax.Array) -> jax.Array:
    return jnp.sum(f.mat * m[None, :, :], axis=1) + f.vec


def _compose(g: _Affine, f: _Affine) -> _Affine:
    """``g ∘ f``."""
    mat = jnp.sum(g.mat[:, :, None, :] * f.mat[None, :, :, :], axis=1)
    return _Affine(mat, _apply(g, f.vec))


def _nqm_loss(h, m):
    return 0.5 * jnp.sum(h * m[0])


def _nqm_init(x0, h):
    x0 = jnp.broadcast_to(jnp.asarray(x0, h.dtype), h.shape)
    zero = jnp.zeros_like(h)
    return jnp.stack([jnp.square(x0), zero, zero])


def nqm_expected_loss(
    h: jax.Array,
    x0: jax.typing.ArrayLike,
    learning_rate: jax.typing.ArrayLike,
    batch_size: jax.typing.ArrayLike,
    num_steps: int,
    *,
    beta: jax.typing.ArrayLike = 0.0,
    precond_power: jax.typing.ArrayLike = 0.0,
) -> jax.Array:
    r"""Exact expected loss of the NQM under (preconditioned) SGD or heavy-ball momentum.

    The optimizer is heavy ball as in :func:`jaxopt_lab.momentum` /
    ``optax.sgd(lr, momentum=beta)`` (``beta = 0``: plain SGD), optionally
    preconditioned by :math:`h^{-p}` (:func:`scale_by_diagonal`):

    .. math::

      v_{t+1} = \beta v_t + g_t, \qquad x_{t+1} = x_t - \eta h^{-p} v_{t+1},

    with :math:`g` from :func:`nqm_gradient`. The iterates are linear in the
    noise, so the second moments :math:`(E[x^2], E[xv], E[v^2])` of each
    coordinate follow an exact linear recurrence (see ``_nqm_map``); for SGD it
    reduces to

    .. math::

      E[x_{t+1}^2] = (1 - \eta h^{1-p})^2 E[x_t^2] + \eta^2 h^{1 - 2p} / B,

    and the expected loss is :math:`\tfrac12 \sum_i h_i E[x_i^2]`.

    Vmappable over ``learning_rate``, ``batch_size``, ``beta`` and
    ``precond_power`` (all may be traced).

    Args:
      h: curvatures, shape ``(d,)``; the computation runs in ``h``'s dtype.
      x0: the (deterministic) initial point, shape ``(d,)`` or a scalar.
      learning_rate: :math:`\eta`.
      batch_size: :math:`B`.
      num_steps: number of steps (static).
      beta: heavy-ball momentum :math:`\beta` (0: SGD).
      precond_power: :math:`p` of the preconditioner :math:`h^{-p}`.

    Returns:
      Expected loss after ``0, 1, ..., num_steps`` steps, shape ``(num_steps + 1,)``.

    References:
      Zhang et al., 2019, "Which Algorithmic Choices Matter at Which Batch
      Sizes? Insights From a Noisy Quadratic Model", section 3 and appendix.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
        raise InputError(f"num_steps={num_steps!r} is invalid: expected a Python int >= 0")
    f = _nqm_map(h, learning_rate, batch_size, beta, precond_power)
    m0 = _nqm_init(x0, h)

    def step(m, _):
        m = _apply(f, m)
        return m, _nqm_loss(h, m)

    _, losses = jax.lax.scan(step, m0, None, length=num_steps)
    return jnp.concatenate([jnp.reshape(_nqm_loss(h, m0), (1,)), losses])


def nqm_steps_to_target(
    h: jax.Array,
    x0: jax.typing.ArrayLike,
    learning_rate: jax.typing.ArrayLike,
    batch_size: jax.typing.ArrayLike,
    target: jax.typing.ArrayLike,
    *,
    beta: jax.typing.ArrayLike = 0.0,
    precond_power: jax.typing.ArrayLike = 0.0,
    exact_steps: int = 128,
    max_log2_steps: int = 24,
) -> jax.Array:
    r"""Steps until the NQM's exact expected loss first falls to ``target``, in O(log T) work.

    The first ``exact_steps`` steps are taken one by one with the recurrence of
    :func:`nqm_expected_loss`, so a crossing among them is found exactly. Past
    them, binary lifting: the maps for :math:`2^k` steps are formed by repeated
    squaring, then applied from the largest down, each kept when the loss after
    it is still above ``target``. That finds the first crossing when the
    expected loss decreases monotonically after ``exact_steps``, which holds
    once the iterates are above their noise floor and momentum's oscillations
    (whose second moments decay like :math:`\beta^t`) have died out; before
    then, a strongly underdamped run can dip below a high target and climb back
    above it, which is why the first steps are searched one by one.

    Repeated squaring loses about :math:`2^k` ulps at level ``k``: run it in
    float64 (``jax.enable_x64``) for horizons beyond ~1e4 steps.

    Args:
      h, x0, learning_rate, batch_size, beta, precond_power: as in
        :func:`nqm_expected_loss` (vmappable).
      target: the expected loss to reach.
      exact_steps: steps searched one by one before the lifting (static,
        ``>= 0``); make it several times ``1 / (1 - beta)``.
      max_log2_steps: search up to ``exact_steps + 2**max_log2_steps - 1``
        steps (static).

    Returns:
      The number of steps (a float scalar of ``h``'s dtype); ``inf`` if the
      target is not reached within the horizon, or the run diverges.

    Raises:
      ValueError: if ``exact_steps`` or ``max_log2_steps`` is out of range.
    """
    if (
        isinstance(max_log2_steps, bool)
        or not isinstance(max_log2_steps, (int, np.integer))
        or not 1 <= max_log2_steps <= 60
    ):
        raise InputError(f"max_log2_steps={max_log2_steps!r} is invalid: expected an int in [1, 60]")
    if isinstance(exact_steps, bool) or not isinstance(exact_steps, (int, np.integer)) or exact_steps < 0:
        raise InputError(f"exact_steps={exact_steps!r} is invalid: expected an int >= 0")
    dtype = h.dtype
    target = jnp.asarray(target, dtype)
    one = _nqm_map(h, learning_rate, batch_size, beta, precond_power)

    def square(f, _):
        return _compose(f, f), f

    _, powers = jax.lax.scan(square, one, None, length=max_log2_steps)  # powers[k]: 2**k steps
    m0 = _nqm_init(x0, h)

    def walk(m, _):
        m = _apply(one, m)
        return m, _nqm_loss(h, m)

    m_exact, walked = jax.lax.scan(walk, m0, None, length=exact_steps)
    walked = jnp.concatenate([jnp.reshape(_nqm_loss(h, m0), (1,)), walked])
    below = walked <= target
    first_exact = jnp.argmax(below).astype(dtype)

    def lift(carry, level):
        m, t = carry
        f, k = level
        candidate = _apply(f, m)
        # Not-reached includes NaN/inf: a diverging run keeps climbing to the horizon.
        above = ~(_nqm_loss(h, candidate) <= target)
        m = jnp.where(above, candidate, m)
        t = t + jnp.where(above, jnp.asarray(2.0, dtype) ** k.astype(dtype), jnp.zeros((), dtype))
        return (m, t), None

    levels = jnp.arange(max_log2_steps - 1, -1, -1)
    reversed_powers = jax.tree.map(lambda p: p[::-1], powers)
    start = (m_exact, jnp.asarray(exact_steps, dtype))
    (m, t), _ = jax.lax.scan(lift, start, (reversed_powers, levels))
    reached_next = _nqm_loss(h, _apply(one, m)) <= target
    lifted = jnp.where(reached_next, t + 1, jnp.asarray(jnp.inf, dtype))
    return jnp.where(jnp.any(below), first_exact, lifted)


def nqm_steps_grid(
    h: jax.Array,
    x0: jax.typing.ArrayLike,
    target: float,
    learning_rates: Any,
    batch_sizes: Any,
    *,
    betas: Any = (0.0,),
    precond_power: float = 0.0,
    ema_learning_rates: bool = False,
    exact_steps: int = 128,
    max_log2_steps: int = 24,
    chunk: int = 128,
) -> np.ndarray:
    r""":func:`nqm_steps_to_target` over a grid of batch sizes, learning rates and momenta.

    One compiled program, mapped over the grid in chunks of ``chunk`` configs
    (``lax.map``) to bound the memory of the squared maps.

    Args:
      h, x0, target, precond_power, exact_steps, max_log2_steps: as in
        :func:`nqm_steps_to_target`.
      learning_rates: shape ``(L,)``.
      batch_sizes: shape ``(n,)``.
      betas: heavy-ball momenta, shape ``(K,)`` (``(0.0,)``: SGD).
      ema_learning_rates: the grid holds :math:`\eta / (1 - \beta)`, the
        learning rate of the equivalent moving-average momentum
        (``jaxopt_lab.momentum(lr, beta, ema=True)``); the heavy-ball rate is
        ``lr * (1 - beta)``. This keeps the effective step size on the same grid
        for every ``beta``.
      chunk: configs per mapped chunk.

    Returns:
      Steps to ``target``, a NumPy array of shape ``(n, L, K)`` (``inf``: not
      reached).
    """
    lrs = np.asarray(learning_rates, np.float64)
    bs = np.asarray(batch_sizes, np.float64)
    betas = np.asarray(betas, np.float64)
    if lrs.ndim != 1 or bs.ndim != 1 or betas.ndim != 1:
        raise InputError(
            f"learning_rates {lrs.shape}, batch_sizes {bs.shape} and betas {betas.shape}: expected 1-D arrays"
        )
    grid_b, grid_lr, grid_beta = np.meshgrid(bs, lrs, betas, indexing="ij")
    if ema_learning_rates:
        grid_lr = grid_lr * (1 - grid_beta)
    steps = _nqm_steps_configs(
        h,
        x0,
        target,
        grid_lr.ravel(),
        grid_b.ravel(),
        grid_beta.ravel(),
        precond_power=precond_power,
        exact_steps=exact_steps,
        max_log2_steps=max_log2_steps,
        chunk=chunk,
    )
    return steps.reshape(grid_b.shape)


def _nqm_steps_configs(h, x0, target, lrs, bs, betas, *, precond_power, exact_steps, max_log2_steps, chunk):
    """:func:`nqm_steps_to_target` for flat arrays of (heavy-ball lr, B, beta) configs."""
    configs = tuple(jnp.asarray(a, h.dtype) for a in (lrs, bs, betas))

    def one(config):
        lr, b, beta = config
        return nqm_steps_to_target(
            h,
            x0,
            lr,
            b,
            target,
            beta=beta,
            precond_power=precond_power,
            exact_steps=exact_steps,
            max_log2_steps=max_log2_steps,
        )

    return np.asarray(jax.jit(lambda c: jax.lax.map(one, c, batch_size=chunk))(configs))


class BestSteps(NamedTuple):
    """Steps to target at each batch size, at the best learning rate and momentum of a grid."""

    batch_size: np.ndarray  # (n,)
    steps: np.ndarray  # (n,) fewest steps over the grid; inf: no config reached the target
    learning_rate: np.ndarray  # (n,) the winning grid value (lr / (1 - beta) with ema_learning_rates)
    beta: np.ndarray  # (n,) the winning momentum
    at_edge: np.ndarray  # (n,) bool: the winning lr is the first or last of the grid


def nqm_best_steps(
    h: jax.Array,
    x0: jax.typing.ArrayLike,
    target: float,
    learning_rates: Any,
    batch_sizes: Any,
    *,
    betas: Any = (0.0,),
    precond_power: float = 0.0,
    ema_learning_rates: bool = False,
    exact_steps: int = 128,
    max_log2_steps: int = 24,
    chunk: int = 128,
    refine: int = 1,
) -> BestSteps:
    """Fewest steps to ``target`` at each batch size over a learning-rate (and momentum) grid.

    With ``refine = 1``, :func:`nqm_steps_grid` followed by the minimum over
    learning rates and momenta (ties: the smallest learning rate, then the
    smallest momentum). With ``refine = r > 1``, coarse to fine: every r-th
    learning rate first, then, for each batch size and momentum, the full grid
    within ``r - 1`` points of the coarse winner. That finds the same winner
    when steps-to-target is unimodal in the learning rate along the grid (true
    of the NQM, whose steps fall with the lr until the noise floor or the
    stability limit takes over), for about ``1/r + 2`` of the cost.

    Args:
      h, x0, target, learning_rates, batch_sizes, betas, precond_power,
        ema_learning_rates, exact_steps, max_log2_steps, chunk: as in
        :func:`nqm_steps_grid`.
      refine: coarse-grid stride (``>= 1``).

    Returns:
      A :class:`BestSteps`; check ``at_edge``: a winner on the edge of the grid
      may not be the optimum.

    Raises:
      ValueError: if ``refine`` is not a positive int.
    """
    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or refine < 1:
        raise InputError(f"refine={refine!r} is invalid: expected an int >= 1")
    lrs = np.asarray(learning_rates, np.float64)
    bs = np.asarray(batch_sizes, np.float64)
    betas = np.asarray(betas, np.float64)
    options = dict(
        precond_power=precond_power, exact_steps=exact_steps, max_log2_steps=max_log2_steps, chunk=chunk
    )
    coarse = np.arange(0, lrs.size, refine)
    steps = np.full((bs.size, lrs.size, betas.size), np.inf)
    steps[:, coarse] = nqm_steps_grid(
        h, x0, target, lrs[coarse], bs, betas=betas, ema_learning_rates=ema_learning_rates, **options
    )
    if refine > 1:
        # The window around each (batch size, beta)'s coarse winner, as flat configs.
        centre = coarse[np.argmin(steps[:, coarse], axis=1)]  # (n, K)
        offsets = np.arange(-(refine - 1), refine)
        window = np.clip(centre[..., None] + offsets, 0, lrs.size - 1)  # (n, K, W)
        i_b, i_beta, _ = np.indices(window.shape)
        lr = lrs[window] * ((1 - betas[i_beta]) if ema_learning_rates else 1.0)
        steps[i_b, window, i_beta] = _nqm_steps_configs(
            h, x0, target, lr.ravel(), bs[i_b].ravel(), betas[i_beta].ravel(), **options
        ).reshape(window.shape)
    flat = steps.reshape(bs.size, -1)
    i_lr, i_beta = np.unravel_index(np.argmin(flat, axis=1), steps.shape[1:])
    return BestSteps(
        batch_size=bs,
        steps=flat.min(axis=1),
        learning_rate=lrs[i_lr],
        beta=betas[i_beta],
        at_edge=(i_lr == 0) | (i_lr == lrs.size - 1),
    )


def nqm_monte_carlo(
    h: jax.Array,
    x0: jax.Array,
    tx: optax.GradientTransformation,
    batch_size: jax.typing.ArrayLike,
    num_steps: int,
    key: jax.Array,
    num_draws: int,
) -> jax.Array:
    """Losses of ``tx`` on the NQM over ``num_draws`` independent noise sequences.

    :func:`optimize` with :func:`nqm_gradient`, vmapped over
    ``jax.random.split(key, num_draws)``; the mean over draws estimates
    :func:`nqm_expected_loss`.

    Args:
      h: curvatures, shape ``(d,)``.
      x0: initial point, shape ``(d,)`` (its dtype is the run's dtype).
      tx: the optimizer.
      batch_size: :math:`B` of the gradient noise.
      num_steps: number of steps (static).
      key: PRNG key.
      num_draws: number of independent runs (static).

    Returns:
      Losses, shape ``(draws, steps + 1)``.
    """
    loss_fn, grad_fn = quadratic(h.astype(x0.dtype)), nqm_gradient(h, batch_size)

    def run(k):
        return optimize(loss_fn, tx, x0, num_steps, grad_fn=grad_fn, key=k, keep_params=False).loss

    return jax.jit(jax.vmap(run))(jax.random.split(key, num_draws))
