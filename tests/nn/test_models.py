"""Tests for jaxopt_lab.nn.models against float64 NumPy forwards and equivalent flax.linen modules.

XLA compiles are the cost here, so inputs and parameters are drawn with NumPy,
shapes come from ``jax.eval_shape(model.init, ...)``, and each test jits one
function that runs both modes.
"""

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_lab.nn import batchnorm, models

KEY = jax.random.key(0)
EPS = 1e-5


@contextlib.contextmanager
def _reference_promotion():
    """flax itself relies on implicit rank/dtype promotion; allow it for reference calls."""
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        yield


def _f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _normal(rng, shape, loc=0.0, scale=1.0):
    return jnp.asarray(rng.normal(loc, scale, size=shape), jnp.float32)


def _random_variables(model, x, seed):
    """Parameters and running statistics of ``model``'s shapes, drawn away from their init.

    Nonzero biases, non-unit scales and statistics away from (0, 1) make any
    wiring mistake show.
    """
    params, state = jax.eval_shape(model.init, KEY, x)
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: _normal(rng, s.shape, scale=0.5), params)
    params = {
        name: batchnorm.BatchNormParams(scale=1.0 + p.scale, bias=p.bias) if name.startswith("bn_") else p
        for name, p in params.items()
    }
    state = {
        name: batchnorm.BatchNormState(
            mean=_normal(rng, s.mean.shape),
            var=jnp.asarray(rng.uniform(0.5, 2.0, size=s.var.shape), jnp.float32),
        )
        for name, s in state.items()
    }
    return params, state


def _to_flax(params, state):
    """Our trees in flax's layout: BatchNorm's ``scale``/``bias`` and ``mean``/``var``."""
    fparams = {
        name: {"scale": p.scale, "bias": p.bias} if name.startswith("bn_") else dict(p)
        for name, p in params.items()
    }
    fstats = {name: {"mean": s.mean, "var": s.var} for name, s in state.items()}
    return fparams, fstats


def _stats_from_flax(stats):
    return {n: batchnorm.BatchNormState(mean=s["mean"], var=s["var"]) for n, s in stats.items()}


def _assert_trees_close(a, b, **tol):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, **tol)


def _both_modes(model, bn_momentum=0.99):
    """One jitted program returning ``(train outputs, train state), (eval outputs, eval state)``."""

    @jax.jit
    def run(params, state, x):
        train = model.apply(params, state, x, train=True, bn_momentum=bn_momentum)
        test = model.apply(params, state, x, train=False, bn_momentum=bn_momentum)
        return train, test

    return run


def _flax_both_modes(module, params, stats, x):
    """The flax module applied in training (mutable batch_stats) and evaluation mode."""

    @jax.jit
    def run(params, stats, x):
        variables = {"params": params, **({"batch_stats": stats} if stats else {})}
        if stats:
            out, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
            train = (out, updates["batch_stats"])
        else:
            train = (module.apply(variables, x, train=True), stats)
        return train, (module.apply(variables, x, train=False), stats)

    with _reference_promotion():
        return run(params, stats, x)


class FlaxMLP(nn.Module):
    num_outputs: int
    hidden: tuple
    momentum: float = 0.99

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.hidden):
            x = nn.Dense(width, use_bias=False, name=f"dense_{i}")(x)
            x = nn.BatchNorm(
                use_running_average=not train,
                momentum=self.momentum,
                epsilon=EPS,
                name=f"bn_{i}",
            )(x)
            x = nn.relu(x)
        return nn.Dense(self.num_outputs, name=f"dense_{len(self.hidden)}")(x)


class FlaxCNN(nn.Module):
    num_outputs: int
    channels: tuple
    momentum: float = 0.99
    use_bn: bool = False
    kernel_size: tuple = (5,)  # (3, 3): the 2-D net

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x[..., None]
        for i, c in enumerate(self.channels):
            x = nn.Conv(
                c,
                kernel_size=self.kernel_size,
                strides=(2,) * len(self.kernel_size),
                padding="SAME",
                use_bias=not self.use_bn,
                name=f"conv_{i}",
            )(x)
            if self.use_bn:
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=self.momentum,
                    epsilon=EPS,
                    name=f"bn_{i}",
                )(x)
            x = nn.relu(x)
        return nn.Dense(self.num_outputs, name="dense_0")(x.reshape((x.shape[0], -1)))


# ---------------------------------------------------------------- forward passes


