"""Optimizers as optax ``GradientTransformation``s written as pure ``init``/``update`` pairs.

Four building blocks, each a factory closing over its hyperparameters:

* :func:`scale_by_momentum`: heavy-ball (Polyak) or moving-average momentum,
  optionally Nesterov and bias-corrected;
* :func:`scale_by_rms`: RMSProp's division by the root mean square (optionally
  centered);
* :func:`scale_by_adam`: Adam's bias-corrected first moment over the root of
  its second moment;
* :func:`scale_by_learning_rate`: multiplication by ``-learning_rate`` (a
  number, a traced value or an optax schedule).

and four aliases that only compose them with :func:`optax.chain`:
:func:`sgd`, :func:`momentum`, :func:`rmsprop`, :func:`adam`, gathered in
:data:`OPTIMIZERS` for the sweep engine.

Every numeric hyperparameter may be a traced value, so an optimizer can be
built inside ``jax.vmap`` from stacked hyperparameters; the flags
(``nesterov``, ``ema``, ``centered``, ``bias_correction``) change the code and
are keyword-only Python booleans. Hyperparameters given as Python (or NumPy)
numbers are checked when the optimizer is built; traced values and JAX arrays
cannot be checked without forcing them to the host, so they are not.

The arithmetic is optax's own (``optax.tree.update_moment``,
``update_moment_per_elem_norm``, ``bias_correction``), so every input optax
accepts gives optax's numbers: complex parameters (second moments of
``|g|**2``), Python scalar leaves, integer arrays, float16 and bfloat16 leaves
(their state stays in their dtype), empty pytrees and ``None`` leaves. One
departure, where optax would change a state's dtype: a JAX-array
hyperparameter of another dtype than a floating leaf (float32 traced under
``vmap`` over bfloat16 parameters) is applied at the wider precision and the
result cast back to the leaf's dtype. The states are this module's NamedTuples,
not optax's.

References:
  Polyak, 1964, "Some methods of speeding up the convergence of iteration methods".
  Sutskever, Martens, Dahl and Hinton, 2013, "On the importance of initialization
  and momentum in deep learning".
  Tieleman and Hinton, 2012, "Lecture 6.5 - RMSProp", COURSERA: Neural Networks
  for Machine Learning.
  Kingma and Ba, 2015, "Adam: A Method for Stochastic Optimization".
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_lab.errors import InputError

__all__ = [
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
]


# --------------------------------------------------------------------------- states


class ScaleByMomentumState(NamedTuple):
    """State of :func:`scale_by_momentum`."""

    count: jax.Array  # int32 number of updates taken, for the bias correction
    trace: optax.Updates  # the momentum buffer, one leaf per parameter leaf


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms` (``centered=False``)."""

    nu: optax.Updates  # moving average of squared gradients


