"""How batch size enters training: the loss reduction and learning-rate rules.

Two separate choices decide how the batch size ``B`` shows up in an update:

* the **reduction** of per-example losses. With ``"mean"`` the gradient is an
  average, so its expected value does not depend on ``B``; with ``"sum"`` it
  grows as ``B``, which acts like a learning rate multiplied by ``B``.
* the **learning-rate rule** across batch sizes, relative to a base batch size
  ``B0``: ``"none"`` keeps ``lr``, ``"linear"`` uses ``lr * B / B0`` (Goyal et
  al., 2017), ``"sqrt"`` uses ``lr * sqrt(B / B0)`` (Krizhevsky, 2014; Hoffer et
  al., 2017).

Both work on padded batches (the sweep's ``mask`` strategy), and with traced
values, so batch size can be a vmapped hyperparameter.

References:
  Goyal et al., 2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour".
  Krizhevsky, 2014, "One weird trick for parallelizing convolutional neural networks".
  Hoffer, Hubara and Soudry, 2017, "Train longer, generalize better".
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab.errors import InputError

__all__ = ["REDUCTIONS", "LR_RULES", "reduce_loss", "scale_learning_rate"]

REDUCTIONS = ("mean", "sum")
LR_RULES = ("none", "linear", "sqrt")


def _choices(names) -> str:
    return ", ".join(map(repr, names))


def _check_choice(argument: str, value, valid) -> None:
    if not isinstance(value, str) or value not in valid:
        raise InputError(f"{argument}={value!r} is invalid: expected one of {_choices(valid)}")


def reduce_loss(
    per_example_loss: jax.typing.ArrayLike,
    mask: jax.typing.ArrayLike | None = None,
    reduction: str = "mean",
) -> jax.Array:
    """Mean or sum of the per-example losses of the valid (``mask`` true) examples.

    .. math::

      \\text{mean} = \\frac{\\sum_i m_i \\ell_i}{\\max(1, \\sum_i m_i)}, \\qquad
      \\text{sum} = \\sum_i m_i \\ell_i

    Padded rows are removed with ``jnp.where``, not multiplied by zero, so a NaN
    or infinite loss in a padded row does not reach the value, and the padded
    rows receive an exactly zero cotangent: a padded batch with its mask gives
    exactly the loss and gradient of the unpadded batch. (A NaN in a padded
    row's *inputs* can still reach the parameters' gradient through the model's
    own backward pass, e.g. ``0 * NaN`` in a dense layer's, which no reduction
    can stop: pad with real rows, as the sweep's ``mask`` strategy does, or zero
    the padded inputs with the mask before the model.) With no valid example,
    the mean is 0 (the count is clamped to 1), not NaN, so a fully padded batch
    is a no-op rather than a divergence.

    Args:
      per_example_loss: losses, with the examples on the leading axis; further
        axes (e.g. per-token losses) are reduced too.
      mask: ``None`` (every example valid) or a boolean array of the shape of
        ``per_example_loss`` or of its leading axis.
      reduction: ``"mean"`` or ``"sum"``.

    Returns:
      A scalar in the dtype of ``per_example_loss``.

    Raises:
      ValueError: for an unknown ``reduction`` or a ``mask`` of the wrong shape.
    """
    _check_choice("reduction", reduction, REDUCTIONS)
    loss = jnp.asarray(per_example_loss)
    if mask is None:
        return jnp.mean(loss) if reduction == "mean" else jnp.sum(loss)
    mask = jnp.asarray(mask)
    if mask.shape != loss.shape:
        if loss.ndim < 1 or mask.shape != loss.shape[:1]:
            raise InputError(
                f"mask has shape {mask.shape} but per_example_loss has shape {loss.shape}; "
                f"expected {loss.shape[:1]} or {loss.shape}"
            )
        mask = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (loss.ndim - 1)), loss.shape)
    mask = mask.astype(jnp.bool_)
    total = jnp.sum(jnp.where(mask, loss, jnp.zeros((), loss.dtype)))
    if reduction == "sum":
        return total
    count = jnp.sum(mask, dtype=loss.dtype)
    return total / jnp.maximum(count, 1)


def _check_positive_if_concrete(argument: str, value) -> None:
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{argument}={value!r} is invalid: expected a positive number")
    if isinstance(value, (int, float, np.integer, np.floating)) and not value > 0:
        raise InputError(f"{argument}={value!r} is invalid: expected a positive number")


def scale_learning_rate(
    learning_rate: jax.typing.ArrayLike | Callable[[jax.Array], jax.Array],
    batch_size: jax.typing.ArrayLike,
    base_batch_size: jax.typing.ArrayLike,
    rule: str,
) -> jax.typing.ArrayLike | Callable[[jax.Array], jax.Array]:
    """Rescales a learning rate for ``batch_size`` relative to ``base_batch_size``.

    .. math::

      \\text{none}: \\eta, \\qquad
      \\text{linear}: \\eta \\frac{B}{B_0}, \\qquad
      \\text{sqrt}: \\eta \\sqrt{\\frac{B}{B_0}}

    The batch sizes may be traced (e.g. a vmapped batch-size axis); the ratio is
    computed in floating point, and the result keeps the float dtype of the
    learning rate (float32 for a Python number), so no float64 appears under
    strict promotion.

    Args:
      learning_rate: ``eta``, a scalar or an optax schedule (a function of the
        step count), in which case a schedule is returned.
      batch_size: ``B``, the batch size in use.
      base_batch_size: ``B0``, the batch size at which ``learning_rate`` applies.
      rule: ``"none"``, ``"linear"`` or ``"sqrt"``.

    Returns:
      The scaled learning rate (``learning_rate`` itself for ``"none"``).

    Raises:
      ValueError: for an unknown ``rule``, or a concrete batch size that is not positive.

    References:
      Goyal et al., 2017 (linear); Krizhevsky, 2014 and Hoffer et al., 2017 (sqrt).
    """
    _check_choice("rule", rule, LR_RULES)
    _check_positive_if_concrete("batch_size", batch_size)
    _check_positive_if_concrete("base_batch_size", base_batch_size)
    if rule == "none":
        return learning_rate
    if callable(learning_rate):
        schedule = learning_rate
        return lambda count: _scale(schedule(count), batch_size, base_batch_size, rule)
    return _scale(learning_rate, batch_size, base_batch_size, rule)


def _scale(learning_rate, batch_size, base_batch_size, rule) -> jax.Array:
    lr = jnp.asarray(learning_rate)
    if not jnp.issubdtype(lr.dtype, jnp.floating):
        lr = lr.astype(jnp.float32)
    # The ratio in at least float32: a bfloat16 ratio of two batch sizes is coarse.
    compute = lr.dtype if lr.dtype.itemsize >= 4 else jnp.dtype(jnp.float32)
    ratio = jnp.asarray(batch_size).astype(compute) / jnp.asarray(base_batch_size).astype(compute)
    factor = ratio if rule == "linear" else jnp.sqrt(ratio)
    return (lr.astype(compute) * factor).astype(lr.dtype)
