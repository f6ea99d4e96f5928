"""Tests for jaxopt_lab.analysis.studies against hand-built tables, closed forms and float64 NumPy.

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
from jaxopt_lab.analysis import studies, tables
from jaxopt_lab.analysis.critical_batch import fit_critical_batch_size
from jaxopt_lab.engine import train as T
from jaxopt_lab.engine.train import TrainSpec

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
    fit = fit_critical_batch_size(b, 200.0 * (1 + 150.0 / b))
    assert fit.s_min == pytest.approx(200.0, rel=1e-6)
    assert fit.b_crit == pytest.approx(150.0, rel=1e-6)
    assert fit.e_min == pytest.approx(30000.0, rel=1e-6)
    assert fit.rms_log_residual < 1e-8
    # Multiplicative noise of a few percent moves the fit by about as much; NaN points are ignored.
    noise = np.exp(np.random.default_rng(0).normal(0.0, 0.03, b.size))
    fit = fit_critical_batch_size(np.r_[b, 16.0], np.r_[50.0 * (1 + 900.0 / b) * noise, np.nan])
    assert fit.b_crit == pytest.approx(900.0, rel=0.15)
    assert fit.s_min == pytest.approx(50.0, rel=0.15)
    assert 0.005 < fit.rms_log_residual < 0.06


def test_fit_rejects_too_few_points():
    with pytest.raises(ValueError, match="two distinct"):
        fit_critical_batch_size([4, 8], [100.0, np.nan])
    with pytest.raises(ValueError, match="same length"):
        fit_critical_batch_size([4, 8], [100.0])


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
        studies.rescaled_gaps(table, {"beta": 1})
    with pytest.raises(ValueError, match="reduction"):
        studies.rescaled_gaps(table.drop(columns="reduction"))


def test_concat_tables_renumbers_and_keeps_metrics_last():
    a = _results_table([(0, "sgd", 0.1, 4, "mean", np.nan, [1.0]), (1, "sgd", 0.2, 4, "mean", np.nan, [1.0])])
    b = _results_table([(0, "sgd", 0.1, 8, "sum", np.nan, [1.0])]).drop(columns="eps").assign(beta=0.9)
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
    assert out.beta.isna().tolist() == [True, True, False]
    assert out.eps.isna().tolist() == [True, True, True]


def test_sweep_per_batch_size_gives_each_batch_size_its_grid_and_evaluations():
    spec = dataclasses.replace(SPEC, eval_every=100)
    table = studies.sweep_per_batch_size(
        spec, [8, 16], {"learning_rate": lambda b: [0.4 / b, 0.8 / b]}, epochs=1, evals_per_epoch=2
    )
    configs = table.drop_duplicates("config_id").set_index("config_id")
    assert sorted(configs.index) == [0, 1, 2, 3]
    assert configs.learning_rate.tolist() == pytest.approx([0.05, 0.1, 0.025, 0.05])
    # One epoch of 64 examples: 8 steps of 8 evaluated every 4, 4 steps of 16 evaluated every 2.
    steps = table.groupby("batch_size").step.unique()
    assert steps[8].tolist() == [4, 8] and steps[16].tolist() == [2, 4]
    first = table[table.config_id == 0]
    params, _ = T.get_model(SPEC, T.load_dataset(SPEC.dataset, SPEC.dataset_options)).init(
        jax.random.split(jax.random.key(0))[0], _data()[0][:1].astype(np.float32)
    )
    w, b = (np.asarray(params["dense_0"][k], np.float64) for k in ("kernel", "bias"))
    assert first.train_loss.notna().all() and first.test_loss.iloc[-1] < _loss(w, b, *_data()[2:])
    with pytest.raises(ValueError, match="batch_size"):
        studies.sweep_per_batch_size(spec, [8], {"batch_size": [8]})


def test_best_settings_by_steps_to_target_by_hand():
    configs = pd.DataFrame(
        {
            "optimizer": ["sgd"] * 7,
            "batch_size": [4, 4, 4, 8, 8, 8, 16],
            "learning_rate": [0.1, 0.2, 0.4, 0.1, 0.2, 0.4, 0.1],
            "seed": 0,
            "steps_to_target": [300.0, 200.0, 200.0, np.nan, 150.0, 120.0, np.nan],
            "diverged": False,
        }
    )
    best = tables.best_settings(
        configs, ["optimizer", "batch_size"], "steps_to_target", hparams=list(configs.columns[:4])
    ).set_index("batch_size")
    assert (
        best.loc[4, "learning_rate"] == 0.2 and best.loc[4, "steps_to_target_mean"] == 200.0
    )  # tie: smaller lr
    assert not best.loc[4, "lr_at_edge"] and best.loc[4, "num_diverged_lrs"] == 0
    assert (
        best.loc[8, "learning_rate"] == 0.4
        and best.loc[8, "lr_at_edge"]
        and best.loc[8, "num_diverged_lrs"] == 1
    )
    assert np.isnan(best.loc[16, "learning_rate"]) and best.loc[16, "num_diverged_lrs"] == 1


def test_best_settings_average_seeds_and_need_all_of_them():
    configs = pd.DataFrame(
        {
            "optimizer": "sgd",
            "batch_size": 4,
            "learning_rate": [0.1, 0.1, 0.2, 0.2, 0.4, 0.4, 0.8, 0.8],
            "seed": [0, 1] * 4,
            "steps_to_target": [100.0, 300.0, 150.0, 170.0, 50.0, np.nan, 10.0, 20.0],
            "b_simple_at_target": [np.nan, np.nan, 10.0, 30.0, np.nan, np.nan, 1.0, 1.0],
            "diverged": [False] * 7 + [True],  # 0.8: one seed reached the target, then diverged
        }
    )
    hparams = ["optimizer", "batch_size", "learning_rate", "seed"]
    best = tables.best_settings(
        configs, "batch_size", "steps_to_target", hparams=hparams, report=["b_simple_at_target"]
    ).iloc[0]
    # 0.1 averages 200; 0.4 lacks a seed; 0.8 has a diverged seed.
    assert best.learning_rate == 0.2 and best.steps_to_target_mean == 160.0
    assert best.b_simple_at_target_mean == 20.0 and best.num_seeds == 2 and best.num_diverged_lrs == 2
    assert best.steps_to_target_std == np.std([150.0, 170.0], ddof=1)


def _window_rows(optimum, diverged_above=None):
    """A fake window's configs: steps to target (k - optimum)^2 + 10 for each k, two seeds;
    above ``diverged_above`` every config diverged and has no steps."""
    calls = []

    def run(ks):
        calls.append(list(ks))
        rows = []
        for k in ks:
            dead = diverged_above is not None and k > diverged_above
            for seed in (0, 1):
                steps = np.nan if dead or optimum is None else (k - optimum) ** 2 + 10.0 + seed
                rows.append(
                    dict(learning_rate=10.0 ** (k / 4), seed=seed, k=k, steps_to_target=steps, diverged=dead)
                )
        return pd.DataFrame(rows)

    return run, calls


def test_shift_window_moves_while_the_best_is_at_an_edge():
    hparams = ["learning_rate", "seed"]
    run, calls = _window_rows(optimum=7)
    rows, winner = studies.shift_window(
        run, np.arange(0, 5), "steps_to_target", max_shifts=3, hparams=hparams
    )
    assert calls == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]  # best at 4, the edge: the 5 points above
    assert winner.learning_rate == 10.0 ** (7 / 4) and winner.steps_to_target_mean == 10.5
    assert rows.loc[rows.best, "k"].unique().tolist() == [7] and len(rows) == 20
    run, calls = _window_rows(optimum=-3)
    studies.shift_window(run, np.arange(0, 5), "steps_to_target", max_shifts=3, hparams=hparams)
    assert calls == [[0, 1, 2, 3, 4], [-5, -4, -3, -2, -1]]  # best at 0: the points below
    run, calls = _window_rows(optimum=50)
    _, winner = studies.shift_window(run, np.arange(0, 5), "steps_to_target", max_shifts=2, hparams=hparams)
    assert len(calls) == 3 and winner.learning_rate == 10.0 ** (14 / 4)  # the cap: 2 shifts
    # Nothing reaches the target and the largest lr diverged: too slow below, diverging above.
    run, calls = _window_rows(optimum=None, diverged_above=3)
    rows, winner = studies.shift_window(
        run, np.arange(0, 5), "steps_to_target", max_shifts=3, hparams=hparams
    )
    assert len(calls) == 1 and np.isnan(winner.learning_rate) and not rows.best.any()


def _fake_sweep(optimum, base, calls):
    """A stand-in for the engine's sweep: steps to target ``base[B] + 10 (k - optimum[B])² + seed``
    at grid point ``k``, missed (NaN) above the step budget; ``calls`` records each window."""

    def sweep(spec, grid, progress):
        b, budget = spec["batch_size"], spec["steps"]
        ks = [round(4 * math.log10(lr)) for lr in grid.axes["learning_rate"]]
        calls.append((b, budget, ks, spec["optimizer"]))
        rows = []
        for lr, k in zip(grid.axes["learning_rate"], ks, strict=True):
            for seed in grid.axes["seed"]:
                steps = base[b] + 10.0 * (k - optimum[b]) ** 2 + seed
                steps = steps if steps <= budget else np.nan
                row = dict(optimizer=spec["optimizer"], batch_size=b, learning_rate=lr, seed=seed)
                rows.append(row | {"diverged": False, "steps_to_target": steps})
        return type("Result", (), {"summary": lambda self: pd.DataFrame(rows)})()

    return sweep


def test_steps_to_target_per_batch_size_follows_the_best_with_its_window_and_budget(monkeypatch):
    calls = []
    fake = _fake_sweep(optimum={4: 0, 8: 1, 32: 6}, base={4: 100, 8: 60, 32: 40}, calls=calls)
    monkeypatch.setattr(studies.sweep_lib, "sweep", fake)
    spec = {"optimizer": "sgd", "target": T.Target("train_loss", 0.5)}
    rows = studies.steps_to_target_per_batch_size(spec, [4, 8, 32], 1.0, max_steps=120, seeds=[0, 1])
    # By hand: B=4 starts at k = 4 log10(1.0) = 0 with the window -1..3 and the budget 120. Its best is
    # k=0 (100.5 steps), so B=8 keeps the centre 0 and gets min(120, ceil(1.5 * 100.5)) = 120 steps.
    # B=8's best is k=1 (60.5): B=32's window is 0..4 with ceil(90.75) = 91 steps; only k=4 (80.5)
    # reaches the target there, at the window's edge, so the window shifts to 5..9 and finds k=6.
    assert calls == [
        (4, 120, [-1, 0, 1, 2, 3], "sgd"),
        (8, 120, [-1, 0, 1, 2, 3], "sgd"),
        (32, 91, [0, 1, 2, 3, 4], "sgd"),
        (32, 91, [5, 6, 7, 8, 9], "sgd"),
    ]
    best = rows[rows.best].groupby("batch_size").k.unique()
    assert {b: list(k) for b, k in best.items()} == {4: [0], 8: [1], 32: [6]}
    assert len(rows) == 2 * 5 * 4 and rows.k.tolist()[:2] == [-1, -1]
    with pytest.raises(ValueError, match="target=None is invalid"):
        studies.steps_to_target_per_batch_size({"optimizer": "sgd"}, [4], 1.0, max_steps=10)
