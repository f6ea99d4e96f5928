"""Tests for jaxopt_lab.nn.batchnorm against flax.linen.BatchNorm and float64 NumPy.

Inputs, parameters and running statistics are drawn away from their defaults
(non-unit scales, nonzero biases and means), so a wiring mistake shows.
"""

import contextlib
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from jaxopt_lab.nn import batchnorm
from jaxopt_lab.nn.batchnorm import BatchNormParams, BatchNormState

C = 3


@contextlib.contextmanager
def _reference_promotion():
    """flax itself relies on implicit rank/dtype promotion; allow it for reference calls."""
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        yield


def _f32(a):
    return jnp.asarray(a, jnp.float32)


def _random_params_state(rng):
    params = BatchNormParams(scale=_f32(rng.uniform(0.5, 2.0, C)), bias=_f32(rng.normal(size=C)))
    state = BatchNormState(mean=_f32(rng.normal(size=C)), var=_f32(rng.uniform(0.5, 2.0, C)))
    return params, state


def _hand_stats(x, mask):
    """Mean and biased variance per feature of the valid rows, in float64 NumPy."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim - 1))
    where = np.broadcast_to(np.asarray(mask)[..., None], x.shape)
    return x.mean(axis=axes, where=where), x.var(axis=axes, where=where)


def _hand_forward(params, x, mean, var, eps):
    p = [np.asarray(v, np.float64) for v in params]
    return (np.asarray(x, np.float64) - mean) / np.sqrt(var + eps) * p[0] + p[1]


def _expand_mask(mask, x):
    """An example mask, broadcast to ``x.shape[:-1]`` (a mask of that shape is returned as is)."""
    mask = np.asarray(mask, bool)
    return np.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - 1 - mask.ndim)), x.shape[:-1])


def test_init_values_and_dtypes():
    params, state = batchnorm.init(4)
    np.testing.assert_array_equal(params.scale, np.ones(4))
    np.testing.assert_array_equal(params.bias, np.zeros(4))
    np.testing.assert_array_equal(state.mean, np.zeros(4))
    np.testing.assert_array_equal(state.var, np.ones(4))
    assert isinstance(params, BatchNormParams) and isinstance(state, BatchNormState)
    params, state = batchnorm.init(2, jnp.bfloat16)
    assert params.scale.dtype == jnp.bfloat16 and params.bias.dtype == jnp.bfloat16
    # Running averages over many steps are kept in float32, as flax keeps them.
    assert state.mean.dtype == jnp.float32 and state.var.dtype == jnp.float32


# ----------------------------------------------------------------- flax


_MOMENTUM, _EPS = 0.9, 1e-3


@functools.partial(jax.jit, static_argnames=("train", "masked"))
def _ours_and_flax(params, state, x, w, mask, *, train, masked):
    """Outputs, new statistics and gradients (x, scale, bias) of ours and of flax.

    The loss is ``sum(w * y)`` over the valid positions, so the gradients depend
    on the backward pass through the statistics.
    """
    valid = mask[..., None]
    ours_mask = mask if masked else None

    def ours(p, x):
        y, new = batchnorm.apply(p, state, x, train=train, momentum=_MOMENTUM, eps=_EPS, mask=ours_mask)
        return jnp.sum(jnp.where(valid, w * y, 0.0)), (y, new)

    module = nn.BatchNorm(use_running_average=not train, momentum=_MOMENTUM, epsilon=_EPS)
    variables_stats = {"mean": state.mean, "var": state.var}

    def theirs(p, x):
        variables = {"params": {"scale": p.scale, "bias": p.bias}, "batch_stats": variables_stats}
        with _reference_promotion():
            y, updates = module.apply(variables, x, mask=valid if masked else None, mutable=["batch_stats"])
        new = updates["batch_stats"] if train else variables_stats
        return jnp.sum(jnp.where(valid, w * y, 0.0)), (y, BatchNormState(new["mean"], new["var"]))

    grad = functools.partial(jax.grad, argnums=(0, 1), has_aux=True)
    return grad(ours)(params, x), grad(theirs)(params, x)


@pytest.mark.parametrize("shape", [(8, C), (4, 5, C)], ids=["2d", "3d"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_matches_flax_batchnorm(shape, train, masked):
    rng = np.random.default_rng(0)
    params, state = _random_params_state(rng)
    x = _f32(rng.normal(2.0, 1.5, size=shape))
    w = _f32(rng.normal(size=shape))
    # Per-position mask for 3-D inputs: flax takes any mask broadcastable to x.
    mask = jnp.asarray(rng.uniform(size=shape[:-1]) < 0.6) if masked else jnp.ones(shape[:-1], bool)
    if masked:
        mask = mask.at[(0,) * (len(shape) - 1)].set(True).at[(1,) * (len(shape) - 1)].set(True)
    ours, theirs = _ours_and_flax(params, state, x, w, mask, train=train, masked=masked)
    (g_params, g_x), (y, new_state) = ours
    (t_params, t_x), (ty, t_state) = theirs
    np.testing.assert_allclose(y, ty, rtol=1e-5, atol=1e-5)
    for a, b in zip(new_state, t_state, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_params, t_params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_x, t_x, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------- masks and NaN


_apply_train = jax.jit(
    functools.partial(batchnorm.apply, train=True, momentum=0.9, eps=1e-5),
)


@pytest.mark.parametrize(
    "shape, per_position",
    [((6, C), False), ((5, 4, C), False), ((5, 4, C), True)],
    ids=["2d", "3d-examples", "3d-positions"],
)
def test_masked_rows_hold_nan_statistics_by_hand(shape, per_position):
    """flax's own check: NaN in masked rows, statistics ``m*old + (1-m)*x.var(where=mask)``."""
    rng = np.random.default_rng(1)
    params, state = _random_params_state(rng)
    x = rng.normal(1.0, 2.0, size=shape)
    mask = rng.uniform(size=shape[:-1] if per_position else shape[:1]) < 0.5
    mask[0] = True
    full = _expand_mask(mask, x)
    x[~full] = np.nan
    y, new_state = _apply_train(params, state, _f32(x), mask=jnp.asarray(mask))
    mean, var = _hand_stats(x, full)
    np.testing.assert_allclose(
        new_state.mean, 0.9 * np.asarray(state.mean, np.float64) + 0.1 * mean, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        new_state.var, 0.9 * np.asarray(state.var, np.float64) + 0.1 * var, rtol=1e-5, atol=1e-6
    )
    expected = _hand_forward(params, x, mean, var, 1e-5)
    np.testing.assert_allclose(np.asarray(y)[full], expected[full], rtol=1e-5, atol=1e-5)
    assert np.isnan(np.asarray(y)[~full]).all()  # the padded rows' outputs are still computed


