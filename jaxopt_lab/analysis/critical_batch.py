"""The critical batch size: where doubling the batch stops halving the steps to a target.

Two estimators of one quantity, from steps to a target at several batch sizes:

* :func:`fit_critical_batch_size` fits McCandlish et al.'s model
  ``S(B) = S_min (1 + B_crit / B)`` (least squares in ``log S``);
* :func:`crossing_batch_size` is model-free: the batch size where the steps
  reach ``factor`` times the perfect-scaling extrapolation from the smallest
  batch, which for that model and ``factor = 2`` is ``B_crit + 2 B_0``.

References:
  McCandlish, Kaplan, Amodei and OpenAI Dota Team, *An Empirical Model of
  Large-Batch Training*, 2018 (arXiv:1812.06162).
  Zhang et al., *Which Algorithmic Choices Matter at Which Batch Sizes?*,
  NeurIPS 2019 (arXiv:1907.04164).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from jaxopt_lab.errors import InputError

__all__ = ["CriticalBatchFit", "fit_critical_batch_size", "crossing_batch_size"]


class CriticalBatchFit(NamedTuple):
    """The fit of ``S(B) = S_min (1 + B_crit / B)``.

    Attributes:
      s_min: steps to target with an infinite batch.
      b_crit: the critical batch size, where ``S = 2 S_min`` and ``E = 2 E_min``.
      e_min: examples to target with a batch of one, ``S_min · B_crit``.
      rms_log_residual: root mean square of ``log S - log S_fit``.
    """

    s_min: float
    b_crit: float
    e_min: float
    rms_log_residual: float


def _profile(log_b_crit: float, batch: np.ndarray, log_steps: np.ndarray):
    """Best ``log S_min`` for a given ``B_crit`` and the squared residual it leaves."""
    shape = np.log1p(np.exp(log_b_crit) / batch)
    log_s_min = np.mean(log_steps - shape)
    return log_s_min, float(np.sum(np.square(log_steps - shape - log_s_min)))


def fit_critical_batch_size(batch_sizes, steps) -> CriticalBatchFit:
    """Fit ``S(B) = S_min (1 + B_crit / B)`` to steps-to-target by least squares in ``log S``.

    Equivalently ``E(B) = E_min (1 + B / B_crit)`` in examples, ``E_min = S_min
    B_crit``. Relative errors are what matter across batch sizes, so the fit
    minimizes ``Σ (log S_i - log S_min - log(1 + B_crit / B_i))²``: for a fixed
    ``B_crit`` the best ``log S_min`` is the mean residual, and ``log B_crit``
    is found by a grid search refined by golden-section search, within
    ``[min B / 10⁴, max B · 10⁴]``.

    Args:
      batch_sizes: batch sizes, at least two distinct ones.
      steps: steps to target at each batch size; non-finite entries are ignored.

    Returns:
      A :class:`CriticalBatchFit`.

    References:
      McCandlish et al., *An Empirical Model of Large-Batch Training*, 2018
      (arXiv:1812.06162), equation 2.11.
    """
    batch = np.asarray(batch_sizes, np.float64)
    steps = np.asarray(steps, np.float64)
    if batch.shape != steps.shape or batch.ndim != 1:
        raise InputError(
            f"batch_sizes and steps must be 1-D of the same length, got shapes {batch.shape} "
            f"and {steps.shape}"
        )
    if np.any(~(batch > 0)):
        raise InputError(f"batch_sizes={batch.tolist()} is invalid: expected positive numbers")
    ok = np.isfinite(steps) & (steps > 0)
    batch, log_steps = batch[ok], np.log(steps[ok])
    if np.unique(batch).size < 2:
        raise InputError(
            f"need finite positive steps at two distinct batch sizes or more, got {int(ok.sum())} point(s)"
        )
    lo, hi = math.log(batch.min()) - 4 * math.log(10), math.log(batch.max()) + 4 * math.log(10)
    grid = np.linspace(lo, hi, 801)
    losses = [_profile(g, batch, log_steps)[1] for g in grid]
    i = int(np.argmin(losses))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(100):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if _profile(c, batch, log_steps)[1] <= _profile(d, batch, log_steps)[1]:
            b = d
        else:
            a = c
    log_b_crit = (a + b) / 2
    log_s_min, sq = _profile(log_b_crit, batch, log_steps)
    s_min, b_crit = math.exp(log_s_min), math.exp(log_b_crit)
    return CriticalBatchFit(s_min, b_crit, s_min * b_crit, math.sqrt(sq / batch.size))


def crossing_batch_size(batch_sizes, steps, factor: float = 2.0) -> float:
    r"""Batch size at which steps-to-target is ``factor`` × the perfect-scaling extrapolation.

    Perfect scaling from the smallest batch size :math:`B_0` predicts
    :math:`S(B) = S(B_0) B_0 / B`; the critical batch size is the :math:`B`
    where the measured :math:`S(B)` first reaches ``factor`` times that, i.e.
    where :math:`S(B) B / (S(B_0) B_0)` crosses ``factor``, interpolated
    linearly in :math:`\log B` between the grid points. For
    :math:`S = S_{min} (1 + B_{crit} / B)` (McCandlish et al., 2018) with
    :math:`B_0 \ll B_{crit}` and ``factor = 2`` this is :math:`B_{crit} + 2 B_0`,
    so it estimates the :func:`fit_critical_batch_size`'s ``b_crit`` without a model.

    Args:
      batch_sizes: increasing, shape ``(n,)``.
      steps: steps to target at each batch size, shape ``(n,)``; ``inf`` (not
        reached) counts as above any factor, and a crossing into ``inf`` is
        put at the last finite batch size (a lower bound). ``steps[0]`` must be
        finite.
      factor: the excess over perfect scaling that defines "critical" (> 1).

    Returns:
      The critical batch size; ``inf`` if the ratio stays below ``factor``.

    Raises:
      ValueError: on shapes that do not fit, non-increasing batch sizes,
        ``factor <= 1`` or a non-finite ``steps[0]``.
    """
    b = np.asarray(batch_sizes, np.float64)
    s = np.asarray(steps, np.float64)
    if b.ndim != 1 or s.shape != b.shape or b.size < 2 or np.any(np.diff(b) <= 0):
        raise InputError(
            f"batch_sizes {b.shape} and steps {s.shape}: expected two 1-D arrays of the same "
            "length >= 2 with increasing batch sizes"
        )
    if not factor > 1:
        raise InputError(f"factor={factor} is invalid: expected factor > 1")
    if not np.isfinite(s[0]) or s[0] <= 0:
        raise InputError(f"steps[0]={s[0]} is invalid: the smallest batch size must reach the target")
    ratio = s * b / (s[0] * b[0])
    above = np.flatnonzero(ratio >= factor)
    if above.size == 0:
        return float("inf")
    i = int(above[0])
    if i == 0:
        return float(b[0])
    frac = (factor - ratio[i - 1]) / (ratio[i] - ratio[i - 1])
    return float(np.exp(np.log(b[i - 1]) + frac * (np.log(b[i]) - np.log(b[i - 1]))))
