"""flax NNX models in sweeps: from_nnx against a hand-written NNX + optax training loop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxopt_lab import data as D
from jaxopt_lab.engine import sweep as S
from jaxopt_lab.errors import InputError
from jaxopt_lab.nn import models as M

STEPS, EVAL, BATCH = 20, 10, 32


class Net(nnx.Module):
    def __init__(self, rngs, hidden=16):
        self.dense = nnx.Linear(64, hidden, rngs=rngs)
        self.bn = nnx.BatchNorm(hidden, momentum=0.9, rngs=rngs)
        self.out = nnx.Linear(hidden, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.bn(self.dense(x))))


@nnx.jit
def _step(model, optimizer, xb, yb):
    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(xb), yb).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def _evaluate(model, x, y):
    out = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
    return loss, jnp.mean((jnp.argmax(out, -1) == y).astype(jnp.float32))


def _nnx_loop(tx, seed):
    """The NNX way: a module, nnx.Optimizer, nnx.value_and_grad, train/eval mode."""
    ds = D.load("digits")
    init_key, data_key = jax.random.split(jax.random.key(seed))
    model = Net(nnx.Rngs(init_key))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    rows, losses = [], []
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        for t in range(STEPS):
            idx, _ = D.batch_indices(data_key, t, ds.x_train.shape[0], BATCH)
            model.train()
            losses.append(float(_step(model, optimizer, ds.x_train[idx], ds.y_train[idx])))
            if (t + 1) % EVAL == 0:
                model.eval()
                test_loss, accuracy = _evaluate(model, ds.x_test, ds.y_test)
                rows.append((np.mean(losses), float(test_loss), float(accuracy)))
                losses = []
    return np.asarray(rows)


def test_a_sweep_of_an_nnx_model_with_batch_norm_equals_an_nnx_optax_loop():
    spec = dict(dataset="digits", model=M.from_nnx(Net), optimizer="momentum", steps=STEPS, eval_every=EVAL)
    grid = S.Grid(learning_rate=[0.1], seed=[0, 1], batch_size=[BATCH])
    result = S.sweep(spec, grid, progress=False)
    assert result.strategy == "bucket"
    for lr in (0.1,):
        for seed in (0, 1):
            rows = result.table[(result.table["learning_rate"] == lr) & (result.table["seed"] == seed)]
            expected = _nnx_loop(optax.sgd(lr, momentum=0.9), seed)
            got = rows.sort_values("step")[["train_loss", "test_loss", "test_accuracy"]].to_numpy()
            np.testing.assert_allclose(got[:, :2], expected[:, :2], rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(got[:, 2], expected[:, 2], atol=1.5e-3)  # one test example
    # each seed initialized its own parameters
    first = result.table[result.table["step"] == EVAL].groupby("seed")["train_loss"].first()
    assert first[0] != first[1]


def test_from_flax_takes_an_nnx_constructor_and_refuses_an_instance():
    model = M.from_flax(lambda rngs: Net(rngs, hidden=4))
    params, state = model.init(jax.random.key(0), jnp.ones((2, 64)))
    assert params["dense"]["kernel"].shape == (64, 4)
    assert sorted(state["bn"]) == ["mean", "var"]
    # evaluation mode uses the running statistics and leaves them alone
    x = jax.random.normal(jax.random.key(1), (8, 64))
    out, same = model.apply(params, state, x, train=False)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), state, same))
    _, updated = model.apply(params, state, x, train=True)
    assert not jnp.allclose(updated["bn"]["mean"][...], state["bn"]["mean"][...])
    with pytest.raises(InputError, match="Net instance is invalid: expected its constructor"):
        M.from_nnx(Net(nnx.Rngs(0)))


def test_an_nnx_module_with_dropout_state_is_refused():
    class Dropping(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(64, 10, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x):
            return self.drop(self.dense(x))

    with pytest.raises(InputError, match="supports only nnx.Param and nnx.BatchStat"):
        M.from_nnx(Dropping)