def test_masked_nan_rows_do_not_reach_gradients():
    """Gradients of a NaN-padded, masked batch equal those of the batch without the padding."""
    rng = np.random.default_rng(2)
    params, state = _random_params_state(rng)
    x_valid = _f32(rng.normal(size=(5, C)))
    w = _f32(rng.normal(size=(5, C)))
    padded = jnp.concatenate([x_valid[:2], jnp.full((3, C), jnp.nan), x_valid[2:]])
    w_padded = jnp.concatenate([w[:2], jnp.ones((3, C)), w[2:]])
    mask = jnp.asarray([True, True, False, False, False, True, True, True])

    def loss(p, x, w, mask, train):
        y, _ = batchnorm.apply(p, state, x, train=train, mask=mask)
        valid = jnp.ones(x.shape[:1], bool) if mask is None else mask
        return jnp.sum(jnp.where(valid[:, None], w * y, 0.0))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnames="train")
    for train in (True, False):
        g_params, g_x = grad(params, padded, w_padded, mask, train)
        r_params, r_x = grad(params, x_valid, w, None, train)
        assert np.isfinite(np.asarray(g_x)).all()
        for a, b in zip(g_params, r_params, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g_x[np.asarray(mask)], r_x, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(g_x[~np.asarray(mask)], 0.0)


def test_no_valid_rows_keeps_the_running_statistics():
    rng = np.random.default_rng(3)
    params, state = _random_params_state(rng)
    x = _f32(rng.normal(size=(4, C))).at[1].set(jnp.nan)
    y, new_state = _apply_train(params, state, x, mask=jnp.zeros((4,), bool))
    np.testing.assert_array_equal(new_state.mean, state.mean)
    np.testing.assert_array_equal(new_state.var, state.var)
    # Batch mean 0 and variance 0: finite outputs wherever the input is finite.
    np.testing.assert_allclose(y[0], x[0] / np.sqrt(1e-5) * params.scale + params.bias, rtol=1e-5)


# ----------------------------------------------------------------- traced momentum, dtypes


def test_momentum_swept_under_vmap():
    rng = np.random.default_rng(4)
    params, state = _random_params_state(rng)
    x = rng.normal(size=(7, C))
    momenta = np.array([0.0, 0.5, 0.9, 0.99], np.float32)
    step = jax.jit(jax.vmap(lambda m: batchnorm.apply(params, state, _f32(x), train=True, momentum=m)[1]))
    new = step(jnp.asarray(momenta))
    mean, var = x.mean(0), x.var(0)
    m = momenta.astype(np.float64)[:, None]
    np.testing.assert_allclose(new.mean, m * np.asarray(state.mean) + (1 - m) * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.var, m * np.asarray(state.var) + (1 - m) * var, rtol=1e-5, atol=1e-6)


def test_bfloat16_inputs_use_float32_statistics():
    rng = np.random.default_rng(5)
    params, state = batchnorm.init(C)
    # A large mean over a small spread: bfloat16 statistics would be off by far more than 1e-5.
    x = jnp.asarray(rng.normal(100.0, 1.0, size=(64, C)), jnp.bfloat16)
    y, new_state = jax.jit(functools.partial(batchnorm.apply, train=True, momentum=0.0))(params, state, x)
    x64 = np.asarray(x.astype(jnp.float32), np.float64)
    assert y.dtype == jnp.bfloat16 and new_state.mean.dtype == jnp.float32
    np.testing.assert_allclose(new_state.mean, x64.mean(0), rtol=1e-6)
    np.testing.assert_allclose(new_state.var, x64.var(0), rtol=1e-4)
    expected = (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + 1e-5)
    np.testing.assert_allclose(np.asarray(y.astype(jnp.float32)), expected, atol=2e-2)


def test_eval_mode_uses_running_statistics():
    rng = np.random.default_rng(6)
    params, state = _random_params_state(rng)
    x = rng.normal(size=(4, 2, C))
    y, new_state = jax.jit(functools.partial(batchnorm.apply, train=False))(params, state, _f32(x))
    expected = _hand_forward(params, x, np.asarray(state.mean, np.float64), np.asarray(state.var), 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(new_state.mean, state.mean)
    np.testing.assert_array_equal(new_state.var, state.var)


# ----------------------------------------------------------------- statistics across a mapped axis


def _sharded_batch(rng, counts, rows, shape=(C,)):
    """Shards of ``rows`` rows with ``counts[i]`` valid ones each; NaN in the rest."""
    x = rng.normal(3.0, 2.0, size=(len(counts), rows) + shape)
    x *= np.arange(1, len(counts) + 1).reshape((-1,) + (1,) * (x.ndim - 1))  # shards differ
    mask = np.arange(rows)[None, :] < np.asarray(counts)[:, None]
    x[~mask] = np.nan
    return x, mask


def test_axis_name_under_vmap_equals_the_concatenated_batch():
    rng = np.random.default_rng(7)
    params, state = _random_params_state(rng)
    x, mask = _sharded_batch(rng, counts=[6, 1, 3], rows=6)
    w = rng.normal(size=x.shape)

    def shard(p, x, mask):
        return batchnorm.apply(p, state, x, train=True, momentum=0.8, mask=mask, axis_name="data")

    def loss(p, x):
        y, new = jax.vmap(shard, in_axes=(None, 0, 0), axis_name="data")(p, x, jnp.asarray(mask))
        return jnp.sum(jnp.where(jnp.asarray(mask)[..., None], _f32(w) * y, 0.0)), (y, new)

    (g_params, g_x), (y, new) = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(params, _f32(x))

    valid = x[mask]  # the concatenated batch of valid rows
    mean, var = valid.mean(0), valid.var(0)
    for i in range(x.shape[0]):
        np.testing.assert_allclose(new.mean[i], 0.8 * np.asarray(state.mean) + 0.2 * mean, rtol=1e-5)
        np.testing.assert_allclose(new.var[i], 0.8 * np.asarray(state.var) + 0.2 * var, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(y)[mask], _hand_forward(params, valid, mean, var, 1e-5), rtol=1e-5, atol=1e-5
    )
    # Averaging per-shard means (flax's pmean) is not the batch mean here, so the check above can fail.
    assert np.abs(np.mean([x[i][mask[i]].mean(0) for i in range(3)], axis=0) - mean).min() > 0.1

    # Gradients: those of the concatenated batch, with no axis at all.
    def concatenated_loss(p, valid):
        y, _ = batchnorm.apply(p, state, valid, train=True, momentum=0.8)
        return jnp.sum(_f32(w[mask]) * y)

    r_params, r_valid = jax.jit(jax.grad(concatenated_loss, argnums=(0, 1)))(params, _f32(valid))
    for a, b in zip(g_params, r_params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(g_x)[mask], r_valid, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(g_x)[~mask], 0.0)


def _shard_map():
    if hasattr(jax, "shard_map"):
        return jax.shard_map
    from jax.experimental.shard_map import shard_map  # older jax

    return shard_map


def test_axis_name_under_shard_map_over_four_devices():
    devices = jax.devices()[:4]
    assert len(devices) == 4, "tests/conftest.py fakes 4 CPU devices"
    mesh = Mesh(np.asarray(devices), ("data",))
    rng = np.random.default_rng(8)
    params, state = _random_params_state(rng)
    x, mask = _sharded_batch(rng, counts=[5, 0, 2, 4], rows=5, shape=(2, C))
    per_position = np.broadcast_to(mask[..., None], x.shape[:-1]).copy()
    per_position[0, 0, 1] = False  # an example with one valid position
    x[0, 0, 1] = np.nan
    flat_x, flat_mask = x.reshape((-1,) + x.shape[2:]), per_position.reshape((-1,) + x.shape[2:-1])

    data = PartitionSpec("data")
    fn = _shard_map()(
        lambda p, s, x, m: batchnorm.apply(p, s, x, train=True, momentum=0.7, mask=m, axis_name="data"),
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(), data, data),
        out_specs=(data, PartitionSpec()),
    )
    y, new = jax.jit(fn)(params, state, _f32(flat_x), jnp.asarray(flat_mask))

    mean, var = _hand_stats(flat_x, flat_mask)
    np.testing.assert_allclose(new.mean, 0.7 * np.asarray(state.mean) + 0.3 * mean, rtol=1e-5)
    np.testing.assert_allclose(new.var, 0.7 * np.asarray(state.var) + 0.3 * var, rtol=1e-5)
    expected = _hand_forward(params, flat_x, mean, var, 1e-5)
    np.testing.assert_allclose(np.asarray(y)[flat_mask], expected[flat_mask], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------- stop_gradient_stats


def test_stop_gradient_stats_lets_a_bias_before_the_layer_grow_without_bound():
    """Ioffe & Szegedy 2015, section 2: x = u + b, normalized with statistics held constant.

    The gradient step on b cannot change the normalized output (the batch mean
    absorbs b), so the loss stays the same, but the gradient ignores that and
    keeps pushing b by the same amount every step. With the statistics in the
    backward pass the gradient w.r.t. b is zero.
    """
    rng = np.random.default_rng(9)
    u = _f32(rng.normal(size=(16, C)))
    target = _f32(rng.normal(size=(16, C)))
    params, state = _random_params_state(rng)
    lr, steps = 0.5, 20

    def loss(b, stop):
        x = u + b[None, :]
        y, _ = batchnorm.apply(params, state, x, train=True, stop_gradient_stats=stop)
        return 0.5 * jnp.sum(jnp.square(y - target))

    @functools.partial(jax.jit, static_argnames="stop")
    def descend(stop):
        def step(b, _):
            value, g = jax.value_and_grad(loss)(b, stop)
            return b - lr * g, (b, value, g)

        return jax.lax.scan(step, jnp.zeros((C,), jnp.float32), None, length=steps)[1]

    bs, losses, grads = (np.asarray(a, np.float64) for a in descend(True))
    # By hand: the statistics constant, dL/db = sum_i (y_i - t_i) * scale / sqrt(var + eps).
    u64 = np.asarray(u, np.float64)
    y = _hand_forward(params, u64, u64.mean(0), u64.var(0), 1e-5)
    expected = np.sum(y - np.asarray(target), axis=0) * np.asarray(params.scale) / np.sqrt(u64.var(0) + 1e-5)
    assert np.abs(expected).min() > 0.1
    np.testing.assert_allclose(grads, np.broadcast_to(expected, grads.shape), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(bs, -lr * np.arange(steps)[:, None] * expected, rtol=1e-3, atol=1e-4)
    # Only float32 rounding of u + b, which grows with |b|.
    np.testing.assert_allclose(losses, losses[0], rtol=1e-3)

    bs, losses, grads = (np.asarray(a, np.float64) for a in descend(False))
    np.testing.assert_allclose(grads, 0.0, atol=1e-4)
    np.testing.assert_allclose(bs, 0.0, atol=1e-4)
    np.testing.assert_allclose(losses, losses[0], rtol=1e-5)


# ----------------------------------------------------------------- errors


def test_bad_shapes_raise_value_error_with_the_shapes():
    params, state = batchnorm.init(5)
    with pytest.raises(ValueError, match=r"mask has shape \(3,\) but x has shape \(4, 5\); expected \(4,\)"):
        batchnorm.apply(params, state, jnp.zeros((4, 5)), train=True, mask=jnp.ones((3,), bool))
    with pytest.raises(
        ValueError,
        match=r"mask has shape \(4, 3\) but x has shape \(4, 2, 5\); "
        r"expected \(4,\), \(4, 2\) or \(4, 2, 1\)",
    ):
        batchnorm.apply(params, state, jnp.zeros((4, 2, 5)), train=True, mask=jnp.ones((4, 3), bool))
    with pytest.raises(ValueError, match=r"x has shape \(5,\): expected at least 2 dimensions"):
        batchnorm.apply(params, state, jnp.zeros((5,)), train=False)
    with pytest.raises(ValueError, match=r"params.scale has shape \(5,\) but x has shape \(4, 6\)"):
        batchnorm.apply(params, state, jnp.zeros((4, 6)), train=True)
    for bad in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match=rf"num_features={bad!r} is invalid: expected a positive"):
            batchnorm.init(bad)
    # complex inputs with a real running mean would lose their imaginary part
    with pytest.raises(
        ValueError,
        match=r"x has dtype complex64 but state.mean has dtype float32.*"
        r"expected batchnorm.init\(num_features, dtype=complex64\)",
    ):
        batchnorm.apply(params, state, jnp.zeros((4, 5), jnp.complex64), train=True)


# ----------------------------------------------------------------- flax, exactly


def _flax_apply(module, params, state, x, mask):
    variables = {
        "params": {"scale": params.scale, "bias": params.bias},
        "batch_stats": {"mean": state.mean, "var": state.var},
    }
    with _reference_promotion():
        y, updates = module.apply(variables, x, mask=mask, mutable=["batch_stats"])
    stats = updates.get("batch_stats", variables["batch_stats"])
    return y, BatchNormState(stats["mean"], stats["var"])


@pytest.mark.parametrize("momentum", [0.9, 0.99, 0.999])
@pytest.mark.parametrize("shape", [(16, C), (4, 6, C)], ids=["2d", "3d"])
def test_running_statistics_and_eval_outputs_are_flax_bit_for_bit(shape, momentum):
    """With a Python momentum, flax's float32 arithmetic: ``momentum * old + (1 - momentum) * batch``
    with ``1 - momentum`` formed in double precision. flax with ``use_fast_variance=False`` computes
    the same batch variance, so statistics and eval outputs are equal to the last bit."""
    rng = np.random.default_rng(7)
    params, state = _random_params_state(rng)
    x = _f32(rng.normal(0.5, 1.5, size=shape))
    module = nn.BatchNorm(use_running_average=False, momentum=momentum, epsilon=1e-5, use_fast_variance=False)
    _, ours = jax.jit(functools.partial(batchnorm.apply, train=True, momentum=momentum))(params, state, x)
    _, theirs = jax.jit(functools.partial(_flax_apply, module, mask=None))(params, state, x)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)
    eval_module = nn.BatchNorm(use_running_average=True, epsilon=1e-5)
    y_ours, _ = jax.jit(functools.partial(batchnorm.apply, train=False))(params, ours, x)
    y_theirs, _ = jax.jit(functools.partial(_flax_apply, eval_module, mask=None))(params, theirs, x)
    np.testing.assert_array_equal(y_ours, y_theirs)


@pytest.mark.parametrize("fast_variance", [False, True])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_complex_inputs_match_flax_complex_batchnorm(train, masked, fast_variance):
    """Complex mean, real variance of |x - mean|^2, as ``flax.linen.BatchNorm(dtype=complex64)``."""
    rng = np.random.default_rng(8)
    shape = (12, C)
    real_params, _ = _random_params_state(rng)
    params = BatchNormParams(*(p.astype(jnp.complex64) for p in real_params))
    _, state = batchnorm.init(C, jnp.complex64)
    state = BatchNormState(
        mean=jnp.asarray(rng.normal(size=C) + 1j * rng.normal(size=C), jnp.complex64),
        var=_f32(rng.uniform(0.5, 2.0, C)),
    )
    x = jnp.asarray(rng.normal(1.0, 1.0, shape) + 1j * rng.normal(-2.0, 0.5, shape), jnp.complex64)
    mask = jnp.asarray(np.arange(shape[0]) < 9)
    module = nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        dtype=jnp.complex64,
        param_dtype=jnp.complex64,
        use_fast_variance=fast_variance,
    )
    y, new = batchnorm.apply(params, state, x, train=train, momentum=0.9, mask=mask if masked else None)
    ty, t_new = _flax_apply(module, params, state, x, mask[:, None] if masked else None)
    assert y.dtype == jnp.complex64 and new.mean.dtype == jnp.complex64 and new.var.dtype == jnp.float32
    rows = slice(0, 9) if masked else slice(None)
    np.testing.assert_allclose(y[rows], ty[rows], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new.mean, t_new.mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(new.var, np.real(t_new.var), rtol=1e-5, atol=1e-6)
    if train:  # by hand in float64: the imaginary parts are there
        valid = np.asarray(x, np.complex128)[rows]
        mean = valid.mean(0)
        assert np.abs(mean.imag).min() > 1.0
        np.testing.assert_allclose(new.mean, 0.9 * np.asarray(state.mean) + 0.1 * mean, rtol=1e-5)
        np.testing.assert_allclose(
            new.var, 0.9 * np.asarray(state.var) + 0.1 * (np.abs(valid - mean) ** 2).mean(0), rtol=1e-5
        )


@pytest.mark.parametrize("shape", [(8, C), (4, 5, C)], ids=["2d", "3d"])
def test_a_mask_in_flax_shape_is_accepted(shape):
    """flax's masks are broadcastable to x, typically ``x.shape[:-1] + (1,)``."""
    rng = np.random.default_rng(9)
    params, state = _random_params_state(rng)
    x = _f32(rng.normal(size=shape))
    mask = jnp.asarray(rng.uniform(size=shape[:-1] + (1,)) < 0.6).at[(0,) * len(shape)].set(True)
    y, new = batchnorm.apply(params, state, x, train=True, momentum=0.9, mask=mask)
    y2, new2 = batchnorm.apply(params, state, x, train=True, momentum=0.9, mask=mask[..., 0])
    np.testing.assert_array_equal(y, y2)
    module = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5)
    ty, t_new = _flax_apply(module, params, state, x, mask)
    for a, b in zip(new, t_new, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jnp.where(mask, y, 0), jnp.where(mask, ty, 0), rtol=1e-5, atol=1e-5)


