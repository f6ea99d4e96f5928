"""Measurements inside the sweep, each against an independent reference.

The references are a plain optax loop (``tests/_reference.py``) with the quantity
computed again here: ``eigvalsh`` of the full Hessian, the noise scale's closed form
in float64 NumPy, batch-norm statistics by hand, and
``_reference.gradient_descent_sharpness`` for full-batch gradient descent.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _reference import full_batch_loss, gradient_descent_sharpness, model_fns, optax_loop
from jax.flatten_util import ravel_pytree

from jaxopt_lab import data, measure
from jaxopt_lab.engine import chunks as chunks_lib
from jaxopt_lab.engine import sweep as sweep_lib
from jaxopt_lab.engine import train as T
from jaxopt_lab.measure.targets import Target

_rng = np.random.default_rng(0)
_X = _rng.normal(size=(56, 3)).astype(np.float32)
_Y = ((_X[:, 0] + 0.5 * _X[:, 1] > 0).astype(np.int32) + (_X[:, 2] > 0.8)).astype(np.int32)
TINY = data.from_arrays(_X[:40], _Y[:40], _X[40:], _Y[40:], name="tiny")
MLP = {"hidden": (4,), "activation": "tanh"}


def _spec(**fields):
    base = dict(
        dataset=TINY,
        model="mlp",
        model_options=MLP,
        optimizer="sgd",
        batch_size=8,
        steps=12,
        eval_every=4,
        measure_batch_size=64,  # more than the 40 examples: the whole training set
    )
    return T.TrainSpec(**{**base, **fields})


def _ce(model, params, state, x, y):
    out, _ = model.apply(params, state, x, train=False)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))


def test_measurements_against_a_plain_loop_and_eigvalsh():
    """sharpness = eigvalsh's top eigenvalue of the full Hessian; grad_norm, param_norm,
    update_ratio, train_set and a user's function against the same quantities computed
    in the test from a plain optax loop's parameters."""

    def mine(params, model_state, batch):
        del model_state
        return {"x_mean": jnp.mean(batch[0]), "w_sum": sum(jnp.sum(p) for p in jax.tree.leaves(params))}

    names = [measure.Sharpness(num_iters=300, num_warm_iters=300), "grad_norm", "param_norm", "update_ratio"]
    spec = _spec(measure=[*names, "train_set", mine])
    result = sweep_lib.sweep(spec, sweep_lib.Grid(learning_rate=[2.0]), progress=False)
    model = T.get_model(spec, TINY)
    x, y = TINY.x_train, TINY.y_train
    _, unravel = ravel_pytree(model.init(jax.random.key(0), x[:1])[0])
    hessian = jax.jit(jax.hessian(lambda f: _ce(model, unravel(f), {}, x, y)))
    gradient = jax.jit(jax.grad(lambda p: _ce(model, p, {}, x, y)))
    for lr in (2.0,):
        last = {}

        def on_step(params, state, xb, yb, updates, last=last):
            last["ratio"] = float(optax.tree.norm(updates) / optax.tree.norm(params))

        def at_points(params, state, last=last):
            eigenvalues = np.linalg.eigvalsh(np.asarray(hessian(ravel_pytree(params)[0]), np.float64))
            loss = _ce(model, params, state, x, y)
            out, _ = model.apply(params, state, x, train=False)
            return {
                "sharpness": eigenvalues[np.argmax(np.abs(eigenvalues))],  # power iteration's
                "grad_norm": float(optax.tree.norm(gradient(params))),
                "param_norm": float(np.sqrt(sum(np.sum(np.square(p)) for p in jax.tree.leaves(params)))),
                "update_ratio": last["ratio"],
                "train_set_loss": float(loss),
                "train_set_accuracy": float(np.mean(np.argmax(out, -1) == y)),
                "x_mean": float(np.mean(np.asarray(x, np.float64))),
                "w_sum": float(sum(np.sum(p) for p in jax.tree.leaves(params))),
            }

        ref = optax_loop(
            TINY, *model_fns(model), optax.sgd(lr), batch_size=8, steps=12, eval_every=4, seed=0,
            at_points=at_points, on_step=on_step,
        )  # fmt: skip
        rows = result.table[result.table["learning_rate"] == lr].sort_values("step")
        np.testing.assert_allclose(rows["test_loss"], ref.test_loss, rtol=1e-5)
        for name, expected in ref.measured.items():
            np.testing.assert_allclose(rows[name], expected, rtol=2e-4, atol=1e-6, err_msg=name)


