"""Tests for jaxopt_lab.studies against hand-built tables, closed forms and float64 NumPy.

The model is linear regression (``0.5 * (x·w + b - y)²``): its per-example
gradients, Hessian and SGD trajectory are written out in NumPy here, independently
of the code under test.
"""

import dataclasses
import math

import jax
import numpy as np
import pandas as pd
import pytest

from jaxopt_lab import data as data_lib
from jaxopt_lab import studies
from jaxopt_lab.train import TrainSpec

N, DIM = 64, 3
SPEC = TrainSpec(
    dataset="regression",
    dataset_options={"n": N, "dim": DIM, "n_test": 16, "noise": 0.5},
    model="linear",
    optimizer="sgd",
    batch_size=8,
    steps=10,
    eval_every=5,
)


def _data():
    ds = data_lib.load("regression", n=N, dim=DIM, n_test=16, noise=0.5)
    return (
        np.asarray(ds.x_train, np.float64),
        np.asarray(ds.y_train, np.float64),
        np.asarray(ds.x_test, np.float64),
        np.asarray(ds.y_test, np.float64),
    )


def _wb(states, i):
    p = states.params["dense_0"]
    return np.asarray(p["kernel"][i], np.float64), np.asarray(p["bias"][i], np.float64)


def _loss(w, b, x, y):
    return float(np.mean(0.5 * np.sum((x @ w + b - y) ** 2, axis=1)))


# ------------------------------------------------------------------ grids and fits


def test_log_grid_by_hand():
    np.testing.assert_allclose(
        studies.log_grid(1e-2, 1.0, per_decade=2), [0.01, 10**-1.5, 0.1, 10**-0.5, 1.0]
    )
    np.testing.assert_allclose(
        studies.log_grid(0.02, 0.5, per_decade=4), [10**-1.5, 10**-1.25, 0.1, 10**-0.75, 10**-0.5]
    )
    assert studies.log_grid(1.0, 1.0).tolist() == [1.0]


@pytest.mark.parametrize(
    "args, match", [((0.0, 1.0), "low"), ((1.0, 0.5), "high"), ((1e-3, 1.0, 0), "per_decade")]
)
def test_log_grid_rejects(args, match):
    with pytest.raises(ValueError, match=match):
        studies.log_grid(*args)


def test_log_slope_of_a_power_law():
    x = np.array([1.0, 4.0, 16.0, 64.0, np.nan])
    assert studies.log_slope(x, 3.0 * x**0.7) == pytest.approx(0.7)
    with pytest.raises(ValueError, match="two distinct"):
        studies.log_slope([2.0, 2.0], [1.0, 3.0])


def test_fit_recovers_a_known_critical_batch_size():
    b = np.array([4.0, 8.0, 32.0, 128.0, 512.0, 4000.0])
    fit = studies.fit_critical_batch_size(b, 200.0 * (1 + 150.0 / b))
    assert fit.s_min == pytest.approx(200.0, rel=1e-6)
    assert fit.b_crit == pytest.approx(150.0, rel=1e-6)
    assert fit.e_min == pytest.approx(30000.0, rel=1e-6)
    assert fit.rms_log_residual < 1e-8
    # Multiplicative noise of a few percent moves the fit by about as much; NaN points are ignored.
    noise = np.exp(np.random.default_rng(0).normal(0.0, 0.03, b.size))
    fit = studies.fit_critical_batch_size(np.r_[b, 16.0], np.r_[50.0 * (1 + 900.0 / b) * noise, np.nan])
    assert fit.b_crit == pytest.approx(900.0, rel=0.15)
    assert fit.s_min == pytest.approx(50.0, rel=0.15)
    assert 0.005 < fit.rms_log_residual < 0.06


def test_fit_rejects_too_few_points():
    with pytest.raises(ValueError, match="two distinct"):
        studies.fit_critical_batch_size([4, 8], [100.0, np.nan])
    with pytest.raises(ValueError, match="same length"):
        studies.fit_critical_batch_size([4, 8], [100.0])