@pytest.mark.parametrize("activation, act", [("relu", lambda h: np.maximum(h, 0)), ("tanh", np.tanh)])
def test_mlp_matches_float64_numpy(activation, act):
    model = models.mlp(5, hidden=(16, 8), activation=activation)
    x = _normal(np.random.default_rng(0), (7, 4, 3))  # flattened to 12 features
    params, state = _random_variables(model, x, seed=1)
    assert state == {}
    assert params["dense_0"]["kernel"].shape == (12, 16)
    assert params["dense_2"]["kernel"].shape == (8, 5) and params["dense_2"]["bias"].shape == (5,)

    (out, new_state), (out_eval, _) = _both_modes(model)(params, state, x)
    assert new_state == {}

    p = _f64(params)
    h = np.asarray(x, np.float64).reshape(7, 12)
    for i in range(2):
        h = act(h @ p[f"dense_{i}"]["kernel"] + p[f"dense_{i}"]["bias"])
    ref = h @ p["dense_2"]["kernel"] + p["dense_2"]["bias"]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_eval, ref, rtol=1e-5, atol=1e-5)  # no batch norm: same


def test_linear_matches_numpy_and_flax_default_init():
    model = models.linear(3)
    x = _normal(np.random.default_rng(0), (6, 5))
    params, state = _random_variables(model, x, seed=1)
    (out, _), _ = _both_modes(model)(params, state, x)
    p = _f64(params)["dense_0"]
    ref = np.asarray(x, np.float64) @ p["kernel"] + p["bias"]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)

    # flax.linen.Dense's defaults: LeCun normal kernel (std 1 / sqrt(fan_in)), zero bias.
    init, _ = jax.jit(models.linear(512).init)(jax.random.key(3), jnp.zeros((1, 256)))
    assert abs(float(np.std(init["dense_0"]["kernel"])) - 1 / 16) < 0.002
    assert abs(float(np.mean(init["dense_0"]["kernel"]))) < 0.002
    np.testing.assert_array_equal(init["dense_0"]["bias"], np.zeros(512))


def test_mlp_batchnorm_matches_flax_in_train_and_eval_mode():
    hidden = (16, 8)
    model = models.mlp(4, hidden=hidden, batchnorm=True)
    x = _normal(np.random.default_rng(0), (10, 6), loc=2.0, scale=3.0)
    params, state = _random_variables(model, x, seed=1)
    assert "bias" not in params["dense_0"] and "bias" in params["dense_2"]
    assert set(state) == {"bn_0", "bn_1"}

    (out, new_state), (out_eval, eval_state) = _both_modes(model, bn_momentum=0.9)(params, state, x)
    fparams, fstats = _to_flax(params, state)
    (ref, ref_stats), (ref_eval, _) = _flax_both_modes(FlaxMLP(4, hidden, momentum=0.9), fparams, fstats, x)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    _assert_trees_close(new_state, _stats_from_flax(ref_stats), rtol=1e-5, atol=1e-6)
    assert not np.allclose(new_state["bn_0"].mean, state["bn_0"].mean)  # statistics moved

    np.testing.assert_allclose(out_eval, ref_eval, rtol=1e-5, atol=1e-5)
    _assert_trees_close(eval_state, state, rtol=0, atol=0)  # evaluation leaves them
    assert not np.allclose(out_eval, out)


@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
def test_mask_excludes_padded_rows_from_batch_statistics(name):
    options = {"hidden": (8,)} if name == "mlp" else {"channels": (4, 4)}
    model = models.create(name, 3, batchnorm=True, **options)
    valid = 6
    x = np.random.default_rng(0).normal(1.0, 2.0, size=(9, 40))
    x_padded = x.copy()
    x_padded[valid:] = np.nan  # NaNs poison any statistic they enter
    mask = np.arange(9) < valid
    params, state = _random_variables(model, jnp.asarray(x, jnp.float32), seed=1)

    @jax.jit
    def run(params, state, x_padded, mask, x_valid):
        apply = lambda x, m: model.apply(params, state, x, train=True, mask=m, bn_momentum=0.8)
        return apply(x_padded, mask), apply(x_valid, None)

    (out, new_state), (ref, ref_state) = run(
        params, state, jnp.asarray(x_padded, jnp.float32), mask, jnp.asarray(x[:valid], jnp.float32)
    )
    assert np.isfinite(np.asarray(out[:valid])).all()
    np.testing.assert_allclose(out[:valid], ref, rtol=1e-5, atol=1e-5)
    _assert_trees_close(new_state, ref_state, rtol=1e-5, atol=1e-6)

    # Hand computation of the first layer's statistics over the valid rows (float64).
    p, s0 = _f64(params), _f64(state["bn_0"])
    xv = np.asarray(np.asarray(x[:valid], np.float32), np.float64)
    if name == "mlp":
        h, axes = xv @ p["dense_0"]["kernel"], 0
    else:
        # "SAME" correlation, 5 taps, stride 2 over 40 positions: pad 1 left, 2 right.
        xp = np.pad(xv, ((0, 0), (1, 2)))
        k = p["conv_0"]["kernel"][:, 0, :]  # (taps, channels)
        h, axes = np.stack([xp[:, 2 * j : 2 * j + 5] @ k for j in range(20)], axis=1), (0, 1)
    new = new_state["bn_0"]
    np.testing.assert_allclose(new.mean, 0.8 * s0.mean + 0.2 * h.mean(axes), atol=1e-5)
    np.testing.assert_allclose(new.var, 0.8 * s0.var + 0.2 * h.var(axes), atol=1e-5)


