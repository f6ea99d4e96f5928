"""Functional batch normalization: parameters and running statistics in, out.

Use::

    params, state = batchnorm.init(num_features)
    y, state = batchnorm.apply(params, state, x, train=True, mask=mask)

Nothing is stored in objects: the running statistics are a
:class:`BatchNormState` that goes in and comes out, so a model that uses batch
norm can be vmapped over configs (``momentum`` may be traced), scanned over
steps, and sharded over devices (``axis_name``).

References:
  Ioffe and Szegedy, 2015, "Batch Normalization: Accelerating Deep Network
  Training by Reducing Internal Covariate Shift" (https://arxiv.org/abs/1502.03167).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_lab.errors import InputError

__all__ = ["BatchNormParams", "BatchNormState", "init", "apply", "ghost_apply", "running_stats_error"]


class BatchNormParams(NamedTuple):
    """Learned affine parameters, one per feature: ``y = scale * x_hat + bias``."""

    scale: jax.Array
    bias: jax.Array


class BatchNormState(NamedTuple):
    """Running (exponential moving average) statistics, one per feature.

    ``var`` is the biased variance of the batches, as flax stores it.
    """

    mean: jax.Array
    var: jax.Array


def init(
    num_features: int, dtype: jax.typing.DTypeLike = jnp.float32
) -> tuple[BatchNormParams, BatchNormState]:
    """Parameters ``scale = 1, bias = 0`` and running statistics ``mean = 0, var = 1``.

    Args:
      num_features: size of the last (feature) axis of the inputs.
      dtype: dtype of the parameters. The running statistics are kept in at
        least float32 (as flax keeps them), since they are averages of many steps;
        with a complex dtype the running mean is complex and the variance real.

    Returns:
      ``(params, state)``.

    Raises:
      ValueError: if ``num_features`` is not a positive integer.
    """
    if (
        isinstance(num_features, (bool, np.bool_))
        or not isinstance(num_features, (int, np.integer))
        or num_features < 1
    ):
        raise InputError(f"num_features={num_features!r} is invalid: expected a positive integer")
    stats_dtype = _at_least_float32(dtype)
    params = BatchNormParams(scale=jnp.ones((num_features,), dtype), bias=jnp.zeros((num_features,), dtype))
    state = BatchNormState(
        mean=jnp.zeros((num_features,), stats_dtype),
        var=jnp.ones((num_features,), _real_dtype(stats_dtype)),
    )
    return params, state


def _at_least_float32(dtype) -> np.dtype:
    """float32 for narrower or integer dtypes; float64, complex64 and complex128 as they are."""
    # Not jnp.promote_types: under strict promotion bfloat16 and float32 have no join.
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating) or (
        jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize >= 4
    ):
        return dtype
    return jnp.dtype(jnp.float32)


def _real_dtype(dtype) -> np.dtype:
    """The dtype of the real part: float32 for complex64, the dtype itself for real ones."""
    return jnp.dtype(jnp.finfo(dtype).dtype)


def _abs_sq(x: jax.Array) -> jax.Array:
    """``|x|**2``, real for complex ``x``, computed as flax computes it."""
    if jnp.iscomplexobj(x):
        return jax.lax.square(jax.lax.real(x)) + jax.lax.square(jax.lax.imag(x))
    return jax.lax.square(x)


def _moving_average(old: jax.Array, batch: jax.Array, momentum) -> jax.Array:
    """``momentum * old + (1 - momentum) * batch``, evaluated as flax evaluates it.

    A Python momentum stays a Python number, so ``1 - momentum`` is formed in
    double precision and enters weakly typed: exactly flax's float32 arithmetic.
    A traced momentum (swept under ``vmap``) is an array in the statistics'
    dtype, so its ``1 - momentum`` is rounded there: that can differ from flax
    (which cannot take a traced momentum) in the last bit.
    """
    if isinstance(momentum, numbers.Real):
        return momentum * old + (1 - momentum) * batch
    m = jnp.asarray(momentum).astype(old.dtype)
    return m * old + (1 - m) * batch


def _check_shapes(params, state, x, mask):
    if x.ndim < 2:
        raise InputError(f"x has shape {x.shape}: expected at least 2 dimensions (examples, ..., features)")
    features = x.shape[-1:]
    for name, value in (
        ("params.scale", params.scale),
        ("params.bias", params.bias),
        ("state.mean", state.mean),
        ("state.var", state.var),
    ):
        if jnp.shape(value) != features:
            raise InputError(
                f"{name} has shape {jnp.shape(value)} but x has shape {x.shape}; expected {features}"
            )
    if mask is not None and jnp.shape(mask) not in (x.shape[:1], x.shape[:-1], x.shape[:-1] + (1,)):
        raise InputError(
            f"mask has shape {jnp.shape(mask)} but x has shape {x.shape}; "
            f"expected {x.shape[:1]}, {x.shape[:-1]} or {x.shape[:-1] + (1,)}"
        )
    if jnp.iscomplexobj(x) and not jnp.issubdtype(state.mean.dtype, jnp.complexfloating):
        raise InputError(
            f"x has dtype {x.dtype} but state.mean has dtype {state.mean.dtype}: the running mean "
            f"of complex inputs is complex; expected batchnorm.init(num_features, dtype={x.dtype})"
        )


def _psum(value, axis_name):
    return value if axis_name is None else jax.lax.psum(value, axis_name)


def _batch_stats(x, mask, axis_name):
    """Count, mean and biased variance of the valid rows, over the mapped axis too.

    ``x`` holds zeros in the masked rows.

    The sums and counts are reduced across ``axis_name``, never per-shard means:
    shards with different numbers of valid rows then give exactly the statistics
    of the concatenated batch (averaging per-shard means does not, flax #2417).
    The variance is the mean squared deviation from the global mean (two passes),
    which stays accurate when the mean is large compared with the spread.
    """
    axes = tuple(range(x.ndim - 1))
    zero = jnp.zeros((), x.dtype)
    real = _real_dtype(x.dtype)
    if mask is None:
        count = jnp.asarray(np.prod(x.shape[:-1]), real)
    else:
        count = jnp.sum(mask, dtype=real)
    count = _psum(count, axis_name)
    divisor = jnp.maximum(count, 1)
    mean = _psum(jnp.sum(x, axis=axes), axis_name) / divisor.astype(x.dtype)
    centered = x - mean.reshape((1,) * (x.ndim - 1) + mean.shape)
    if mask is not None:
        centered = jnp.where(mask[..., None], centered, zero)
    var = _psum(jnp.sum(_abs_sq(centered), axis=axes), axis_name) / divisor
    return count, mean, var


def apply(
    params: BatchNormParams,
    state: BatchNormState,
    x: jax.Array,
    *,
    train: bool,
    momentum: jax.typing.ArrayLike = 0.99,
    eps: jax.typing.ArrayLike = 1e-5,
    mask: jax.Array | None = None,
    axis_name: str | None = None,
    stop_gradient_stats: bool = False,
) -> tuple[jax.Array, BatchNormState]:
    """Batch normalization over every axis but the last (the features).

    .. math::

      y = \\gamma \\, \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} + \\beta

    In training, ``mu`` and ``sigma^2`` are the mean and the *biased* variance
    (divided by ``m``, the number of valid rows) of the batch, and the running
    statistics are updated as ``momentum * old + (1 - momentum) * batch``. In
    evaluation, the running statistics are used and returned unchanged.

    The stored variance is the biased one, as flax stores it, so results and
    checkpoints compare with ``flax.linen.BatchNorm``. Ioffe and Szegedy's
    inference (Algorithm 2) uses the unbiased ``m / (m - 1)`` times it instead;
    the difference is below 1% for batches of over 100 rows.

    Statistics are computed in at least float32 (as flax does), also for
    bfloat16 or float16 ``x``; the output has the dtype of ``x``. Complex ``x``
    has a complex mean and the real variance ``mean(|x - mean|**2)``, as
    ``flax.linen.BatchNorm(dtype=complex64)`` computes them; its running mean
    must be complex too (``init(num_features, dtype=jnp.complex64)``).

    The running statistics are updated with flax's float32 arithmetic, so with
    a Python ``momentum`` and the same batch statistics they are flax's bit for
    bit, and so are evaluation-mode outputs from the same statistics. Two
    places can differ in the last bit: a traced ``momentum`` rounds
    ``1 - momentum`` in float32 (flax takes only Python numbers), and the batch
    variance is the two-pass ``mean(|x - mean|**2)`` (flax's
    ``use_fast_variance=False``), where flax's default subtracts the squared
    mean from the mean square, which loses digits when the mean is large.

    Args:
      params: the affine parameters ``gamma`` (``scale``) and ``beta`` (``bias``).
      state: the running statistics.
      x: inputs of shape ``(N, ..., C)``, at least 2-D.
      train: a Python bool: batch statistics (True) or running statistics (False).
      momentum: decay of the running statistics; may be traced (swept under vmap).
      eps: added to the variance before the square root.
      mask: ``None`` or a boolean array of shape ``(N,)`` (per example),
        ``x.shape[:-1]`` (per position) or flax's ``x.shape[:-1] + (1,)``. False rows take no part in the
        statistics; their output is still computed, with the statistics of the
        valid rows. They may hold NaN or inf: ``jnp.where`` keeps them out of the
        statistics, the valid outputs and the gradients. To that end a masked
        row's output sends gradient to its own ``x`` only, not to ``scale``,
        ``bias`` or the statistics (padding must not train the model). With no
        valid row at all, the batch mean and variance are 0 and the running
        statistics are left unchanged.
      axis_name: a mapped axis (``vmap(..., axis_name=)``, ``shard_map``) across
        which the statistics are reduced, as if the batch were concatenated:
        counts, sums and sums of squared deviations are ``psum``-ed, so shards
        with different numbers of valid rows are weighted correctly.
      stop_gradient_stats: treat the batch mean and variance as constants in the
        backward pass. This is the variant Ioffe and Szegedy (section 2) warn
        against: the gradient then ignores that normalization undoes a shift of
        the inputs, so a bias before the layer grows without bound while the
        loss stays the same.

    Returns:
      ``(y, new_state)``: ``y`` with the shape and dtype of ``x``.

    Raises:
      ValueError: if ``x`` has fewer than 2 dimensions, or ``mask``, ``params``
        or ``state`` have shapes that do not fit ``x``.

    References:
      Ioffe and Szegedy, 2015, "Batch Normalization: Accelerating Deep Network
      Training by Reducing Internal Covariate Shift".
    """
    x = jnp.asarray(x)
    _check_shapes(params, state, x, mask)
    compute = _at_least_float32(x.dtype)
    x32 = x.astype(compute)
    if mask is not None:
        mask = jnp.asarray(mask).astype(jnp.bool_)
        if mask.shape == x.shape[:-1] + (1,):  # flax's shape
            mask = mask[..., 0]
        if mask.shape != x.shape[:-1]:
            mask = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - 2)), x.shape[:-1])
        # Zeros in place of masked rows, so NaN there cannot reach any sum or product.
        x_valid = jnp.where(mask[..., None], x32, jnp.zeros((), compute))
    else:
        x_valid = x32

    if train:
        count, mean, var = _batch_stats(x_valid, mask, axis_name)
        if stop_gradient_stats:
            mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
        new_mean = _moving_average(state.mean, mean.astype(state.mean.dtype), momentum)
        new_var = _moving_average(state.var, var.astype(state.var.dtype), momentum)
        has_rows = count > 0
        new_state = BatchNormState(
            mean=jnp.where(has_rows, new_mean, state.mean),
            var=jnp.where(has_rows, new_var, state.var),
        )
    else:
        mean, var = state.mean.astype(compute), state.var
        new_state = state

    def expand(v):
        return v.reshape((1,) * (x.ndim - 1) + v.shape)

    real = _real_dtype(compute)
    # flax's order: rsqrt(var + eps) (real), times the scale, times x - mean.
    scale = params.scale.astype(compute if jnp.iscomplexobj(params.scale) else real)
    inv = jax.lax.rsqrt(var.astype(real) + jnp.asarray(eps).astype(real))
    mean = expand(mean)
    mul = expand((scale * inv.astype(scale.dtype)).astype(compute))
    bias = expand(params.bias.astype(compute))
    y = (x_valid - mean) * mul + bias
    if mask is not None:
        sg = jax.lax.stop_gradient
        y_masked = (x32 - sg(mean)) * sg(mul) + sg(bias)
        y = jnp.where(mask[..., None], y, y_masked)
    return y.astype(x.dtype), new_state


def ghost_apply(
    params: BatchNormParams,
    state: BatchNormState,
    x: jax.Array,
    *,
    ghost_batch_size: int,
    train: bool,
    momentum: jax.typing.ArrayLike = 0.99,
    eps: jax.typing.ArrayLike = 1e-5,
    mask: jax.Array | None = None,
) -> tuple[jax.Array, BatchNormState]:
    """Ghost batch normalization: :func:`apply` with the statistics of each group of
    ``ghost_batch_size`` consecutive examples of the batch.

    In training, the batch ``(N, ..., C)`` is cut into ``N / ghost_batch_size``
    groups, each normalized with its own mean and variance (over its valid rows
    with a ``mask``), and the running statistics move once per call, towards the
    mean over the groups that have valid rows of their statistics:
    ``momentum * old + (1 - momentum) * mean_g(stat_g)``. In evaluation it is
    :func:`apply`. It decouples the statistics' batch from the optimizer's on a
    single device.

    Raises:
      ValueError: if ``ghost_batch_size`` is not a positive divisor of ``N``.

    References:
      Hoffer, Hubara and Soudry, 2017, "Train longer, generalize better: closing the
      generalization gap in large batch training of neural networks", section 4.
    """
    n = x.shape[0]
    if isinstance(ghost_batch_size, bool) or not isinstance(ghost_batch_size, int) or ghost_batch_size < 1:
        raise InputError(f"ghost_batch_size={ghost_batch_size!r} is invalid: expected a positive integer")
    if not train:
        return apply(params, state, x, train=False, momentum=momentum, eps=eps, mask=mask)
    if n % ghost_batch_size:
        raise InputError(
            f"ghost_batch_size={ghost_batch_size} is invalid for a batch of {n} examples: "
            "expected a divisor of it"
        )
    groups = n // ghost_batch_size
    xg = x.reshape((groups, ghost_batch_size) + x.shape[1:])
    mg = None if mask is None else jnp.asarray(mask).reshape((groups, ghost_batch_size) + jnp.shape(mask)[1:])

    def one(xi, mi):
        return apply(params, state, xi, train=True, momentum=momentum, eps=eps, mask=mi)

    y, per_group = jax.vmap(one)(xg, mg) if mg is not None else jax.vmap(lambda xi: one(xi, None))(xg)
    # A group without valid rows left the running statistics as they were: average the others.
    has_rows = jnp.ones((groups,), jnp.bool_) if mg is None else jnp.any(mg.reshape(groups, -1), axis=1)
    weight = has_rows.astype(jnp.float32) / jnp.maximum(jnp.sum(has_rows.astype(jnp.float32)), 1.0)

    def average(stacked, old):
        w = weight.reshape((groups,) + (1,) * old.ndim).astype(stacked.dtype)
        return jnp.where(jnp.any(has_rows), jnp.sum(w * stacked, axis=0), old)

    new_state = BatchNormState(
        mean=average(per_group.mean, state.mean), var=average(per_group.var, state.var)
    )
    return y.reshape(x.shape), new_state


def running_stats_error(running: BatchNormState, reference: BatchNormState):
    """How far running statistics are from reference ones, in units of the reference spread.

    ::

      mean_error = sqrt(mean_j ((running.mean_j - ref.mean_j)² / ref.var_j))
      var_error  = sqrt(mean_j (log(running.var_j / ref.var_j))²)

    Args:
      running: running statistics, leaves ``(..., features)``.
      reference: the statistics to compare with (same shape).

    Returns:
      ``(mean_error, var_error)``, reduced over the last axis.
    """
    z = (running.mean - reference.mean) / jnp.sqrt(reference.var)
    log_ratio = jnp.log(running.var / reference.var)
    return jnp.sqrt(jnp.mean(jnp.square(z), axis=-1)), jnp.sqrt(jnp.mean(jnp.square(log_ratio), axis=-1))
