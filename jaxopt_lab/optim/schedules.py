"""Learning-rate schedules whose parameters may all be traced, so a sweep can vmap over them.

optax's schedule builders branch in Python on their arguments (``if
transition_steps <= 0``, ``if not decay_steps``), so a warmup length or a final
fraction cannot be a sweep axis there. Here each schedule is a pure function
``schedule(step, **params) -> learning rate`` written with ``jnp.where`` and
clipping only: every parameter may be a traced scalar, and the values equal
optax's builders at Python values.

Parameters, shared by the schedules that take them:

* ``peak_lr``: the learning rate after warmup (and of ``constant``);
* ``warmup_steps``: steps of linear warmup from 0 (0: none);
* ``decay_steps``: the step at which a decay ends (counted from 0, warmup
  included, as ``optax.warmup_cosine_decay_schedule`` counts);
* ``final_lr_fraction``: the learning rate at ``decay_steps``, as a fraction of
  ``peak_lr`` (in ``[0, 1]``);
* ``decay_rate`` and ``transition_steps``: ``peak_lr * decay_rate ** (step /
  transition_steps)`` (``exponential``; ``step_decay`` takes the floor).

Example:
  >>> import jax, jax.numpy as jnp
  >>> warmups = jnp.array([0.0, 10.0, 50.0])
  >>> jax.vmap(lambda w: warmup_cosine(5, peak_lr=0.1, warmup_steps=w, decay_steps=100))(warmups)
  Array([0.09938442, 0.05      , 0.01      ], dtype=float32)
"""

from __future__ import annotations

import inspect
import math

import jax
import jax.numpy as jnp

from jaxopt_lab.errors import InputError

__all__ = [
    "constant",
    "linear_warmup",
    "cosine_decay",
    "linear_decay",
    "exponential",
    "step_decay",
    "inverse_sqrt",
    "warmup_cosine",
    "warmup_linear",
    "warmup_rsqrt",
    "SCHEDULES",
    "PARAMS",
    "params_of",
    "check_params",
]

ArrayLike = jax.typing.ArrayLike


def _f32(x) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def _warmup_factor(step, warmup_steps) -> jax.Array:
    """``step / warmup_steps`` clipped to ``[0, 1]``; 1 when there is no warmup."""
    step, warmup = _f32(step), _f32(warmup_steps)
    return jnp.where(warmup > 0, jnp.clip(step / jnp.maximum(warmup, 1.0), 0.0, 1.0), 1.0)


def _progress(step, start, end) -> jax.Array:
    """How far ``step`` is from ``start`` to ``end``, clipped to ``[0, 1]`` (1 when ``end <= start``)."""
    step, start, end = _f32(step), _f32(start), _f32(end)
    span = end - start
    return jnp.where(span > 0, jnp.clip((step - start) / jnp.where(span > 0, span, 1.0), 0.0, 1.0), 1.0)


def _cosine_to(peak, final_lr_fraction, progress) -> jax.Array:
    """Half a cosine from ``peak`` (progress 0) to ``final_lr_fraction * peak`` (progress 1)."""
    alpha = _f32(final_lr_fraction)
    return peak * ((1.0 - alpha) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress)) + alpha)


def _linear_to(peak, final_lr_fraction, progress) -> jax.Array:
    """A straight line from ``peak`` (progress 0) to ``final_lr_fraction * peak`` (progress 1)."""
    return peak + (peak * _f32(final_lr_fraction) - peak) * progress


def _after_warmup(step, warmup_steps, peak, decayed) -> jax.Array:
    """The linear warmup to ``peak`` before ``warmup_steps``, ``decayed`` from there on."""
    return jnp.where(_f32(step) < _f32(warmup_steps), peak * _warmup_factor(step, warmup_steps), decayed)


def constant(step: ArrayLike, *, peak_lr: ArrayLike) -> jax.Array:
    """``peak_lr`` at every step (``optax.constant_schedule``)."""
    return jnp.broadcast_to(_f32(peak_lr), jnp.shape(step))


def linear_warmup(step: ArrayLike, *, peak_lr: ArrayLike, warmup_steps: ArrayLike) -> jax.Array:
    """From 0 to ``peak_lr`` over ``warmup_steps``, then ``peak_lr``
    (``optax.linear_schedule(0, peak_lr, warmup_steps)``)."""
    return _f32(peak_lr) * _warmup_factor(step, warmup_steps)


def cosine_decay(
    step: ArrayLike, *, peak_lr: ArrayLike, decay_steps: ArrayLike, final_lr_fraction: ArrayLike = 0.0
) -> jax.Array:
    r"""Half a cosine from ``peak_lr`` at step 0 to ``final_lr_fraction * peak_lr`` at ``decay_steps``.

    :math:`\eta_t = \eta ((1 - \alpha) \tfrac12 (1 + \cos(\pi \min(t, T) / T)) + \alpha)`, as
    ``optax.cosine_decay_schedule(peak_lr, decay_steps, alpha=final_lr_fraction)``.

    References:
      Loshchilov and Hutter, 2017, "SGDR: Stochastic Gradient Descent with Warm Restarts".
    """
    return _cosine_to(_f32(peak_lr), final_lr_fraction, _progress(step, 0, decay_steps))


def linear_decay(
    step: ArrayLike, *, peak_lr: ArrayLike, decay_steps: ArrayLike, final_lr_fraction: ArrayLike = 0.0
) -> jax.Array:
    """From ``peak_lr`` at step 0 to ``final_lr_fraction * peak_lr`` at ``decay_steps``, linearly
    (``optax.linear_schedule(peak_lr, final_lr_fraction * peak_lr, decay_steps)``)."""
    return _linear_to(_f32(peak_lr), final_lr_fraction, _progress(step, 0, decay_steps))