def test_geometric_steps_by_hand():
    assert studies.geometric_steps(10, 1.5).tolist() == [1, 2, 3, 4, 6, 9, 10]
    steps = studies.geometric_steps(5000, 1.05)
    assert steps[0] == 1 and steps[-1] == 5000
    ratios = steps[1:] / steps[:-1]
    assert np.all((ratios <= 1.05 + 1e-12) | (np.diff(steps) == 1))
    with pytest.raises(ValueError, match="growth"):
        studies.geometric_steps(10, 1.0)


# ------------------------------------------------------------------ tables


def _results_table(rows):
    """A results table from (config_id, optimizer, lr, B, reduction, eps, [train_loss...]) rows."""
    out = []
    for cid, opt, lr, b, red, eps, losses in rows:
        for step, loss in enumerate(losses, start=1):
            out.append(
                {
                    "config_id": cid,
                    "optimizer": opt,
                    "learning_rate": lr,
                    "batch_size": b,
                    "seed": 0,
                    "reduction": red,
                    "eps": eps,
                    "step": step,
                    "examples_seen": step * b,
                    "train_loss": loss,
                    "test_loss": loss + 1.0,
                    "test_accuracy": np.nan,
                    "diverged": bool(np.isnan(loss)),
                }
            )
    return pd.DataFrame(out)


def test_rescaled_gaps_pairs_sum_at_lr_with_mean_at_lr_times_b():
    table = _results_table(
        [
            (0, "sgd", 0.4, 4, "mean", np.nan, [2.0, 1.0, 0.5]),
            (1, "sgd", 0.1, 4, "sum", np.nan, [2.0, 1.0, 0.5]),  # partner 0: identical
            (2, "sgd", 0.8, 8, "mean", np.nan, [2.0, 1.0, 0.5]),
            (3, "sgd", 0.1, 8, "sum", np.nan, [2.0, 1.1, 0.5]),  # partner 2: off by 0.1 at step 2
            (4, "sgd", 0.3, 8, "sum", np.nan, [2.0, 1.0, 0.5]),  # no mean at 2.4: left out
            (5, "sgd", 1.6, 16, "mean", np.nan, [2.0, np.nan, np.nan]),
            (6, "sgd", 0.1, 16, "sum", np.nan, [2.0, 1.0, np.nan]),  # NaN against a number: inf
        ]
    )
    gaps = studies.rescaled_gaps(table, {"learning_rate": 1}, metrics=("train_loss",))
    gaps = gaps.set_index("config_id_sum")
    assert sorted(gaps.index) == [1, 3, 6]
    assert gaps.loc[1, "config_id_mean"] == 0 and gaps.loc[1, "max_abs_gap"] == 0.0
    assert gaps.loc[3, "config_id_mean"] == 2
    assert gaps.loc[3, "max_abs_gap"] == pytest.approx(0.1)
    assert gaps.loc[3, "max_rel_gap"] == pytest.approx(0.1 / 1.0)
    assert gaps.loc[6, "max_abs_gap"] == math.inf
    assert bool(gaps.loc[6, "diverged_mean"]) and bool(gaps.loc[6, "diverged_sum"])
    # Without the rescaling nothing pairs: a wrong reduction rule finds no partners.
    assert studies.rescaled_gaps(table).empty


def test_rescaled_gaps_eps_rule_for_adam():
    table = _results_table(
        [
            (0, "adam", 1e-3, 4, "mean", 1e-3, [2.0, 1.0]),
            (1, "adam", 1e-3, 4, "sum", 4e-3, [2.0, 1.0]),
            (2, "adam", 1e-3, 4, "sum", 1e-3, [2.0, 1.5]),
        ]
    )
    gaps = studies.rescaled_gaps(table, {"eps": -1})
    assert gaps[["config_id_sum", "config_id_mean"]].values.tolist() == [[1, 0]]
    with pytest.raises(ValueError, match="exponents"):
        studies.rescaled_gaps(table, {"momentum": 1})
    with pytest.raises(ValueError, match="reduction"):
        studies.rescaled_gaps(table.drop(columns="reduction"))