def test_sharpness_warm_starts_from_the_previous_point():
    """Three warm iterations per point stay on eigvalsh's value, where three from a
    cold start do not: each point continues from the previous point's vector."""
    spec = _spec(steps=6, eval_every=1, measure=[measure.Sharpness(num_iters=300, num_warm_iters=3)])
    result = sweep_lib.sweep(spec, sweep_lib.Grid(learning_rate=[0.05]), progress=False)
    model = T.get_model(spec, TINY)
    x, y = TINY.x_train, TINY.y_train
    cold = []
    _, unravel = ravel_pytree(model.init(jax.random.key(0), x[:1])[0])
    loss = lambda f: _ce(model, unravel(f), {}, x, y)  # noqa: E731
    hessian = jax.jit(jax.hessian(loss))

    def at_points(params, state):
        flat = ravel_pytree(params)[0]
        matrix = np.asarray(hessian(flat), np.float64)
        eigenvalues = np.linalg.eigvalsh(matrix)
        v = np.asarray(jax.random.normal(jax.random.key(0), flat.shape), np.float64)
        for _ in range(3):  # three power iterations from the cold start
            v = matrix @ v / np.linalg.norm(matrix @ v)
        cold.append(float(v @ matrix @ v))
        return {"sharpness": eigenvalues[np.argmax(np.abs(eigenvalues))]}

    ref = optax_loop(
        TINY, *model_fns(model), optax.sgd(0.05), batch_size=8, steps=6, eval_every=1, seed=0,
        at_points=at_points,
    )  # fmt: skip
    warm = result.table.sort_values("step")["sharpness"].to_numpy()
    np.testing.assert_allclose(warm, ref.measured["sharpness"], rtol=1e-4)
    assert np.max(np.abs(np.asarray(cold) / ref.measured["sharpness"] - 1)) > 1e-2


def test_full_batch_sharpness_equals_gradient_descent_sharpness():
    """Full-batch SGD in a sweep, squared error on one-hot targets: the sharpness and the
    loss at each point equal ``gradient_descent_sharpness`` (the edge-of-stability
    experiment's loop), which also starts from ``key(0)``'s vector."""
    arrays, n = TINY, 40

    def squared_error(outputs, labels):
        return 0.5 * jnp.sum(jnp.square(outputs - jax.nn.one_hot(labels, outputs.shape[-1])), axis=-1)

    options = {"hidden": (8, 8), "activation": "tanh"}  # a tanh MLP, as the experiment's
    spec = T.TrainSpec(
        dataset=arrays, model="mlp", model_options=options, optimizer="sgd", batch_size=n, steps=60,
        eval_every=20, loss=squared_error, measure=[measure.Sharpness(100, 20), "train_set"],
    )  # fmt: skip
    result = sweep_lib.sweep(spec, sweep_lib.Grid(learning_rate=[0.5]), progress=False)
    model = T.get_model(spec, arrays)
    params, _ = model.init(jax.random.split(jax.random.key(0))[0], arrays.x_train[:1])
    loss_fn = full_batch_loss(model, arrays.x_train, arrays.y_train, loss="mse")
    trace = gradient_descent_sharpness(
        loss_fn, params, 0.5, num_steps=60, sharpness_every=20, num_warm_iters=20, num_iters=100
    )
    rows = result.table.sort_values("step")
    np.testing.assert_allclose(rows["sharpness"], np.asarray(trace.sharpness)[1:], rtol=1e-4)
    losses = np.append(np.asarray(trace.loss), float(loss_fn(trace.params)))
    np.testing.assert_allclose(rows["train_set_loss"], losses[[20, 40, 60]], rtol=1e-5)


def _regression(n=1024, d=4):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n + 64, d)).astype(np.float32)
    y = (x @ rng.normal(size=(d, 1)) + 0.5 * rng.normal(size=(n + 64, 1))).astype(np.float32)
    return data.from_arrays(x[:n], y[:n], x[n:], y[n:], name="linreg")


