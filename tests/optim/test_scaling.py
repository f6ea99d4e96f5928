"""Tests for jaxopt_lab.optim.scaling: loss reductions on padded batches, learning-rate rules by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxopt_lab.optim import scaling

# A small linear model: per-example loss 0.5 * (w . x + b - y)^2.
_rng = np.random.default_rng(0)
PARAMS = {"w": jnp.asarray(_rng.normal(size=3), jnp.float32), "b": jnp.float32(0.3)}
X = _rng.normal(size=(5, 3))
Y = _rng.normal(size=5)


def _per_example(params, x, y):
    return 0.5 * jnp.square(x @ params["w"] + params["b"] - y)


@jax.jit
def _loss_and_grad(params, x, y, mask):
    """Mean and sum reductions of the same batch, with their gradients."""
    out = {}
    for reduction in scaling.REDUCTIONS:
        out[reduction] = jax.value_and_grad(
            lambda p, reduction=reduction: scaling.reduce_loss(_per_example(p, x, y), mask, reduction)
        )(params)
    return out


def _hand_grad(x, y):
    """The gradient of 0.5 * (w . x + b - y)^2 for each example, in float64."""
    w, b = np.asarray(PARAMS["w"], np.float64), float(PARAMS["b"])
    residual = x @ w + b - y
    return {"w": residual[:, None] * x, "b": residual}, 0.5 * residual**2


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_mean_gradient_of_copies_does_not_depend_on_batch_size_and_sum_grows_with_it(batch_size):
    x = np.repeat(X[:1], batch_size, axis=0)
    y = np.repeat(Y[:1], batch_size, axis=0)
    out = _loss_and_grad(PARAMS, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), None)
    single, single_loss = _hand_grad(X[:1], Y[:1])
    (mean_loss, mean_grad), (sum_loss, sum_grad) = out["mean"], out["sum"]
    np.testing.assert_allclose(mean_loss, single_loss[0], rtol=1e-5)
    np.testing.assert_allclose(sum_loss, batch_size * single_loss[0], rtol=1e-5)
    for name in ("w", "b"):
        np.testing.assert_allclose(mean_grad[name], single[name][0], rtol=1e-5)
        np.testing.assert_allclose(sum_grad[name], batch_size * single[name][0], rtol=1e-5)


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
def test_padded_rows_get_exactly_zero_cotangent(fill):
    """The value and the gradient w.r.t. the per-example losses, by hand, with NaN/inf padding."""
    loss = np.array([1.0, fill, 2.0, fill, 6.0])
    mask = np.isfinite(loss)
    for reduction, hand_value, hand_grad in (("mean", 3.0, 1 / 3), ("sum", 9.0, 1.0)):
        value, grad = jax.value_and_grad(scaling.reduce_loss)(
            jnp.asarray(loss, jnp.float32), jnp.asarray(mask), reduction
        )
        assert float(value) == hand_value
        np.testing.assert_allclose(grad, np.where(mask, hand_grad, 0.0), rtol=1e-6)
        assert (np.asarray(grad)[~mask] == 0.0).all()


_NUM_CLASSES = 3


def _classifier_loss(params, x, labels, mask, reduction):
    """A linear softmax classifier on a padded batch.

    Padding rows hold NaN inputs and the out-of-range label ``_NUM_CLASSES``, so
    their per-example loss is NaN. The inputs are zeroed with the mask before
    the model: a NaN input would otherwise reach the kernel's gradient through
    the dense layer's own backward pass (0 * NaN), which no reduction can stop.
    """
    x = jnp.where(mask[:, None], x, 0.0)
    logits = x @ params["kernel"] + params["bias"][None, :]
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return scaling.reduce_loss(per_example, mask, reduction)


_classifier_grad = jax.jit(jax.value_and_grad(_classifier_loss), static_argnames="reduction")


def test_padded_masked_batch_equals_the_unpadded_batch():
    rng = np.random.default_rng(1)
    kernel, bias = rng.normal(size=(4, _NUM_CLASSES)), rng.normal(size=_NUM_CLASSES)
    params = {"kernel": jnp.asarray(kernel, jnp.float32), "bias": jnp.asarray(bias, jnp.float32)}
    x, labels = rng.normal(size=(5, 4)), rng.integers(0, _NUM_CLASSES, size=5)
    padded_x = np.concatenate([x[:2], np.full((3, 4), np.nan), x[2:]])
    padded_labels = np.concatenate([labels[:2], np.full(3, _NUM_CLASSES), labels[2:]])
    mask = np.array([True, True, False, False, False, True, True, True])

    # By hand, on the unpadded batch, in float64: dloss/dlogits = softmax - onehot.
    logits = x @ kernel + bias
    log_probs = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    losses = -log_probs[np.arange(5), labels]
    dlogits = np.exp(log_probs) - np.eye(_NUM_CLASSES)[labels]
    for reduction, n in (("mean", 5), ("sum", 1)):
        loss, grad = _classifier_grad(
            params,
            jnp.asarray(padded_x, jnp.float32),
            jnp.asarray(padded_labels, jnp.int32),
            jnp.asarray(mask),
            reduction=reduction,
        )
        np.testing.assert_allclose(loss, losses.sum() / n, rtol=1e-5)
        np.testing.assert_allclose(grad["kernel"], x.T @ dlogits / n, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(grad["bias"], dlogits.sum(0) / n, rtol=1e-4, atol=1e-6)


def test_no_valid_rows_gives_zero_not_nan():
    params = {"kernel": jnp.ones((4, _NUM_CLASSES), jnp.float32), "bias": jnp.ones((_NUM_CLASSES,))}
    x = jnp.full((5, 4), jnp.nan, jnp.float32)
    labels = jnp.full((5,), _NUM_CLASSES, jnp.int32)
    for reduction in scaling.REDUCTIONS:
        loss, grad = _classifier_grad(params, x, labels, jnp.zeros((5,), bool), reduction=reduction)
        assert float(loss) == 0.0
        for g in jax.tree.leaves(grad):
            np.testing.assert_array_equal(g, 0.0)


def test_example_mask_over_a_per_token_loss():
    loss = _rng.normal(size=(4, 3))
    mask = np.array([True, False, True, True])
    got_mean = scaling.reduce_loss(jnp.asarray(loss, jnp.float32), jnp.asarray(mask))
    got_sum = scaling.reduce_loss(jnp.asarray(loss, jnp.float32), jnp.asarray(mask), "sum")
    np.testing.assert_allclose(got_mean, loss[mask].mean(), rtol=1e-6)
    np.testing.assert_allclose(got_sum, loss[mask].sum(), rtol=1e-6)
    per_token = np.broadcast_to(mask[:, None], loss.shape).copy()
    per_token[0, 1] = False
    got = scaling.reduce_loss(jnp.asarray(loss, jnp.float32), jnp.asarray(per_token))
    np.testing.assert_allclose(got, loss[per_token].mean(), rtol=1e-6)


def test_reduce_loss_keeps_the_dtype():
    loss = jnp.asarray([1.0, 2.0, 4.0], jnp.bfloat16)
    out = scaling.reduce_loss(loss, jnp.asarray([True, False, True]))
    assert out.dtype == jnp.bfloat16 and float(out) == 2.5


# ----------------------------------------------------------------- learning-rate rules


@pytest.mark.parametrize("rule", scaling.LR_RULES)
def test_rules_by_hand_with_traced_batch_sizes(rule):
    sizes = np.array([8, 32, 128, 200], np.int32)
    hand = {
        "none": [0.1] * 4,
        "linear": [0.1 * b / 32 for b in sizes],
        "sqrt": [0.1 * math.sqrt(b / 32) for b in sizes],
    }[rule]
    got = jax.jit(jax.vmap(lambda b: scaling.scale_learning_rate(jnp.float32(0.1), b, 32, rule)))(
        jnp.asarray(sizes)
    )
    np.testing.assert_allclose(np.broadcast_to(got, sizes.shape), hand, rtol=1e-6)
    # Traced learning rate and base batch size too.
    got = jax.jit(lambda lr, b, b0: scaling.scale_learning_rate(lr, b, b0, rule))(
        jnp.float32(0.1), jnp.int32(128), jnp.int32(32)
    )
    np.testing.assert_allclose(got, hand[2], rtol=1e-6)


@pytest.mark.parametrize(
    "lr, dtype",
    [
        (0.1, jnp.float32),
        (jnp.float32(0.1), jnp.float32),
        (jnp.bfloat16(0.5), jnp.bfloat16),
        (1, jnp.float32),
    ],
)
def test_the_learning_rate_keeps_its_float_dtype(lr, dtype):
    for rule in ("linear", "sqrt"):
        out = scaling.scale_learning_rate(lr, jnp.int32(64), 16, rule)
        assert jnp.asarray(out).dtype == dtype
        expected = float(lr) * (4.0 if rule == "linear" else 2.0)
        np.testing.assert_allclose(float(out), expected, rtol=1e-6)


def test_a_schedule_is_scaled_at_every_step():
    def decay(count):
        return 0.1 / (1.0 + count.astype(jnp.float32))

    schedule = scaling.scale_learning_rate(decay, 64, 16, "sqrt")
    np.testing.assert_allclose(schedule(jnp.int32(3)), 0.1 / 4 * 2.0, rtol=1e-6)


def test_unknown_names_and_bad_sizes_raise_value_error():
    with pytest.raises(ValueError, match=r"^reduction='avg' is invalid: expected one of 'mean', 'sum'$"):
        scaling.reduce_loss(jnp.ones(3), reduction="avg")
    rules = "'none', 'linear', 'sqrt'"
    with pytest.raises(ValueError, match=rf"^rule='cubic' is invalid: expected one of {rules}$"):
        scaling.scale_learning_rate(0.1, 8, 8, "cubic")
    with pytest.raises(ValueError, match=r"batch_size=0 is invalid"):
        scaling.scale_learning_rate(0.1, 0, 8, "linear")
    with pytest.raises(ValueError, match=r"base_batch_size=-1 is invalid"):
        scaling.scale_learning_rate(0.1, 8, -1, "sqrt")
    with pytest.raises(ValueError, match=r"mask has shape \(2,\) but per_example_loss has shape \(3,\)"):
        scaling.reduce_loss(jnp.ones(3), jnp.ones(2, bool))