def test_traced_bn_momentum_under_vmap():
    model = models.mlp(2, hidden=(5,), batchnorm=True)
    x = _normal(np.random.default_rng(0), (12, 3), loc=1.0)
    params, _ = _random_variables(model, x, seed=1)
    state = {"bn_0": batchnorm.BatchNormState(mean=jnp.zeros((5,)), var=jnp.ones((5,)))}
    momenta = np.array([0.0, 0.5, 0.99], np.float32)
    new_state = jax.jit(jax.vmap(lambda m: model.apply(params, state, x, train=True, bn_momentum=m)[1]))(
        momenta
    )
    h = np.asarray(x, np.float64) @ _f64(params)["dense_0"]["kernel"]
    for i, m in enumerate(momenta.astype(np.float64)):
        np.testing.assert_allclose(new_state["bn_0"].mean[i], (1 - m) * h.mean(0), atol=1e-5)
        np.testing.assert_allclose(new_state["bn_0"].var[i], m + (1 - m) * h.var(0), atol=1e-5)


@pytest.mark.parametrize("use_bn", [False, True])
def test_cnn1d_matches_flax(use_bn):
    channels = (6, 8, 4)
    model = models.cnn1d(10, channels=channels, batchnorm=use_bn)
    module = FlaxCNN(10, channels, momentum=0.9, use_bn=use_bn)
    x = _normal(np.random.default_rng(0), (5, 40))
    params, state = _random_variables(model, x, seed=1)
    # flax's parameter layout: 40 -> 20 -> 10 -> 5 positions of 4 channels into the head.
    assert params["dense_0"]["kernel"].shape == (5 * 4, 10)
    fparams, fstats = _to_flax(params, state)
    fvars = jax.eval_shape(module.init, KEY, x)
    shapes = lambda t: jax.tree.map(jnp.shape, t)
    assert shapes(fparams) == shapes(fvars["params"])
    assert shapes(fstats) == shapes(fvars.get("batch_stats", {}))

    (out, new_state), (out_eval, eval_state) = _both_modes(model, bn_momentum=0.9)(params, state, x)
    (ref, ref_stats), (ref_eval, _) = _flax_both_modes(module, fparams, fstats, x)
    assert out.shape == (5, 10)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out_eval, ref_eval, rtol=1e-4, atol=1e-5)
    _assert_trees_close(new_state, _stats_from_flax(ref_stats), rtol=1e-5, atol=1e-6)
    _assert_trees_close(eval_state, state, rtol=0, atol=0)


@pytest.mark.parametrize("use_bn", [False, True])
def test_cnn2d_matches_flax(use_bn):
    channels = (4, 6)
    model = models.cnn2d(10, channels=channels, batchnorm=use_bn)
    module = FlaxCNN(10, channels, momentum=0.9, use_bn=use_bn, kernel_size=(3, 3))
    x = _normal(np.random.default_rng(0), (5, 12, 10))  # not square: rows and columns stay apart
    params, state = _random_variables(model, x, seed=1)
    assert params["dense_0"]["kernel"].shape == (3 * 3 * 6, 10)  # 12x10 -> 6x5 -> 3x3
    fparams, fstats = _to_flax(params, state)
    fvars = jax.eval_shape(module.init, KEY, x)
    shapes = lambda t: jax.tree.map(jnp.shape, t)
    assert shapes(fparams) == shapes(fvars["params"])
    (out, new_state), (out_eval, _) = _both_modes(model, bn_momentum=0.9)(params, state, x)
    (ref, ref_stats), (ref_eval, _) = _flax_both_modes(module, fparams, fstats, x)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out_eval, ref_eval, rtol=1e-4, atol=1e-5)
    _assert_trees_close(new_state, _stats_from_flax(ref_stats), rtol=1e-5, atol=1e-6)