class ScaleByCenteredRmsState(NamedTuple):
    """State of :func:`scale_by_rms` with ``centered=True``."""

    mu: optax.Updates  # moving average of gradients
    nu: optax.Updates  # moving average of squared gradients


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`."""

    count: jax.Array  # int32 number of updates taken
    mu: optax.Updates  # moving average of gradients (first moment)
    nu: optax.Updates  # moving average of squared gradients (second moment)


class ScaleByLearningRateState(NamedTuple):
    """State of :func:`scale_by_learning_rate` when the learning rate is a schedule."""

    count: jax.Array  # int32 number of updates taken: the schedule's argument


# --------------------------------------------------------------------------- checks


def _is_number(value) -> bool:
    """Python and NumPy numbers can be checked; JAX arrays and tracers are not."""
    return isinstance(value, numbers.Real)


def _check_decay(name: str, value) -> None:
    if _is_number(value) and not 0 <= value < 1:
        raise InputError(f"{name}={value} is invalid: expected 0 <= {name} < 1")


def _check_nonnegative(name: str, value) -> None:
    if _is_number(value) and not 0 <= value < math.inf:
        raise InputError(f"{name}={value} is invalid: expected a finite {name} >= 0")


def _check_learning_rate(value) -> None:
    expected = "a positive number, a JAX scalar or an optax schedule"
    if _is_number(value):
        if not 0 < value < math.inf:
            raise InputError(
                f"learning_rate={value} is invalid: expected a finite learning_rate > 0 ({expected})"
            )
    elif not (callable(value) or isinstance(value, (jax.Array, np.ndarray, np.generic))):
        raise InputError(f"learning_rate={value!r} is invalid: expected {expected}")


# --------------------------------------------------------------------------- helpers


def _is_none(x) -> bool:
    return x is None


def _cast_back(tree: optax.Updates, like: optax.Updates) -> optax.Updates:
    """Each leaf of ``tree`` in the dtype of its leaf in ``like`` where that one is
    floating or complex; integer and Python-scalar leaves as optax leaves them.

    optax computes its updates with standard dtype promotion. With a float32
    hyperparameter traced under ``vmap`` (a sweep) and bfloat16 parameters its
    moments would turn float32 and break a ``lax.scan`` carry; cast back, they
    stay bfloat16, computed at float32 precision. With Python numbers (weakly
    typed) and matching dtypes the cast changes nothing, so the numbers are
    optax's.
    """

    def cast(x, ref):
        dtype = getattr(ref, "dtype", None)
        if x is None or dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
            return x
        return jnp.asarray(x).astype(dtype)

    return jax.tree.map(cast, tree, like, is_leaf=_is_none)


def _map(fn, like: optax.Updates, *rest: optax.Updates) -> optax.Updates:
    """``jax.tree.map(fn, like, *rest)`` with optax's arithmetic (standard promotion),
    each result in the dtype of its leaf in ``like`` (:func:`_cast_back`); ``None``
    leaves stay ``None``."""
    with jax.numpy_dtype_promotion("standard"):
        out = jax.tree.map(lambda x, *a: None if x is None else fn(x, *a), like, *rest, is_leaf=_is_none)
    return _cast_back(out, like)


def _update_moment(updates: optax.Updates, moments: optax.Updates, decay, order: int):
    """``decay * m + (1 - decay) * g**order``: optax's ``update_moment`` (order 1) or
    ``update_moment_per_elem_norm`` (order 2: ``|g|**2`` for complex ``g``), in each
    moment's dtype (:func:`_cast_back`)."""
    helper = optax.tree.update_moment if order == 1 else optax.tree.update_moment_per_elem_norm
    with jax.numpy_dtype_promotion("standard"):
        new = helper(updates, moments, decay, order)
    return _cast_back(new, moments)


def _bias_correction(moment: optax.Updates, decay, count: jax.Array) -> optax.Updates:
    """``moment / (1 - decay**count)``: optax's ``bias_correction``, in each leaf's dtype."""
    with jax.numpy_dtype_promotion("standard"):
        out = optax.tree.bias_correction(moment, decay, count)
    return _cast_back(out, moment)


def _abs_sq(x: jax.Array) -> jax.Array:
    """``|x|**2`` for real or complex ``x`` (optax's ``abs_sq``, which it does not export)."""
    return (jnp.conj(x) * x).real


def _zeros_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


# --------------------------------------------------------------------------- building blocks


def scale_by_momentum(
    beta: jax.typing.ArrayLike = 0.9,
    *,
    nesterov: bool = False,
    ema: bool = False,
    bias_correction: bool = False,
) -> optax.GradientTransformation:
    r"""Accumulate the updates in a momentum buffer, heavy-ball or moving-average.

    Heavy ball (``ema=False``), exactly ``optax.trace`` / the momentum of
    ``optax.sgd(lr, momentum=beta, nesterov=...)``:

    .. math::

      v_t = g_t + \beta v_{t-1}, \qquad
      u_t = v_t \;\text{or, with Nesterov,}\; g_t + \beta v_t .

    Moving average (``ema=True``), the same direction with its scale divided by
    ``1 / (1 - beta)``, so the step size no longer grows with ``beta`` (it
    averages over about ``1 / (1 - beta)`` steps):

    .. math::

      v_t = \beta v_{t-1} + (1 - \beta) g_t, \qquad
      u_t = v_t \;\text{or, with Nesterov,}\; (1 - \beta) g_t + \beta v_t .

    The Nesterov look-ahead of the moving average is the heavy-ball one scaled
    by ``1 - beta``, so ``ema=True`` with learning rate ``lr`` takes exactly the
    steps of ``ema=False`` with learning rate ``lr * (1 - beta)``, with or
    without Nesterov.

    With ``bias_correction=True`` the buffer is divided by ``1 - beta**t``
    (``t`` the number of updates including this one) before it is used,
    :math:`\hat v_t = v_t / (1 - \beta^t)`, and the Nesterov look-ahead uses
    :math:`\hat v_t`. For the moving average this removes the bias towards the
    zero initialization (as in Adam); for the heavy ball it makes the early
    steps as large as the steady-state ones (the sum
    :math:`1 + \beta + \dots + \beta^{t-1}` becomes :math:`1 / (1 - \beta)`),
    keeping the ``lr * (1 - beta)`` equivalence above.

    Args:
      beta: decay of the momentum buffer, ``0 <= beta < 1``. A Python or NumPy
        number is checked here; a JAX array or traced value cannot be.
      nesterov: use the Nesterov look-ahead (Sutskever et al., 2013).
      ema: keep a moving average instead of the heavy-ball sum.
      bias_correction: divide the buffer by ``1 - beta**t``.

    Returns:
      An :class:`optax.GradientTransformation` with state
      :class:`ScaleByMomentumState`.

    Raises:
      ValueError: if ``beta`` is a number outside ``[0, 1)``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_momentum(0.5)
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.ones(2), state)
      >>> u, state = tx.update(jnp.ones(2), state)
      >>> u
      Array([1.5, 1.5], dtype=float32)

    References:
      Polyak, 1964, "Some methods of speeding up the convergence of iteration
      methods".
      Sutskever, Martens, Dahl and Hinton, 2013, "On the importance of
      initialization and momentum in deep learning".
    """
    _check_decay("beta", beta)

    def init_fn(params):
        return ScaleByMomentumState(count=_zeros_count(), trace=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        if ema:
            trace = _update_moment(updates, state.trace, beta, 1)
        else:  # optax.trace
            trace = _map(lambda v, g: g + beta * v, state.trace, updates)
        trace_hat = _bias_correction(trace, beta, count) if bias_correction else trace
        if nesterov and ema:
            out = _map(lambda g, v: (1 - beta) * g + beta * v, updates, trace_hat)
        elif nesterov:
            out = _map(lambda g, v: g + beta * v, updates, trace_hat)
        else:
            out = trace_hat
        return out, ScaleByMomentumState(count=count, trace=trace)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_rms(
    decay: jax.typing.ArrayLike = 0.9,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    centered: bool = False,
) -> optax.GradientTransformation:
    r"""Divide the updates by the root of a moving average of their squares (RMSProp).

    .. math::

      \nu_t = \rho \nu_{t-1} + (1 - \rho) g_t^2, \qquad
      u_t = \frac{g_t}{\sqrt{\nu_t + \epsilon}},

    and with ``centered=True`` (Graves, 2013) the variance replaces the second
    moment:

    .. math::

      \mu_t = \rho \mu_{t-1} + (1 - \rho) g_t, \qquad
      u_t = \frac{g_t}{\sqrt{\nu_t - \mu_t^2 + \epsilon}} .

    The moments start at zero and ``eps`` sits inside the square root, as in
    ``optax.scale_by_rms`` / ``optax.scale_by_stddev`` with their defaults.

    Args:
      decay: decay :math:`\rho` of the moving averages, ``0 <= decay < 1``.
      eps: added to the mean square inside the root, ``eps >= 0``.
      centered: divide by the root of the variance instead of the second moment.

    Python or NumPy numbers are checked here; JAX arrays and traced values
    cannot be.

    Returns:
      An :class:`optax.GradientTransformation` with state
      :class:`ScaleByRmsState`, or :class:`ScaleByCenteredRmsState` when
      ``centered``.

    Raises:
      ValueError: if ``decay`` is a number outside ``[0, 1)`` or ``eps`` a
        negative number.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_rms(0.75, 0.0)
      >>> u, _ = tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))
      >>> u  # g / sqrt(0.25 g^2) = 2 sign(g)
      Array([ 2., -2.], dtype=float32)

    References:
      Tieleman and Hinton, 2012, "Lecture 6.5 - RMSProp: Divide the gradient by
      a running average of its recent magnitude", COURSERA: Neural Networks for
      Machine Learning.
      Graves, 2013, "Generating Sequences With Recurrent Neural Networks".
    """
    _check_decay("decay", decay)
    _check_nonnegative("eps", eps)

    def init_fn(params):
        nu = optax.tree.zeros_like(params)
        if centered:
            return ScaleByCenteredRmsState(mu=optax.tree.zeros_like(params), nu=nu)
        return ScaleByRmsState(nu=nu)

    def update_fn(updates, state, params=None):
        del params
        nu = _update_moment(updates, state.nu, decay, 2)
        if centered:  # optax.scale_by_stddev
            mu = _update_moment(updates, state.mu, decay, 1)
            out = _map(lambda g, m, n: jax.lax.rsqrt(n - _abs_sq(m) + eps) * g, updates, mu, nu)
            return out, ScaleByCenteredRmsState(mu=mu, nu=nu)
        out = _map(lambda g, n: jax.lax.rsqrt(n + eps) * g, updates, nu)
        return out, ScaleByRmsState(nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_adam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    bias_correction: bool = True,
) -> optax.GradientTransformation:
    r"""Rescale the updates as Adam: first moment over the root of the second.

    .. math::

      m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \qquad
      v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2,

      \hat m_t = \frac{m_t}{1 - \beta_1^t}, \qquad
      \hat v_t = \frac{v_t}{1 - \beta_2^t}, \qquad
      u_t = \frac{\hat m_t}{\sqrt{\hat v_t + \epsilon_{root}} + \epsilon} .

    With ``bias_correction=False``, :math:`\hat m_t = m_t` and
    :math:`\hat v_t = v_t`: the first steps are then smaller by about
    :math:`(1 - \beta_1) / \sqrt{1 - \beta_2}`.

    Args:
      b1: decay of the first moment, ``0 <= b1 < 1``.
      b2: decay of the second moment, ``0 <= b2 < 1``.
      eps: added to the root of the second moment, ``eps >= 0``.
      eps_root: added to the second moment inside the root, ``eps_root >= 0``
        (keeps the gradient through the update finite when :math:`v = 0`).
      bias_correction: divide the moments by ``1 - b**t``.

    Python or NumPy numbers are checked here; JAX arrays and traced values
    cannot be.

    Returns:
      An :class:`optax.GradientTransformation` with state
      :class:`ScaleByAdamState`.

    Raises:
      ValueError: if ``b1`` or ``b2`` is a number outside ``[0, 1)``, or
        ``eps`` or ``eps_root`` a negative number.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_adam(0.5, 0.75, 0.0, 0.0)
      >>> u, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
      >>> u  # the first bias-corrected step is sign(g)
      Array([ 1., -1.], dtype=float32)

    References:
      Kingma and Ba, 2015, "Adam: A Method for Stochastic Optimization".
    """
    _check_decay("b1", b1)
    _check_decay("b2", b2)
    _check_nonnegative("eps", eps)
    _check_nonnegative("eps_root", eps_root)

    def init_fn(params):
        return ScaleByAdamState(
            count=_zeros_count(),
            mu=optax.tree.zeros_like(params),
            nu=optax.tree.zeros_like(params),
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        mu = _update_moment(updates, state.mu, b1, 1)
        nu = _update_moment(updates, state.nu, b2, 2)
        if bias_correction:
            mu_hat = _bias_correction(mu, b1, count)
            nu_hat = _bias_correction(nu, b2, count)
        else:
            mu_hat, nu_hat = mu, nu
        out = _map(lambda g, m, v: m / (jnp.sqrt(v + eps_root) + eps), updates, mu_hat, nu_hat)
        # As optax: the second moment keeps the state's dtype (integer parameters included).
        nu = optax.tree.cast_like(nu, state.nu)
        return out, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_learning_rate(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    r"""Multiply the updates by ``-learning_rate``, turning a direction into a descent step.

    .. math::

      u_t = -\eta_t \, g_t, \qquad
      \eta_t = \texttt{learning\_rate} \;\text{or}\; \texttt{learning\_rate}(t),

    where ``t`` counts the updates before this one (0 on the first), as in
    ``optax.scale_by_learning_rate``.

    Args:
      learning_rate: a positive Python or NumPy number (checked here), a JAX
        scalar or traced value (not checked: it cannot be without leaving the
        trace), or an optax schedule ``count -> learning rate``.

    Returns:
      An :class:`optax.GradientTransformation`. Its state is
      :class:`ScaleByLearningRateState` for a schedule and
      :class:`optax.EmptyState` for a constant.

    Raises:
      ValueError: if ``learning_rate`` is a number ``<= 0``.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = scale_by_learning_rate(0.5)
      >>> u, _ = tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))
      >>> u
      Array([-1.,  2.], dtype=float32)
    """
    _check_learning_rate(learning_rate)

    def scale(updates, lr):
        # As optax's scale_by_schedule: the step in each leaf's dtype, so bfloat16
        # updates stay bfloat16 (a Python scalar leaf stays a Python scalar).
        def step(g):
            return jnp.asarray(-lr, g.dtype) * g if hasattr(g, "dtype") else -lr * g

        return _map(step, updates)

    if callable(learning_rate):

        def init_schedule(params):
            del params
            return ScaleByLearningRateState(count=_zeros_count())

        def update_schedule(updates, state, params=None):
            del params
            out = scale(updates, learning_rate(state.count))
            return out, ScaleByLearningRateState(count=optax.safe_increment(state.count))

        return optax.GradientTransformation(init_schedule, update_schedule)

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        return scale(updates, learning_rate), state

    return optax.GradientTransformation(init_fn, update_fn)


# --------------------------------------------------------------------------- aliases


def sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: jax.typing.ArrayLike | None = None,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    r"""Gradient descent, :math:`\theta_{t+1} = \theta_t - \eta_t g_t`, optionally with momentum.

    Equal to ``optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)``:
    with ``momentum`` set it is :func:`momentum` (heavy ball) with ``beta=momentum``.

    Args:
      learning_rate: a positive number, a traced scalar or an optax schedule
        (see :func:`scale_by_learning_rate`).
      momentum: ``None`` (plain gradient descent) or the heavy-ball decay,
        ``0 <= momentum < 1``.
      nesterov: with ``momentum``, use the Nesterov look-ahead.

    Returns:
      An :class:`optax.GradientTransformation`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = sgd(0.1)
      >>> params = jnp.array([1.0, -2.0])
      >>> updates, _ = tx.update(2 * params, tx.init(params))  # grad of |x|^2
      >>> optax.apply_updates(params, updates)
      Array([ 0.8, -1.6], dtype=float32)
    """
    if momentum is not None:
        _check_decay("momentum", momentum)
        return optax.chain(
            scale_by_momentum(momentum, nesterov=nesterov), scale_by_learning_rate(learning_rate)
        )
    return optax.chain(scale_by_learning_rate(learning_rate))


def momentum(
    learning_rate: optax.ScalarOrSchedule,
    beta: jax.typing.ArrayLike = 0.9,
    *,
    nesterov: bool = False,
    ema: bool = False,
    bias_correction: bool = False,
) -> optax.GradientTransformation:
    r"""Gradient descent with momentum: ``chain(scale_by_momentum, scale_by_learning_rate)``.

    Heavy ball (the default) takes :math:`\theta_{t+1} = \theta_t - \eta v_t`
    with :math:`v_t = g_t + \beta v_{t-1}`, equal to
    ``optax.sgd(learning_rate, momentum=beta, nesterov=nesterov)``. With
    ``ema=True`` the buffer is the moving average
    :math:`v_t = \beta v_{t-1} + (1 - \beta) g_t` (the same steps as the heavy
    ball with learning rate :math:`\eta (1 - \beta)`); see
    :func:`scale_by_momentum` for Nesterov and the bias correction.

    Args:
      learning_rate: a positive number, a traced scalar or an optax schedule.
      beta: momentum decay, ``0 <= beta < 1`` (checked only for numbers).
      nesterov: use the Nesterov look-ahead.
      ema: keep a moving average instead of the heavy-ball sum.
      bias_correction: divide the buffer by ``1 - beta**t``.

    Returns:
      An :class:`optax.GradientTransformation`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = momentum(0.1, 0.5)
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.ones(2), state)
      >>> u, state = tx.update(jnp.ones(2), state)
      >>> u  # -0.1 * (1 + 0.5 * 1)
      Array([-0.15, -0.15], dtype=float32)

    References:
      Polyak, 1964, "Some methods of speeding up the convergence of iteration
      methods".
      Sutskever, Martens, Dahl and Hinton, 2013, "On the importance of
      initialization and momentum in deep learning".
    """
    return optax.chain(
        scale_by_momentum(beta, nesterov=nesterov, ema=ema, bias_correction=bias_correction),
        scale_by_learning_rate(learning_rate),
    )


def rmsprop(
    learning_rate: optax.ScalarOrSchedule,
    decay: jax.typing.ArrayLike = 0.9,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    centered: bool = False,
) -> optax.GradientTransformation:
    r"""RMSProp: ``chain(scale_by_rms, scale_by_learning_rate)``.

    :math:`\theta_{t+1} = \theta_t - \eta\, g_t / \sqrt{\nu_t + \epsilon}` with
    :math:`\nu_t = \rho \nu_{t-1} + (1 - \rho) g_t^2` (centered: the variance
    :math:`\nu_t - \mu_t^2` under the root). Equal to
    ``optax.rmsprop(learning_rate, decay=decay, eps=eps, centered=centered)``.

    Args:
      learning_rate: a positive number, a traced scalar or an optax schedule.
      decay: decay of the moving averages, ``0 <= decay < 1``.
      eps: added inside the square root, ``eps >= 0``.
      centered: divide by the root of the variance.

    Numbers are checked here; JAX arrays and traced values cannot be.

    Returns:
      An :class:`optax.GradientTransformation`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = rmsprop(0.01, decay=0.75, eps=0.0)
      >>> u, _ = tx.update(jnp.array([2.0, -4.0]), tx.init(jnp.zeros(2)))
      >>> u
      Array([-0.02,  0.02], dtype=float32)

    References:
      Tieleman and Hinton, 2012, "Lecture 6.5 - RMSProp: Divide the gradient by
      a running average of its recent magnitude", COURSERA: Neural Networks for
      Machine Learning.
    """
    return optax.chain(
        scale_by_rms(decay, eps, centered=centered),
        scale_by_learning_rate(learning_rate),
    )


def adam(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    *,
    bias_correction: bool = True,
) -> optax.GradientTransformation:
    r"""Adam: ``chain(scale_by_adam, scale_by_learning_rate)``.

    :math:`\theta_{t+1} = \theta_t - \eta\, \hat m_t / (\sqrt{\hat v_t +
    \epsilon_{root}} + \epsilon)`, see :func:`scale_by_adam`. Equal to
    ``optax.adam(learning_rate, b1=b1, b2=b2, eps=eps, eps_root=eps_root)``;
    ``bias_correction=False`` uses the raw moments :math:`m_t, v_t`.

    Args:
      learning_rate: a positive number, a traced scalar or an optax schedule.
      b1: decay of the first moment, ``0 <= b1 < 1``.
      b2: decay of the second moment, ``0 <= b2 < 1``.
      eps: added to the root, ``eps >= 0``.
      eps_root: added inside the root, ``eps_root >= 0``.
      bias_correction: divide the moments by ``1 - b**t``.

    Numbers are checked here; JAX arrays and traced values cannot be.

    Returns:
      An :class:`optax.GradientTransformation`.

    Example:
      >>> import jax.numpy as jnp
      >>> tx = adam(0.01, b1=0.5, b2=0.75, eps=0.0)
      >>> u, _ = tx.update(jnp.array([3.0, -0.5]), tx.init(jnp.zeros(2)))
      >>> u  # the first step is -lr * sign(g)
      Array([-0.01,  0.01], dtype=float32)

    References:
      Kingma and Ba, 2015, "Adam: A Method for Stochastic Optimization".
    """
    return optax.chain(
        scale_by_adam(b1, b2, eps, eps_root, bias_correction=bias_correction),
        scale_by_learning_rate(learning_rate),
    )


OPTIMIZERS = {"sgd": sgd, "momentum": momentum, "rmsprop": rmsprop, "adam": adam}
"""The aliases by name. The sweep engine reads their signatures: numeric
hyperparameters are positional-or-keyword with defaults, flags keyword-only."""