def test_concat_tables_renumbers_and_keeps_metrics_last():
    a = _results_table([(0, "sgd", 0.1, 4, "mean", np.nan, [1.0]), (1, "sgd", 0.2, 4, "mean", np.nan, [1.0])])
    b = _results_table([(0, "sgd", 0.1, 8, "sum", np.nan, [1.0])]).drop(columns="eps").assign(momentum=0.9)
    out = studies.concat_tables([a, b])
    assert out.config_id.tolist() == [0, 1, 2]
    assert list(out.columns[-6:]) == [
        "step",
        "examples_seen",
        "train_loss",
        "test_loss",
        "test_accuracy",
        "diverged",
    ]
    assert out.momentum.isna().tolist() == [True, True, False]
    assert out.eps.isna().tolist() == [True, True, True]


def test_sweep_per_batch_size_gives_each_batch_size_its_grid_and_evaluations():
    spec = dataclasses.replace(SPEC, eval_every=100)
    table = studies.sweep_per_batch_size(
        spec, [8, 16], lambda b: {"learning_rate": [0.4 / b, 0.8 / b]}, epochs=1, evals_per_epoch=2
    )
    configs = table.drop_duplicates("config_id").set_index("config_id")
    assert sorted(configs.index) == [0, 1, 2, 3]
    assert configs.learning_rate.tolist() == pytest.approx([0.05, 0.1, 0.025, 0.05])
    # One epoch of 64 examples: 8 steps of 8 evaluated every 4, 4 steps of 16 evaluated every 2.
    steps = table.groupby("batch_size").step.unique()
    assert steps[8].tolist() == [4, 8] and steps[16].tolist() == [2, 4]
    first = table[table.config_id == 0]
    w, b = _wb(studies.init_states(dataclasses.replace(SPEC, batch_size=8), {}, [0]), 0)
    assert first.train_loss.notna().all() and first.test_loss.iloc[-1] < _loss(w, b, *_data()[2:])
    with pytest.raises(ValueError, match="batch_size"):
        studies.sweep_per_batch_size(spec, [8], {"batch_size": [8]})


def test_best_steps_by_hand():
    table = pd.DataFrame(
        {
            "optimizer": ["sgd"] * 7,
            "batch_size": [4, 4, 4, 8, 8, 8, 16],
            "learning_rate": [0.1, 0.2, 0.4, 0.1, 0.2, 0.4, 0.1],
            "seed": 0,
            "steps_to_target": [300.0, 200.0, 200.0, np.nan, 150.0, 120.0, np.nan],
        }
    )
    best = studies.best_steps(table).set_index("batch_size")
    assert best.loc[4, "learning_rate"] == 0.2 and best.loc[4, "steps_to_target"] == 200.0  # tie: smaller lr
    assert not best.loc[4, "lr_at_edge"] and best.loc[4, "num_reached"] == 3
    assert best.loc[8, "learning_rate"] == 0.4 and best.loc[8, "lr_at_edge"]
    assert np.isnan(best.loc[16, "learning_rate"]) and best.loc[16, "num_reached"] == 0


def test_best_steps_averages_seeds_and_needs_all_of_them():
    table = pd.DataFrame(
        {
            "optimizer": "sgd",
            "batch_size": 4,
            "learning_rate": [0.1, 0.1, 0.2, 0.2, 0.4, 0.4],
            "seed": [0, 1] * 3,
            "steps_to_target": [100.0, 300.0, 150.0, 170.0, 50.0, np.nan],
            "b_simple_at_target": [np.nan, np.nan, 10.0, 30.0, np.nan, np.nan],
        }
    )
    best = studies.best_steps(table).iloc[0]
    assert best.learning_rate == 0.2 and best.steps_to_target == 160.0  # 0.1 averages 200; 0.4 lacks a seed
    assert best.b_simple_at_target == 20.0 and best.num_seeds == 2 and best.num_reached == 2