def test_noise_scale_against_the_closed_form_on_linear_regression():
    """At fixed parameters (lr 1e-9), B_simple from per-example gradients on the whole set
    is the closed form tr(Σ)/|G|² of the dataset's per-example gradients in float64. The
    steps' running estimate (batch sizes 16 and 32 in one masked program) equals McCandlish
    et al.'s two-batch estimates of |G|² and tr(Σ) from each batch and its first half,
    averaged by the EMA, written here in float64 on a plain loop's batches (with the
    finite-population terms of batches drawn without replacement); and it lands near the
    closed form."""
    ds = _regression()
    n = ds.x_train.shape[0]
    decay = 0.998
    spec = T.TrainSpec(
        dataset=ds, model="linear", optimizer="sgd", steps=400, eval_every=400, measure_batch_size=n,
        measure=[measure.NoiseScale(ema_decay=decay)],
    )  # fmt: skip
    grid = sweep_lib.Grid(learning_rate=[1e-9], batch_size=[16, 32])
    result = sweep_lib.sweep(spec, grid, strategy="mask", progress=False)
    assert result.strategy == "mask"
    model = T.get_model(spec, ds)

    def per_example(params, x, y):  # gradients of 0.5 (x.w + b - y)² in float64
        w = np.asarray(params["dense_0"]["kernel"], np.float64)[:, 0]
        b = float(np.asarray(params["dense_0"]["bias"])[0])
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)[:, 0]
        residual = x @ w + b - y
        return np.concatenate([residual[:, None] * x, residual[:, None]], axis=1)

    params, _ = model.init(jax.random.split(jax.random.key(0))[0], ds.x_train[:1])
    g = per_example(params, ds.x_train, ds.y_train)
    mean = g.mean(0)
    trace_pop = np.sum((g - mean) ** 2) / n
    assert result.table["noise_scale"].to_numpy() == pytest.approx(trace_pop / (mean @ mean), rel=1e-3)
    for batch_size in (16, 32):
        ema = {"g2": 0.0, "trace": 0.0}

        def on_step(params, state, xb, yb, updates, ema=ema, big=batch_size):
            grads = per_example(params, xb, yb)
            small = big // 2
            sq_big, sq_small = np.sum(grads.mean(0) ** 2), np.sum(grads[:small].mean(0) ** 2)
            g2 = (big * sq_big - small * sq_small) / (big - small)
            trace = (sq_small - sq_big) / (1 / small - 1 / big)
            ema["g2"] = decay * ema["g2"] + (1 - decay) * g2
            ema["trace"] = decay * ema["trace"] + (1 - decay) * trace

        optax_loop(
            ds, *model_fns(model), optax.sgd(1e-9), batch_size=batch_size, steps=400, eval_every=400,
            seed=0, on_step=on_step,
        )  # fmt: skip
        row = result.table[result.table["batch_size"] == batch_size].iloc[0]
        # E|G_B|² = |G|² + tr(Σ)(n - B)/(B (n - 1)) without replacement: the two-batch estimates
        # tend to n/(n-1) tr(Σ) and |G|² - tr(Σ)/(n - 1), which the engine undoes.
        trace, g2 = ema["trace"] * (n - 1) / n, ema["g2"] + ema["trace"] / n
        assert row["noise_scale_running"] == pytest.approx(trace / g2, rel=1e-3)
        assert row["noise_scale_running"] == pytest.approx(trace_pop / (mean @ mean), rel=0.35)

    # A measurement batch of 256 of the 1024 (numpy seed 0, as documented): its sample s² and
    # ḡ, with the finite-population terms of drawing it without replacement.
    sub = np.sort(np.random.default_rng(0).choice(n, 256, replace=False))
    alone = T.train(dataclasses.replace(spec, measure_batch_size=256, steps=1), {"learning_rate": 1e-9})
    g_sub = per_example(params, ds.x_train[sub], ds.y_train[sub])
    s2 = np.sum((g_sub - g_sub.mean(0)) ** 2) / 255
    expected = (s2 * (n - 1) / n) / (g_sub.mean(0) @ g_sub.mean(0) - s2 * (n - 256) / (256 * n))
    assert float(alone.measured["noise_scale"][0]) == pytest.approx(expected, rel=1e-3)
    running_only = dataclasses.replace(spec, measure=[measure.NoiseScale(per_example=False)])
    assert T.measurement_columns(running_only, ds) == ("noise_scale_running",)