def _ghost_by_hand(x, groups, valid, old_mean, old_var, m, eps=1e-5):
    """Float64: each group normalized by its valid rows; running stats towards the mean of
    the non-empty groups' statistics."""
    y, means, variances = np.empty_like(x), [], []
    for rows, ok in zip(np.split(np.arange(len(x)), groups), np.split(valid, groups), strict=True):
        xs = x[rows][ok]
        mu, var = (xs.mean(0), xs.var(0)) if len(xs) else (np.zeros(x.shape[1]), np.zeros(x.shape[1]))
        y[rows] = (x[rows] - mu) / np.sqrt(var + eps)
        if len(xs):
            means.append(mu)
            variances.append(var)
    return y, m * old_mean + (1 - m) * np.mean(means, 0), m * old_var + (1 - m) * np.mean(variances, 0)


@pytest.mark.parametrize("masked", [False, True])
def test_ghost_batch_norm_by_hand(masked):
    x = np.random.default_rng(0).normal(size=(12, 3)) * 2 + 1
    valid = np.ones(12, bool)
    if masked:  # the second group half padding, the third all padding
        valid[6:] = False
    params, state = batchnorm.init(3)
    state = batchnorm.BatchNormState(mean=jnp.full(3, 0.5), var=jnp.full(3, 2.0))
    y, new = batchnorm.ghost_apply(
        params, state, jnp.asarray(x, jnp.float32), ghost_batch_size=4, train=True, momentum=0.9,
        mask=jnp.asarray(valid) if masked else None,
    )  # fmt: skip
    want_y, want_mean, want_var = _ghost_by_hand(x, 3, valid, 0.5, 2.0, 0.9)
    np.testing.assert_allclose(np.asarray(y)[valid], want_y[valid], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new.mean, want_mean, rtol=1e-5)
    np.testing.assert_allclose(new.var, want_var, rtol=1e-5)
    # evaluation mode is plain batch norm on the running statistics
    y_eval, same = batchnorm.ghost_apply(
        params, new, jnp.asarray(x, jnp.float32), ghost_batch_size=4, train=False
    )
    np.testing.assert_allclose(y_eval, (x - want_mean) / np.sqrt(want_var + 1e-5), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="ghost_batch_size=5 is invalid for a batch of 12 examples"):
        batchnorm.ghost_apply(params, state, jnp.asarray(x, jnp.float32), ghost_batch_size=5, train=True)


def test_running_stats_error_by_hand():
    running = BatchNormState(mean=jnp.array([1.0, 0.0]), var=jnp.array([4.0, 1.0]))
    reference = BatchNormState(mean=jnp.array([0.0, 1.0]), var=jnp.array([1.0, 4.0]))
    mean_err, var_err = batchnorm.running_stats_error(running, reference)
    # z = (1/1, -1/2); log ratios = (log 4, -log 4).
    np.testing.assert_allclose(mean_err, np.sqrt((1 + 0.25) / 2), rtol=1e-6)
    np.testing.assert_allclose(var_err, np.log(4), rtol=1e-6)