@pytest.mark.parametrize(
    "groups, first, dead, step, done",
    [
        ([0, 1], [np.nan, np.nan], [False, False], 10, False),  # nobody there yet
        ([0, 1], [10.0, np.nan], [False, False], 10, True),  # one seed per group: the first one wins
        ([0, 0, 1, 1], [9.0, np.nan, 9.0, 10.0], [False] * 4, 10, True),  # 9.5 <= (9 + 10) / 2
        ([0, 0, 1, 1], [6.0, np.nan, 9.0, 10.0], [False] * 4, 10, False),  # group 0 may still average < 9.5
        ([0, 0, 1, 1], [6.0, np.nan, 9.0, 10.0], [False, True, False, False], 10, True),  # 0 diverged
        ([0, 1], [np.nan, np.nan], [True, True], 10, True),  # everything diverged
    ],
)
def test_target_stop_rule_by_hand(groups, first, dead, step, done):
    assert studies._target_done("first", np.array(groups), np.array(first), np.array(dead), step) == done


# ------------------------------------------------------------------ states and measurements


def test_train_states_follow_numpy_sgd():
    x, y, *_ = _data()
    lrs, seeds = np.array([0.05, 0.2]), [3, 4]
    init = studies.init_states(SPEC, {"learning_rate": lrs}, seeds)
    final = studies.train_states(SPEC, {"learning_rate": lrs}, seeds)
    for i, (lr, seed) in enumerate(zip(lrs, seeds, strict=True)):
        w, b = _wb(init, i)
        data_key = jax.random.split(jax.random.key(seed))[1]  # init_state's split: (params, data order)
        for step in range(SPEC.steps):
            idx, _ = data_lib.batch_indices(data_key, step, N, SPEC.batch_size)
            xb, yb = x[np.asarray(idx)], y[np.asarray(idx)]
            r = xb @ w + b - yb
            w, b = w - lr * xb.T @ r / len(r), b - lr * r.mean(axis=0)
        fw, fb = _wb(final, i)
        np.testing.assert_allclose(fw, w, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(fb, b, rtol=1e-4, atol=1e-6)


def test_evaluate_noise_scale_and_sharpness_against_numpy():
    x, y, xt, yt = _data()
    states = studies.init_states(SPEC, {}, [0, 1])
    ev = studies.evaluate_states(SPEC, states)
    ns = studies.noise_scales(SPEC, states, chunk_size=24)  # 64 = 24 + 24 + 16
    sh = studies.sharpness(SPEC, states, num_iters=200)
    xa = np.c_[x, np.ones(N)]
    for i in range(2):
        w, b = _wb(states, i)
        assert ev.train_loss[i] == pytest.approx(_loss(w, b, x, y), rel=1e-5)
        assert ev.test_loss[i] == pytest.approx(_loss(w, b, xt, yt), rel=1e-5)
        assert np.isnan(ev.test_accuracy[i])
        g = (xa @ np.r_[w[:, 0], b] - y[:, 0])[:, None] * xa  # per-example gradients (w, b)
        mean = g.mean(axis=0)
        trace = np.sum((g - mean) ** 2) / N  # the training set is the population
        assert ns.trace_cov[i] == pytest.approx(trace, rel=1e-4)
        assert ns.grad_sq_norm[i] == pytest.approx(mean @ mean, rel=1e-4)
        assert ns.b_simple[i] == pytest.approx(trace / (mean @ mean), rel=1e-4)
        top = np.linalg.eigvalsh(xa.T @ xa / N)[-1]  # Hessian of the mean squared loss
        assert sh.eigenvalue[i] == pytest.approx(top, rel=1e-4)
        assert sh.residual[i] < 1e-3 * top


def test_measurements_are_nan_once_diverged():
    states = studies.init_states(SPEC, {}, [0, 1])
    states = states._replace(diverged=np.array([True, False]))
    assert np.isnan(studies.evaluate_states(SPEC, states).train_loss[0])
    assert np.isnan(studies.noise_scales(SPEC, states).b_simple[0])
    assert np.isfinite(studies.noise_scales(SPEC, states).b_simple[1])
    taken = studies.take_states(states, np.array([1]))
    assert taken.params["dense_0"]["kernel"].shape == (1, DIM, 1)


def test_states_reject_bad_input():
    with pytest.raises(ValueError, match="seeds"):
        studies.train_states(SPEC, {}, [])
    with pytest.raises(ValueError, match="batch_size"):
        studies.train_states(SPEC, {"batch_size": 4}, [0])
    with pytest.raises(ValueError, match="one value per seed"):
        studies.train_states(SPEC, {"learning_rate": [0.1, 0.2, 0.3]}, [0, 1])
    with pytest.raises(ValueError, match="b1"):
        studies.train_states(SPEC, {"b1": 0.9}, [0])


# ------------------------------------------------------------------ steps to target

FULL = dataclasses.replace(SPEC, batch_size=N)  # full batch: gradient descent, no sampling


def _gd_losses(lr, w, b, x, y, steps):
    losses = []
    with np.errstate(over="ignore", invalid="ignore"):  # the largest learning rates diverge
        for _ in range(steps):
            r = x @ w + b - y
            w, b = w - lr * x.T @ r / N, b - lr * r.mean(axis=0)
            losses.append(_loss(w, b, x, y))
    return np.array(losses)


def test_run_to_target_matches_numpy_gradient_descent():
    x, y, *_ = _data()
    lrs = np.array([0.1, 0.3])
    target = 0.2
    runs = studies.run_to_target(
        FULL, {"learning_rate": lrs}, [0, 0], target=target, max_steps=400, growth=1.2
    )
    init = studies.init_states(FULL, {}, [0])
    losses = [_gd_losses(lr, *_wb(init, 0), x, y, 400) for lr in lrs]
    first = [int(np.argmax(lo <= target)) + 1 for lo in losses]  # first step with loss <= target
    points = studies.geometric_steps(400, 1.2)
    expected = [points[np.searchsorted(points, f)] for f in first]  # first evaluated step at or after it
    # stop="first": training stops at the faster config's evaluation; the slower one is not reached yet.
    assert runs.stop_step == min(expected)
    assert runs.steps[1] == expected[1] and np.isnan(runs.steps[0])
    np.testing.assert_allclose(runs.train_loss[0], losses[0][runs.eval_steps - 1], rtol=1e-4)
    runs = studies.run_to_target(
        FULL, {"learning_rate": lrs}, [0, 0], target=target, max_steps=400, growth=1.2, stop="all"
    )
    assert runs.steps.tolist() == expected and runs.stop_step == max(expected)
    # The faster config is frozen where it reached the target: its loss there, not at the stop.
    w, b = _wb(runs.states, 1)
    assert _loss(w, b, x, y) == pytest.approx(losses[1][expected[1] - 1], rel=1e-4)
    assert _loss(w, b, x, y) > losses[1][max(expected) - 1] * (1 + 1e-3)
    with pytest.raises(ValueError, match="stop"):
        studies.run_to_target(FULL, {}, [0], target=target, max_steps=10, stop="any")


def test_steps_to_target_table_shifts_its_window_to_the_best_lr():
    x, y, *_ = _data()
    init = studies.init_states(FULL, {}, [0, 1])
    points = studies.geometric_steps(2000, 1.05)
    numpy_steps = {}
    for k in range(-8, 4):  # grid points 10**(k/4), from 0.01 to 5.6; a learning rate scores its seeds' mean
        hits = [np.flatnonzero(_gd_losses(10 ** (k / 4), *_wb(init, i), x, y, 2000) <= 0.2) for i in (0, 1)]
        evaluated = [points[np.searchsorted(points, h[0] + 1)] if h.size else np.inf for h in hits]
        numpy_steps[k] = np.mean(evaluated)
    best_k = min(numpy_steps, key=lambda k: (numpy_steps[k], k))
    assert -6 < best_k < 2  # the best is inside the searched range, away from its start
    table = studies.steps_to_target_table(
        FULL,
        [N],
        lr_start=10 ** (-7 / 4),
        window=(-1, 1),
        max_shifts=6,
        seeds=(0, 1),
        target=0.2,
        max_steps=2000,
        noise_scale=True,
    )
    best = studies.best_steps(table).iloc[0]
    assert best.learning_rate == pytest.approx(10 ** (best_k / 4))
    assert best.steps_to_target == numpy_steps[best_k]
    assert not best.lr_at_edge and best.num_seeds == 2
    assert np.isfinite(table.b_simple_at_target).sum() == 2