def test_batchnorm_running_statistics_error_by_hand():
    """bn_stats_error: the running mean and variance of the one batch-norm layer against
    the mean and biased variance of its input over the training set, computed in NumPy
    from a plain loop's parameters."""
    options = {"hidden": (4,), "batchnorm": True}
    spec = _spec(model_options=options, optimizer="adam", measure=["bn_stats_error"])
    result = sweep_lib.sweep(spec, sweep_lib.Grid(learning_rate=[0.01]), progress=False)
    model = T.get_model(spec, TINY)

    def at_points(params, state):
        h = np.asarray(TINY.x_train, np.float64) @ np.asarray(params["dense_0"]["kernel"], np.float64)
        mean, var = h.mean(0), h.var(0)
        run = state["bn_0"]
        z = (np.asarray(run.mean, np.float64) - mean) / np.sqrt(var)
        log_ratio = np.log(np.asarray(run.var, np.float64) / var)
        return {"bn_mean_error": np.sqrt(np.mean(z**2)), "bn_var_error": np.sqrt(np.mean(log_ratio**2))}

    ref = optax_loop(
        TINY, *model_fns(model), optax.adam(0.01), batch_size=8, steps=12, eval_every=4, seed=0,
        at_points=at_points,
    )  # fmt: skip
    rows = result.table.sort_values("step")
    for name, expected in ref.measured.items():
        np.testing.assert_allclose(rows[name], expected, rtol=1e-4, err_msg=name)


def test_a_config_measured_in_a_sweep_equals_it_run_alone_and_measuring_changes_no_number():
    """Under the mask strategy with an epochs budget the chunk stops at the union of its
    configs' points: a config's warm-started sharpness (one iteration per point, so an
    extra one would show) and its running noise scale are train()'s; and the training
    numbers are those of a run without measurements."""
    measured = [measure.Sharpness(num_iters=5, num_warm_iters=1), "noise_scale"]
    spec = _spec(eval_every=3, measure=measured)
    grid = sweep_lib.Grid(learning_rate=[0.5], batch_size=[8, 16])
    result = sweep_lib.sweep(spec, grid, epochs=4, strategy="mask", progress=False)
    assert result.strategy == "mask"
    # Batch 8 runs 20 steps, evaluated at 3, 6, ..., 18, 20; batch 16 runs 8, so the chunk
    # also stops at 8, a point of batch 16's only.
    alone = T.train(_spec(eval_every=3, measure=measured, steps=20), {"learning_rate": 0.5})
    rows = result.table[result.table["batch_size"] == 8].sort_values("step")
    np.testing.assert_array_equal(rows["step"], alone.step)
    for name in ("sharpness", "noise_scale", "noise_scale_running"):
        np.testing.assert_allclose(rows[name], alone.measured[name], rtol=1e-5, err_msg=name)
    plain = T.train(_spec(eval_every=3, steps=20), {"learning_rate": 0.5})
    np.testing.assert_allclose(alone.train_loss, plain.train_loss, rtol=1e-6)
    np.testing.assert_allclose(alone.test_loss, plain.test_loss, rtol=1e-6)


def test_target_stops_each_config_at_its_first_point_and_ends_the_chunk(monkeypatch):
    """steps_to_target is the first point where a plain loop's test loss is at most the
    target (interpolated between points when asked); the config's rows end there, one
    that never reaches it runs its budget with NaN, and a chunk whose configs all
    reached it ends early."""
    model = T.get_model(_spec(), TINY)
    curves = {
        lr: optax_loop(TINY, *model_fns(model), optax.sgd(lr), batch_size=8, steps=40, eval_every=4, seed=0)
        for lr in (0.5, 1.0, 1e-4)
    }
    target = float(np.mean(curves[0.5].test_loss[2:4]))  # crossed between the 3rd and 4th points
    expected = {lr: c.step[np.argmax(c.test_loss <= target)] for lr, c in curves.items() if lr != 1e-4}
    assert expected[0.5] == 16

    segments = []
    to_host = chunks_lib._to_host
    monkeypatch.setattr(chunks_lib, "_to_host", lambda tree: segments.append(1) or to_host(tree))
    spec = _spec(steps=40, target=Target("test_loss", target, interpolate=True))
    result = sweep_lib.sweep(spec, sweep_lib.Grid(learning_rate=[0.5, 1.0, 1e-4]), progress=False)
    summary = result.summary().set_index("learning_rate")
    for lr, step in expected.items():
        rows = result.table[result.table["learning_rate"] == lr]
        assert rows["step"].max() == step  # the rows end at the point
        np.testing.assert_allclose(rows["test_loss"], curves[lr].test_loss[: len(rows)], rtol=1e-5)
        i = len(rows) - 1
        before, at = curves[lr].test_loss[i - 1], curves[lr].test_loss[i]
        interpolated = step - 4 + 4 * (before - target) / (before - at)
        assert summary.loc[lr, "steps_to_target"] == pytest.approx(interpolated, rel=1e-6)
        assert summary.loc[lr, "examples_to_target"] == pytest.approx(8 * interpolated, rel=1e-6)
    assert np.isnan(summary.loc[1e-4, "steps_to_target"])
    assert result.table[result.table["learning_rate"] == 1e-4]["step"].max() == 40
    assert len(segments) == 10  # every point: one config never reaches the target

    segments.clear()
    fast = sweep_lib.sweep(spec, sweep_lib.Grid(learning_rate=[0.5, 1.0]), progress=False)
    assert len(segments) == max(expected.values()) // 4  # ended at the slower one's point
    best = fast.best_learning_rates()  # with a target, by steps to it
    assert "steps_to_target_mean" in best.columns
    assert best["learning_rate"].item() == min(expected, key=lambda lr: (expected[lr], lr))