def exponential(
    step: ArrayLike, *, peak_lr: ArrayLike, decay_rate: ArrayLike, transition_steps: ArrayLike
) -> jax.Array:
    """``peak_lr * decay_rate ** (step / transition_steps)``
    (``optax.exponential_decay(peak_lr, transition_steps, decay_rate)``)."""
    return _f32(peak_lr) * _f32(decay_rate) ** (_f32(step) / _f32(transition_steps))


def step_decay(
    step: ArrayLike, *, peak_lr: ArrayLike, decay_rate: ArrayLike, transition_steps: ArrayLike
) -> jax.Array:
    """``peak_lr * decay_rate ** floor(step / transition_steps)``: a drop every
    ``transition_steps`` (``optax.exponential_decay(..., staircase=True)``)."""
    return _f32(peak_lr) * _f32(decay_rate) ** jnp.floor(_f32(step) / _f32(transition_steps))


def inverse_sqrt(step: ArrayLike, *, peak_lr: ArrayLike, warmup_steps: ArrayLike) -> jax.Array:
    r"""``peak_lr`` until ``warmup_steps``, then :math:`\eta \sqrt{w / t}` (with no warmup,
    :math:`\eta / \sqrt{\max(t, 1)}`): the decay of Vaswani et al. (2017) without its warmup
    (see :func:`warmup_rsqrt`)."""
    w = jnp.maximum(_f32(warmup_steps), 1.0)
    return _f32(peak_lr) * jnp.sqrt(w / jnp.maximum(_f32(step), w))


def warmup_cosine(
    step: ArrayLike,
    *,
    peak_lr: ArrayLike,
    warmup_steps: ArrayLike,
    decay_steps: ArrayLike,
    final_lr_fraction: ArrayLike = 0.0,
) -> jax.Array:
    """Linear warmup from 0 to ``peak_lr``, then half a cosine to ``final_lr_fraction * peak_lr``
    at ``decay_steps`` (``optax.warmup_cosine_decay_schedule(0, peak_lr, warmup_steps,
    decay_steps, final_lr_fraction * peak_lr)``)."""
    peak = _f32(peak_lr)
    decayed = _cosine_to(peak, final_lr_fraction, _progress(step, warmup_steps, decay_steps))
    return _after_warmup(step, warmup_steps, peak, decayed)


def warmup_linear(
    step: ArrayLike,
    *,
    peak_lr: ArrayLike,
    warmup_steps: ArrayLike,
    decay_steps: ArrayLike,
    final_lr_fraction: ArrayLike = 0.0,
) -> jax.Array:
    """Linear warmup from 0 to ``peak_lr``, then linearly to ``final_lr_fraction * peak_lr`` at
    ``decay_steps`` (optax: ``join_schedules`` of two ``linear_schedule``)."""
    peak = _f32(peak_lr)
    decayed = _linear_to(peak, final_lr_fraction, _progress(step, warmup_steps, decay_steps))
    return _after_warmup(step, warmup_steps, peak, decayed)


def warmup_rsqrt(step: ArrayLike, *, peak_lr: ArrayLike, warmup_steps: ArrayLike) -> jax.Array:
    r"""Linear warmup to ``peak_lr`` at ``warmup_steps``, then :math:`\eta \sqrt{w / t}`
    (Vaswani et al. 2017, "Attention Is All You Need", section 5.3, up to its scale)."""
    decayed = inverse_sqrt(step, peak_lr=peak_lr, warmup_steps=warmup_steps)
    return _after_warmup(step, warmup_steps, _f32(peak_lr), decayed)


SCHEDULES = {
    f.__name__: f
    for f in (
        constant,
        linear_warmup,
        cosine_decay,
        linear_decay,
        exponential,
        step_decay,
        inverse_sqrt,
        warmup_cosine,
        warmup_linear,
        warmup_rsqrt,
    )
}
"""The schedules by name."""


PARAMS = {
    "warmup_steps": 0.0,
    "decay_steps": None,
    "final_lr_fraction": 0.0,
    "decay_rate": 0.1,
    "transition_steps": None,
}
"""Every schedule parameter but ``peak_lr`` (which a sweep takes from ``learning_rate``),
with the default a sweep gives it; ``None``: the config's own number of steps, so that a
decay ends with the run (and ``exponential`` ends at ``decay_rate`` times the peak)."""

# The valid range of each parameter: (test, words for the message).
_RANGES = {
    "warmup_steps": (lambda v: v >= 0, "warmup_steps >= 0"),
    "decay_steps": (lambda v: v > 0, "decay_steps > 0"),
    "final_lr_fraction": (lambda v: 0 <= v <= 1, "0 <= final_lr_fraction <= 1"),
    "decay_rate": (lambda v: v > 0, "decay_rate > 0"),
    "transition_steps": (lambda v: v > 0, "transition_steps > 0"),
}


def params_of(name: str) -> tuple[str, ...]:
    """The parameters of schedule ``name`` besides ``peak_lr``, in signature order.

    Example:
      >>> params_of("warmup_cosine")
      ('warmup_steps', 'decay_steps', 'final_lr_fraction')
    """
    if name not in SCHEDULES:
        raise InputError(f"schedule={name!r} is invalid: expected one of {', '.join(map(repr, SCHEDULES))}")
    signature = inspect.signature(SCHEDULES[name]).parameters
    return tuple(p for p in signature if p not in ("step", "peak_lr"))


def check_params(params) -> None:
    """Raise :class:`InputError` for a schedule parameter out of its range (Python numbers:
    a sweep checks its grid's values here, before they are traced)."""
    for name, value in params.items():
        test, words = _RANGES[name]
        if value is not None and not (math.isfinite(value) and test(value)):
            raise InputError(f"{name}={value!r} is invalid: expected {words}")