def test_state_is_a_stable_pytree_under_vmap_and_scan():
    """init vmaps over keys; apply threads state through lax.scan with the same types."""
    plain = models.mlp(3, hidden=(4,))
    with_bn = models.cnn1d(3, channels=(4,), batchnorm=True)
    x = _normal(np.random.default_rng(0), (6, 40))

    def run(model, keys):
        params, state = jax.vmap(model.init, in_axes=(0, None))(keys, x)

        def steps(params, state):
            def body(state, _):
                return model.apply(params, state, x, train=True, bn_momentum=0.5)[1], None

            return jax.lax.scan(body, state, None, length=3)[0]

        return state, jax.vmap(steps)(params, state)

    keys = jax.random.split(KEY, 2)
    results = jax.jit(lambda k: [run(plain, k), run(with_bn, k)])(keys)
    for initial, final in results:
        assert jax.tree.map(lambda a: (a.shape, a.dtype), final) == jax.tree.map(
            lambda a: (a.shape, a.dtype), initial
        )
    assert results[0][1] == {}
    _, final = results[1]
    assert type(final["bn_0"]) is batchnorm.BatchNormState and final["bn_0"].mean.shape == (2, 4)


# ---------------------------------------------------------------------- create


def test_create_is_memoized_and_builds_the_named_model():
    a = models.create("mlp", 10, hidden=[32, 16], batchnorm=True)
    assert a is models.create("mlp", 10, batchnorm=True, hidden=(32, 16))
    assert a is not models.create("mlp", 10, hidden=(32, 16))
    assert a is not models.create("mlp", 11, hidden=(32, 16), batchnorm=True)
    assert models.create("cnn1d", 10) is models.create("cnn1d", 10)
    assert models.create("linear", np.int64(3)) is models.create("linear", 3)
    params, state = jax.eval_shape(a.init, KEY, jnp.zeros((2, 40)))
    assert params["dense_1"]["kernel"].shape == (32, 16) and set(state) == {"bn_0", "bn_1"}
    params, state = jax.eval_shape(models.create("linear", 1).init, KEY, jnp.zeros((2, 7)))
    assert params["dense_0"]["kernel"].shape == (7, 1) and state == {}


def test_bad_names_and_options_raise():
    with pytest.raises(ValueError) as info:
        models.create("resnet", 10)
    assert str(info.value) == "model='resnet' is invalid: expected one of 'linear', 'mlp', 'cnn1d', 'cnn2d'"
    with pytest.raises(ValueError, match="option 'depth' is invalid for model='mlp'"):
        models.create("mlp", 10, depth=3)
    with pytest.raises(ValueError, match="option 'hidden' is invalid for model='linear'"):
        models.create("linear", 10, hidden=(3,))
    with pytest.raises(ValueError, match="activation='swish' is invalid: expected one of 'relu'"):
        models.create("mlp", 10, activation="swish")
    with pytest.raises(ValueError, match="num_outputs=0 is invalid"):
        models.create("linear", 0)
    with pytest.raises(ValueError, match="hidden=.* is invalid"):
        models.mlp(3, hidden=(8, -1))
    with pytest.raises(ValueError, match="kernel_size=0 is invalid"):
        models.cnn1d(3, kernel_size=0)


# ------------------------------------------------------------------------ flax


