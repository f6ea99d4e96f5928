"""Estimators on a trained state: the gradient noise scale and the Hessian's sharpness.

Every measurement is a pure function of arrays: no Python control flow on
traced values, loops are ``lax.fori_loop``/``lax.scan``. So each one runs on a
single state and, under ``jax.vmap``, over the stacked states of a sweep.

* **Gradient noise scale** (McCandlish et al., 2018). With ``G`` the true
  gradient and ``Σ`` the covariance of per-example gradients, the simple noise
  scale is ``B_simple = tr(Σ) / |G|²``: the batch size at which the noise of a
  minibatch gradient is as large as its signal. Two estimators:

  - from per-example gradients (:func:`per_example_grads`,
    :func:`noise_scale_from_per_example`, and the one-liner :func:`noise_scale`);
  - from the squared norms of two minibatch gradients at batch sizes
    ``B_small < B_big`` (:func:`noise_scale_two_batch`, and
    :func:`gradient_noise_scale` which samples the batches), the estimator of
    the paper's appendix A, which needs only ordinary batch gradients.

* **Sharpness**: :func:`hessian_top_eigenvalue`, power iteration on
  Hessian-vector products, never forming the Hessian.

The first point at which a curve reaches a target is :mod:`jaxopt_lab.measure.targets`'.

References:
  McCandlish, Kaplan, Amodei and the OpenAI Dota Team, *An Empirical Model of
  Large-Batch Training*, 2018 (arXiv:1812.06162).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxopt_lab.errors import InputError

__all__ = [
    "NoiseScaleEstimate",
    "HessianEigen",
    "per_example_grads",
    "example_loss",
    "noise_scale_from_per_example",
    "noise_scale",
    "noise_scale_two_batch",
    "two_batch_estimate",
    "gradient_noise_scale",
    "hessian_top_eigenvalue",
    "power_iteration",
]


# ------------------------------------------------------------ noise scale


class NoiseScaleEstimate(NamedTuple):
    """An estimate of the simple gradient noise scale and its two parts.

    Attributes:
      b_simple: ``trace_cov / grad_sq_norm``, the simple noise scale ``B_simple``.
      trace_cov: estimate of ``tr(Σ)``, the trace of the per-example gradient
        covariance (the sum of the per-parameter variances).
      grad_sq_norm: unbiased estimate of ``|G|²``, the squared norm of the true
        gradient. It can come out zero or negative when the gradient is below
        the noise floor of the sample; ``b_simple`` is then meaningless and more
        examples (or draws) are needed.
    """

    b_simple: jax.Array
    trace_cov: jax.Array
    grad_sq_norm: jax.Array


def per_example_grads(loss_fn: Callable[[Any, Any], jax.Array], params, batch):
    """Gradients of ``loss_fn`` at ``params`` for each example of ``batch``.

    ``jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, batch)``.

    Args:
      loss_fn: ``loss_fn(params, example) -> scalar``, where ``example`` is a
        pytree of arrays *without* a batch axis (e.g. ``(x_i, y_i)``). A loss
        written for batches can be adapted with :func:`example_loss`.
      params: parameter pytree.
      batch: pytree of arrays whose leading axis indexes examples.

    Returns:
      A pytree shaped like ``params`` with a leading example axis.
    """
    return jax.vmap(jax.grad(loss_fn), in_axes=(None, 0))(params, batch)


def example_loss(batch_loss_fn: Callable[[Any, Any], jax.Array]) -> Callable[[Any, Any], jax.Array]:
    """Turns a loss over a batch into a loss over one example, for :func:`per_example_grads`.

    The example gets a batch axis of length one, so a model that expects
    batches (as those of ``jaxopt_lab.nn.models`` do) can be used unchanged. With
    batch normalization, evaluate it in inference mode (``train=False``): the
    statistics of a batch of one are not those of training.

    Args:
      batch_loss_fn: ``batch_loss_fn(params, batch) -> scalar``, the mean loss
        over a batch whose leaves have a leading example axis.

    Returns:
      ``loss_fn(params, example) -> scalar``.
    """

    def loss_fn(params, example):
        return batch_loss_fn(params, jax.tree.map(lambda a: jnp.expand_dims(a, 0), example))

    return loss_fn


def _tree_sum(tree) -> jax.Array:
    return jax.tree.reduce(operator.add, tree)


def _sq_norm(tree, *, leading_axes: int = 0) -> jax.Array:
    """Sum of squares over all leaves, keeping the first ``leading_axes`` axes."""
    return _tree_sum(
        jax.tree.map(lambda a: jnp.sum(jnp.square(a), axis=tuple(range(leading_axes, a.ndim))), tree)
    )


def _num_examples(grads, name: str) -> int:
    leaves = jax.tree.leaves(grads)
    if not leaves:
        raise InputError(f"{name} must have at least one array leaf, got {grads!r}")
    sizes = {np.shape(a)[0] if np.ndim(a) else None for a in leaves}
    if len(sizes) != 1 or None in sizes:
        raise InputError(
            f"{name} leaves must share a leading example axis, got leading sizes {sorted(sizes, key=str)}"
        )
    (n,) = sizes
    if n < 2:
        raise InputError(f"{name} needs at least 2 examples to estimate a variance, got {n}")
    return n


def _from_moments(n, mean, sum_sq_dev, population_size=None) -> NoiseScaleEstimate:
    """NoiseScaleEstimate from ``n`` examples' mean gradient and summed squared deviations; of a
    population of ``population_size`` examples they were drawn from without replacement
    (``None``: an infinite one)."""
    if population_size is not None and not (
        isinstance(population_size, (int, np.integer))
        and not isinstance(population_size, bool)
        and population_size >= n
    ):
        raise InputError(f"population_size={population_size!r} is invalid: expected an integer >= n = {n}")
    s2 = sum_sq_dev / (n - 1)
    if population_size is None:
        # E|mean|² = |G|² + tr(Σ)/n, so subtracting the unbiased tr(Σ)/n makes |G|² unbiased.
        trace_cov, grad_sq_norm = s2, _sq_norm(mean) - s2 / n
    else:  # E s² = N/(N-1) tr(Σ), E|mean|² = |G|² + tr(Σ)(N-n)/(n(N-1)); n = N: |G|² = |mean|²
        total = population_size
        trace_cov = s2 * (total - 1) / total
        grad_sq_norm = _sq_norm(mean) - s2 * (total - n) / (n * total)
    return NoiseScaleEstimate(trace_cov / grad_sq_norm, trace_cov, grad_sq_norm)


def noise_scale_from_per_example(grads, *, population_size: int | None = None) -> NoiseScaleEstimate:
    """Gradient noise scale from per-example gradients.

    With ``g_1 … g_n`` the per-example gradients (flattened over all leaves) and
    ``ḡ`` their mean::

      tr(Σ) ≈ Σ_i |g_i - ḡ|² / (n - 1)        (unbiased per-parameter variances, summed)
      |G|²  ≈ |ḡ|² - tr(Σ)/n                  (unbiased: E|ḡ|² = |G|² + tr(Σ)/n)
      B_simple = tr(Σ) / |G|²

    Both parts are unbiased; their ratio, like any ratio of estimates, is not
    exactly, and the ``|G|²`` estimate is noisy when ``n`` is small next to
    ``B_simple``.

    Args:
      grads: pytree of per-example gradients with a leading example axis of
        length ``n >= 2`` (as returned by :func:`per_example_grads`).
      population_size: the size of the set the ``n`` examples were drawn from
        without replacement, as in :func:`noise_scale`; ``None``: an infinite one.

    Returns:
      A :class:`NoiseScaleEstimate`.

    References:
      McCandlish et al., *An Empirical Model of Large-Batch Training*, 2018
      (arXiv:1812.06162), section 2.2.
    """
    n = _num_examples(grads, "grads")
    mean = jax.tree.map(lambda g: jnp.mean(g, axis=0, keepdims=True), grads)
    sum_sq_dev = _tree_sum(jax.tree.map(lambda g, m: jnp.sum(jnp.square(g - m)), grads, mean))
    return _from_moments(n, mean, sum_sq_dev, population_size)


def noise_scale(
    loss_fn: Callable[[Any, Any], jax.Array],
    params,
    batch,
    *,
    chunk_size: int | None = None,
    population_size: int | None = None,
) -> NoiseScaleEstimate:
    """Gradient noise scale at ``params`` from the per-example gradients over ``batch``.

    :func:`per_example_grads` followed by :func:`noise_scale_from_per_example`.
    With ``chunk_size``, the per-example gradients are computed ``chunk_size``
    examples at a time under ``lax.scan`` and their mean and squared deviations
    merged chunk by chunk (Chan et al.'s pairwise update, which stays accurate
    in float32 where summing squares would not), so memory holds one chunk's
    gradients instead of the whole batch's.

    Example::

      def loss(params, example):                 # one example, no batch axis
          x, y = example
          return 0.5 * (x @ params - y) ** 2

      ns = metrics.noise_scale(loss, w, (x, y))  # ns.b_simple, ns.trace_cov, ns.grad_sq_norm

    Args:
      loss_fn: ``loss_fn(params, example) -> scalar`` (see :func:`per_example_grads`
        and :func:`example_loss`).
      params: parameter pytree.
      batch: pytree (e.g. a tuple ``(x, y)``) of arrays with a leading example
        axis of length ``n >= 2``.
      chunk_size: examples per chunk (the last chunk holds the remainder of
        ``n``). ``None`` computes all per-example gradients at once.
      population_size: ``N``, when ``batch`` is ``n`` examples drawn without
        replacement from a set of ``N`` (a training set whose minibatches are drawn
        the same way): the estimates are then those of that set's ``G`` and
        ``Σ``, ``tr(Σ) ≈ s² (N-1)/N`` and ``|G|² ≈ |ḡ|² - s² (N-n)/(nN)``, exact
        when ``n = N``. ``None``: a sample of an infinite population (above).

    Returns:
      A :class:`NoiseScaleEstimate`.

    References:
      Chan, Golub and LeVeque, *Updating Formulae and a Pairwise Algorithm for
      Computing Sample Variances*, 1979.
    """
    n = _num_examples(batch, "batch")
    if chunk_size is None:
        grads = per_example_grads(loss_fn, params, batch)
        return noise_scale_from_per_example(grads, population_size=population_size)
    if not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise InputError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    num_full = n // chunk_size
    full = jax.tree.map(
        lambda a: jnp.reshape(a[: num_full * chunk_size], (num_full, chunk_size) + a.shape[1:]), batch
    )
    zeros = jax.tree.map(jnp.zeros_like, params)
    zero = jnp.zeros((), _sq_norm(zeros).dtype)
    moments, _ = jax.lax.scan(
        lambda m, chunk: (_merge_chunk(loss_fn, params, m, chunk), None), _Moments(zero, zeros, zero), full
    )
    if n % chunk_size:
        rest = jax.tree.map(lambda a: a[num_full * chunk_size :], batch)
        moments = _merge_chunk(loss_fn, params, moments, rest)
    return _from_moments(n, moments.mean, moments.sum_sq_dev, population_size)


class _Moments(NamedTuple):
    """Running moments of per-example gradients: count, mean, and summed squared deviations."""

    count: jax.Array
    mean: Any
    sum_sq_dev: jax.Array


def _merge_chunk(loss_fn, params, moments: _Moments, chunk) -> _Moments:
    """Folds a chunk of examples into the moments (Chan et al.'s pairwise update)."""
    size = jax.tree.leaves(chunk)[0].shape[0]
    grads = per_example_grads(loss_fn, params, chunk)
    chunk_mean = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    chunk_ssd = _tree_sum(jax.tree.map(lambda g, m: jnp.sum(jnp.square(g - m[None])), grads, chunk_mean))
    delta = jax.tree.map(operator.sub, chunk_mean, moments.mean)
    total = moments.count + size
    mean = jax.tree.map(lambda m, d: m + d * (size / total), moments.mean, delta)
    sum_sq_dev = moments.sum_sq_dev + chunk_ssd + _sq_norm(delta) * (moments.count * size / total)
    return _Moments(total, mean, sum_sq_dev)


def _check_batch_sizes(b_small, b_big):
    # Only concrete sizes can be checked; traced ones are the caller's business.
    if isinstance(b_small, (int, float, np.number)) and isinstance(b_big, (int, float, np.number)):
        if not 0 < b_small < b_big:
            raise InputError(
                f"batch sizes must satisfy 0 < b_small < b_big, got b_small={b_small}, b_big={b_big}"
            )


def two_batch_estimate(sq_small, sq_big, b_small, b_big) -> NoiseScaleEstimate:
    """The two-batch estimates from the squared norms ``|G_small|²`` and ``|G_big|²`` of
    minibatch mean gradients at batch sizes ``b_small < b_big`` (see
    :func:`noise_scale_two_batch`); every argument may be traced."""
    dtype = sq_small.dtype
    b_small = jnp.asarray(b_small, dtype)
    b_big = jnp.asarray(b_big, dtype)
    grad_sq_norm = (b_big * sq_big - b_small * sq_small) / (b_big - b_small)
    trace_cov = (sq_small - sq_big) / (1 / b_small - 1 / b_big)
    return NoiseScaleEstimate(trace_cov / grad_sq_norm, trace_cov, grad_sq_norm)


def noise_scale_two_batch(
    grad_small, grad_big, b_small, b_big, *, draw_axis: bool = False
) -> NoiseScaleEstimate:
    """Gradient noise scale from minibatch gradients at two batch sizes.

    A minibatch gradient ``G_B``, the mean of ``B`` i.i.d. per-example gradients,
    has ``E|G_B|² = |G|² + tr(Σ)/B``. Two batch sizes ``B_small < B_big`` give
    two equations, solved for unbiased estimates::

      |G|²  ≈ (B_big |G_big|² - B_small |G_small|²) / (B_big - B_small)
      tr(Σ) ≈ (|G_small|² - |G_big|²) / (1/B_small - 1/B_big)
      B_simple = tr(Σ) / |G|²

    One pair of gradients gives a very noisy estimate. As the paper recommends,
    pass several independent draws with ``draw_axis=True``: the squared norms
    are averaged over the draws before the formulas are applied, so numerator
    and denominator are averaged separately and ``B_simple`` is the ratio of
    the averages, not the average of noisy ratios.

    Args:
      grad_small: gradient pytree, the mean gradient over ``b_small`` examples
        (with a leading draw axis on every leaf when ``draw_axis``).
      grad_big: the same over ``b_big`` examples.
      b_small: the smaller batch size (may be traced).
      b_big: the larger batch size (may be traced).
      draw_axis: whether the leaves of both gradients have a leading axis of
        independent draws to average over.

    Returns:
      A :class:`NoiseScaleEstimate`.

    References:
      McCandlish et al., *An Empirical Model of Large-Batch Training*, 2018
      (arXiv:1812.06162), appendix A.1.
    """
    _check_batch_sizes(b_small, b_big)
    leading = 1 if draw_axis else 0
    sq_small = _sq_norm(grad_small, leading_axes=leading)
    sq_big = _sq_norm(grad_big, leading_axes=leading)
    if draw_axis:
        sq_small, sq_big = jnp.mean(sq_small), jnp.mean(sq_big)
    return two_batch_estimate(sq_small, sq_big, b_small, b_big)


def gradient_noise_scale(
    loss_fn: Callable[[Any, Any], jax.Array],
    params,
    data,
    key: jax.Array,
    *,
    b_small: int,
    b_big: int,
    num_draws: int,
) -> NoiseScaleEstimate:
    """Two-batch estimate of the gradient noise scale from batches sampled out of ``data``.

    Each of ``num_draws`` draws samples a batch of ``b_small`` and an
    independent batch of ``b_big`` examples, uniformly *with replacement*, so
    the examples are i.i.d. draws from the dataset and ``E|G_B|² = |G|² +
    tr(Σ)/B`` holds exactly with ``G`` and ``Σ`` the dataset's mean gradient
    and (population) per-example gradient covariance. The squared norms of the
    two batch gradients are averaged over the draws (under ``lax.scan``, one
    draw in memory at a time) and combined as in :func:`noise_scale_two_batch`.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``, the *mean* loss over a
        batch whose leaves have a leading example axis.
      params: parameter pytree.
      data: pytree (e.g. ``(x, y)``) of arrays with a leading example axis.
      key: PRNG key for the batch indices.
      b_small: the smaller batch size, ``>= 1``.
      b_big: the larger batch size, ``> b_small``.
      num_draws: number of independent pairs of batches, ``>= 1``.

    Returns:
      A :class:`NoiseScaleEstimate`.

    References:
      McCandlish et al., *An Empirical Model of Large-Batch Training*, 2018
      (arXiv:1812.06162), appendix A.1.
    """
    for name, value in (("b_small", b_small), ("b_big", b_big), ("num_draws", num_draws)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be a positive int, got {value!r}")
    _check_batch_sizes(b_small, b_big)
    num_examples = jax.tree.leaves(data)[0].shape[0]
    grad_fn = jax.grad(loss_fn)

    def batch_sq_norm(key, size):
        idx = jax.random.randint(key, (size,), 0, num_examples)
        return _sq_norm(grad_fn(params, jax.tree.map(lambda a: a[idx], data)))

    def draw(carry, key):
        key_small, key_big = jax.random.split(key)
        sq = (batch_sq_norm(key_small, b_small), batch_sq_norm(key_big, b_big))
        return jax.tree.map(operator.add, carry, sq), None

    zero = jnp.zeros((), _sq_norm(params).dtype)
    (sum_small, sum_big), _ = jax.lax.scan(draw, (zero, zero), jax.random.split(key, num_draws))
    return two_batch_estimate(sum_small / num_draws, sum_big / num_draws, b_small, b_big)


# ------------------------------------------------------------- sharpness


class HessianEigen(NamedTuple):
    """An eigenpair of the Hessian found by power iteration.

    Attributes:
      eigenvalue: the Rayleigh quotient ``vᵀHv`` at the final unit vector ``v``,
        an eigenvalue of ``H`` itself (whatever the shift).
      eigenvector: ``v``, a unit vector shaped like ``params`` (its sign is arbitrary).
      residual: ``|Hv - eigenvalue·v|``; small next to ``|eigenvalue|`` when the
        iteration has converged.
    """

    eigenvalue: jax.Array
    eigenvector: Any
    residual: jax.Array


def hessian_top_eigenvalue(
    loss_fn: Callable[[Any], jax.Array],
    params,
    *,
    num_iters: int = 20,
    key: jax.Array | None = None,
    shift: jax.typing.ArrayLike = 0.0,
) -> HessianEigen:
    """Top Hessian eigenvalue of ``loss_fn`` at ``params`` by power iteration on Hessian-vector products.

    Iterates ``v ← (H - shift·I) v / |(H - shift·I) v|`` from a random unit
    vector, with ``Hv`` by forward-over-reverse differentiation
    (``jax.linearize`` of ``jax.grad``: the forward pass and its residuals are
    computed once and reused by every product), never forming ``H``.

    Power iteration finds the eigenvalue of **largest magnitude** of
    ``H - shift·I``. With ``shift=0`` that is the sharpness ``λ_max`` when the
    Hessian is positive semi-definite or its positive end dominates, but a
    negative eigenvalue if the most negative one is larger in magnitude. For
    the largest *algebraic* eigenvalue, pass any ``shift < (λ_min + λ_max)/2``;
    e.g. run once with ``shift=0`` and, if the result ``λ`` is negative, run
    again with ``shift=λ`` (then ``H - λI`` is positive semi-definite). The
    returned eigenvalue is always that of ``H``.

    Convergence is geometric with ratio ``|λ_2 - shift| / |λ_1 - shift|``, where
    ``λ_1`` and ``λ_2`` are the eigenvalues farthest and second farthest from
    ``shift``; check ``residual`` and raise ``num_iters`` when they are close.

    Example::

      sharpness = hessian_top_eigenvalue(lambda p: loss(p, x, y), params, num_iters=50).eigenvalue

    Args:
      loss_fn: ``loss_fn(params) -> scalar`` (close over the data).
      params: parameter pytree of floating arrays.
      num_iters: number of power iterations (Hessian-vector products: one more).
      key: PRNG key for the starting vector; ``None`` uses ``jax.random.key(0)``.
      shift: the shift of the iterated matrix (may be traced).

    Returns:
      A :class:`HessianEigen` ``(eigenvalue, eigenvector, residual)``.
    """
    if not isinstance(num_iters, (int, np.integer)) or num_iters < 1:
        raise InputError(f"num_iters must be a positive int, got {num_iters!r}")
    flat, unravel = ravel_pytree(params)
    _, hvp = jax.linearize(jax.grad(lambda p: loss_fn(unravel(p))), flat)
    key = jax.random.key(0) if key is None else key
    v0 = jax.random.normal(key, flat.shape, flat.dtype)
    eigenvalue, v, residual = power_iteration(hvp, v0 / jnp.linalg.norm(v0), num_iters, shift=shift)
    return HessianEigen(eigenvalue, unravel(v), residual)


def power_iteration(hvp: Callable[[jax.Array], jax.Array], v: jax.Array, num_iters, *, shift=0.0):
    """``num_iters`` steps of ``v <- (H - shift·I) v / |(H - shift·I) v|`` from the unit vector ``v``.

    ``hvp(v) = H v`` on flat vectors. ``num_iters`` may be traced (the loop is a
    ``fori_loop``), so one compiled program serves a cold start with many iterations
    and warm starts with few. A zero product (a zero Hessian) keeps the previous
    vector instead of producing NaN.

    Returns:
      ``(eigenvalue, v, residual)``: the Rayleigh quotient ``vᵀHv`` of the final unit
      vector (an eigenvalue of ``H`` itself, whatever the shift), ``v``, and
      ``|Hv - eigenvalue·v|``.
    """
    shift = jnp.asarray(shift, v.dtype)

    def body(_, v):
        hv = hvp(v) - shift * v
        norm = jnp.linalg.norm(hv)
        return jnp.where(norm > 0, hv / jnp.where(norm > 0, norm, 1), v)

    v = jax.lax.fori_loop(0, num_iters, body, v)
    hv = hvp(v)
    eigenvalue = jnp.vdot(v, hv)
    return eigenvalue, v, jnp.linalg.norm(hv - eigenvalue * v)


# -------------------------------------------------------- steps to target