def test_target_mode_max_on_accuracy_and_without_interpolation():
    model = T.get_model(_spec(), TINY)
    ref = optax_loop(TINY, *model_fns(model), optax.sgd(1.0), batch_size=8, steps=40, eval_every=4, seed=0)
    value = float(np.unique(ref.test_accuracy)[-2])  # reached before the best point
    spec = _spec(steps=40, target={"test_accuracy": value})
    assert spec.target.mode == "max"
    result = sweep_lib.sweep(spec, sweep_lib.Grid(learning_rate=[1.0]), progress=False)
    step = ref.step[np.argmax(ref.test_accuracy >= value)]
    assert result.table["steps_to_target"].unique().tolist() == [step]
    assert result.table["step"].max() == step


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"measure": ["nope"]}, "measure 'nope' is invalid: expected one of 'sharpness'"),
        (
            {"measure": ["bn_stats_error"]},
            "measure 'bn_stats_error' is invalid for model='mlp' without batchnorm",
        ),
        (
            {
                "measure": {"bn_stats_error": {"layer": 1}},
                "model_options": {"hidden": (4,), "batchnorm": True},
            },
            r"BatchNormError\(layer=1\) is invalid: the model has 1 batch-norm layers",
        ),
        (
            {"measure": [lambda p, s, b: {"v": b[0][:, 0]}]},
            r"returned 'v' of shape \(40,\): expected a scalar",
        ),
        ({"measure": [lambda p, s, b: {"sharpness": 1.0}, "sharpness"]}, "returns column 'sharpness'"),
        ({"measure": [lambda p, s, b: {"step": 1.0}]}, "column 'step', which the results table has"),
        ({"measure": [lambda p, s, b: [1.0]]}, "returned list: expected a dict"),
        ({"measure": ["sharpness", "sharpness"]}, "measure 'sharpness' is given twice"),
        ({"measure": ["noise_scale"], "batch_size": 1}, "expected batch_size >= 2"),
        ({"measure": {"sharpness": {"num_iters": 0}}}, r"Sharpness\(num_iters=0\) is invalid"),
        ({"measure": {"sharpness": {"iters": 5}}}, r"measure 'sharpness' options \['iters'\] are invalid"),
        ({"target": {"nope": 1.0}}, "target metric 'nope' is invalid: expected one of 'train_loss'"),
        ({"target": {"val_loss": 1.0}}, "target metric 'val_loss' is invalid"),
        ({"target": {"a": 1.0, "b": 2.0}}, "expected one metric and its value"),
        ({"target": {"train_loss": float("nan")}}, "expected a finite number"),
        ({"target": {"metric": "train_loss", "value": 1.0, "mode": "up"}}, "target mode='up' is invalid"),
        ({"target": {"metric": "train_loss", "value": 1.0, "when": 2}}, "target key 'when' is invalid"),
    ],
)
def test_bad_measurements_and_targets_are_one_line(fields, match):
    with pytest.raises(ValueError, match=match):
        spec = _spec(**fields)
        T.measurement_columns(spec, TINY)