def test_from_flax_without_batchnorm_and_its_gradients():
    model = models.from_flax(nn.Dense(3))  # __call__ takes no `train`
    x = _normal(np.random.default_rng(0), (4, 5))
    shapes = jax.eval_shape(model.init, KEY, x)
    assert shapes[1] == {} and shapes[0]["kernel"].shape == (5, 3)
    rng = np.random.default_rng(1)
    params = {"kernel": _normal(rng, (5, 3)), "bias": _normal(rng, (3,))}

    @jax.jit
    def run(params, x, mask):
        loss = lambda p: jnp.sum(model.apply(p, {}, x, train=True, mask=mask)[0])
        return model.apply(params, {}, x, train=False), jax.grad(loss)(params)

    with _reference_promotion():
        (out, new_state), grads = run(params, x, np.arange(4) < 2)
    p = _f64(params)
    ref = np.asarray(x, np.float64) @ p["kernel"] + p["bias"]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert new_state == {}
    # d sum(x @ W + b) / dW = sum_n x_n for every output; d / db = n.
    expected = np.repeat(np.asarray(x, np.float64).sum(0)[:, None], 3, axis=1)
    np.testing.assert_allclose(grads["kernel"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads["bias"], np.full(3, 4.0))


def test_from_flax_with_batchnorm_matches_our_mlp():
    hidden = (8, 6)
    wrapped = models.from_flax(FlaxMLP(3, hidden, momentum=0.9))
    assert wrapped is models.from_flax(FlaxMLP(3, hidden, momentum=0.9))  # memoized
    ours = models.mlp(3, hidden=hidden, batchnorm=True)
    x = _normal(np.random.default_rng(0), (10, 4), loc=1.0)

    with _reference_promotion():
        init_params, init_stats = jax.jit(wrapped.init)(KEY, x)
    np.testing.assert_array_equal(init_stats["bn_0"]["var"], np.ones(8))
    np.testing.assert_array_equal(init_stats["bn_1"]["mean"], np.zeros(6))

    params, state = _random_variables(ours, x, seed=1)
    fparams, fstats = _to_flax(params, state)
    assert jax.tree.map(jnp.shape, init_params) == jax.tree.map(jnp.shape, fparams)

    def both_modes(model):
        def loss(p, s, train):
            out, new = model.apply(p, s, x, train=train, bn_momentum=0.9)
            return jnp.sum(jnp.sin(out)), new

        grad = jax.value_and_grad(loss, has_aux=True)
        return jax.jit(lambda p, s: (grad(p, s, True), grad(p, s, False)))

    with _reference_promotion():
        flax_results = both_modes(wrapped)(fparams, fstats)
    our_results = both_modes(ours)(params, state)
    for train, ((fl, fnew), fgrad), ((ol, onew), ograd) in zip(
        (True, False), flax_results, our_results, strict=True
    ):
        np.testing.assert_allclose(fl, ol, rtol=1e-5)
        _assert_trees_close(_stats_from_flax(fnew), onew, rtol=1e-5, atol=1e-6)
        _assert_trees_close(fgrad, _to_flax(ograd, {})[0], rtol=1e-4, atol=1e-5)
        for leaf in jax.tree.leaves(fgrad):
            assert np.abs(np.asarray(leaf)).max() > 0  # gradients reach every parameter
        if train:
            assert not np.allclose(fnew["bn_0"]["mean"], fstats["bn_0"]["mean"])
        else:
            _assert_trees_close(fnew, fstats, rtol=0, atol=0)

    # A flax module cannot drop padded rows from its statistics: refuse rather than mislead.
    with pytest.raises(ValueError, match="mask is invalid .* 'bucket'"):
        wrapped.apply(fparams, fstats, x, train=True, mask=np.arange(10) < 5)


def test_from_flax_rejects_other_collections():
    class Counter(nn.Module):
        @nn.compact
        def __call__(self, x):
            self.variable("counter", "n", lambda: jnp.zeros((), jnp.int32))
            return nn.Dense(2)(x)

    with pytest.raises(ValueError, match="'counter'"):
        jax.eval_shape(models.from_flax(Counter()).init, KEY, jnp.zeros((1, 3)))


def test_ghost_batches_in_the_models():
    x = _normal(np.random.default_rng(0), (8, 40))
    plain = models.mlp(3, hidden=(4,), batchnorm=True)
    whole = models.mlp(3, hidden=(4,), batchnorm=True, ghost_batch_size=8)  # one group: the batch
    halves = models.mlp(3, hidden=(4,), batchnorm=True, ghost_batch_size=4)
    params, state = plain.init(KEY, x)
    out, new = plain.apply(params, state, x, train=True)
    out_whole, new_whole = whole.apply(params, state, x, train=True)
    np.testing.assert_allclose(out_whole, out, rtol=1e-5, atol=1e-6)
    _assert_trees_close(new_whole, new, rtol=1e-5, atol=1e-7)
    out_halves, _ = halves.apply(params, state, x, train=True)
    assert not np.allclose(out_halves, out)  # each half normalized by its own statistics
    for name in ("cnn1d", "cnn2d"):
        assert models.create(name, 3, batchnorm=True, ghost_batch_size=2) is not None
    with pytest.raises(ValueError, match="ghost_batch_size=4 is invalid without batchnorm=True"):
        models.mlp(3, ghost_batch_size=4)