def test_geometric_evaluation_points_against_a_plain_loop():
    """eval_growth=1.5 from eval_every=2 over 20 steps (an epochs budget): 2, 3, 4, 6, 9, 13,
    19, 20 (each max(previous + 1, floor(1.5 previous))), with a plain loop's numbers there."""
    points = [2, 3, 4, 6, 9, 13, 19, 20]
    spec = _spec(steps=1, eval_every=2, eval_growth=1.5)
    result = sweep_lib.sweep(spec, sweep_lib.Grid(learning_rate=[0.5]), epochs=4, progress=False)
    assert result.table["step"].tolist() == points  # 40 // 8 * 4 = 20 steps
    model = T.get_model(spec, TINY)
    ref = optax_loop(
        TINY, *model_fns(model), optax.sgd(0.5), batch_size=8, steps=20, eval_every=2, seed=0, points=points
    )
    np.testing.assert_allclose(result.table["train_loss"], ref.train_loss, rtol=1e-5)
    np.testing.assert_allclose(result.table["test_loss"], ref.test_loss, rtol=1e-5)
    assert T.eval_steps(20, 2, 1.5) == points  # train()'s points
    with pytest.raises(ValueError, match=r"eval_growth=1.0 is invalid: expected a number > 1"):
        _spec(eval_growth=1.0)


def test_a_measured_chunk_with_a_target_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """A chunk stopped after its fifth checkpoint (step 20, past one config's target at 16)
    resumes from it with its measurements' carries and its reached flags: the table of the
    uninterrupted sweep."""
    from jaxopt_lab.outputs import checkpoints

    model = T.get_model(_spec(), TINY)
    ref = optax_loop(TINY, *model_fns(model), optax.sgd(0.5), batch_size=8, steps=40, eval_every=4, seed=0)
    target = float(np.mean(ref.test_loss[2:4]))  # reached at step 16
    spec = _spec(steps=40, measure=[measure.Sharpness(num_iters=5, num_warm_iters=1), "noise_scale"])
    grid = sweep_lib.Grid(learning_rate=[0.5, 1e-4])
    whole = sweep_lib.sweep(spec, grid, target={"test_loss": target}, progress=False).table
    assert whole[whole["learning_rate"] == 0.5]["step"].max() == 16
    saves = {"n": 0}
    real = checkpoints.ChunkCheckpoint.maybe_save

    def save_then_stop(self, *args, **kwargs):
        saved = real(self, *args, **kwargs)
        saves["n"] += bool(saved)
        if saves["n"] == 5:
            raise KeyboardInterrupt
        return saved

    monkeypatch.setattr(checkpoints.ChunkCheckpoint, "maybe_save", save_then_stop)
    options = dict(
        target={"test_loss": target}, out=tmp_path, checkpoint_every=0, progress=False, plots=False
    )
    with pytest.raises(KeyboardInterrupt):
        sweep_lib.sweep(spec, grid, **options)
    monkeypatch.undo()
    resumed = sweep_lib.sweep(spec, grid, resume=True, **options).table
    import pandas as pd

    pd.testing.assert_frame_equal(resumed, whole)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"measure": ["noise_scale"]}, "measure 'noise_scale' is invalid for batch_size=1"),
        ({"target": {"val_loss": 1.0}}, "target metric 'val_loss' is invalid"),
    ],
)
def test_a_sweep_refuses_measurements_its_groups_cannot_run_before_writing(tmp_path, options, match):
    """A batch size of 1 on a grid axis (noise_scale splits each batch) and a target on a
    column the run does not have are refused before the output folder exists."""
    with pytest.raises(ValueError, match=match):
        sweep_lib.sweep(
            _spec(), sweep_lib.Grid(batch_size=[1, 8]), out=tmp_path / "out", progress=False, **options
        )
    assert not (tmp_path / "out").exists()


def test_measurements_split_over_the_data_axis_give_the_one_device_numbers():
    """With each config's batch split over 2 devices (a (config, data) mesh of the suite's 4),
    the measurements, the running noise scale's half-batch gradients included, are those of
    one device, up to float reordering."""
    spec = _spec(measure=[measure.Sharpness(num_iters=20, num_warm_iters=5), "noise_scale", "grad_norm"])
    grid = sweep_lib.Grid(learning_rate=[0.5, 1.0])
    alone = sweep_lib.sweep(spec, grid, devices=jax.devices()[:1], progress=False).table
    split = sweep_lib.sweep(spec, grid, data_parallel=2, progress=False).table
    assert len(jax.devices()) == 4
    for name in ("train_loss", "sharpness", "noise_scale", "noise_scale_running", "grad_norm"):
        np.testing.assert_allclose(split[name], alone[name], rtol=1e-4, err_msg=name)
