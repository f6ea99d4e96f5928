"""Schedules in a sweep: the schedule's name selects a group, its parameters are vmapped,
decays end with each config's own run, and every config equals an optax loop with the
matching optax schedule."""

import numpy as np
import optax
import pytest
from _reference import assert_config_matches, model_fns, optax_loop

from jaxopt_lab import data as D
from jaxopt_lab.engine import sweep as S
from jaxopt_lab.engine import train as T
from jaxopt_lab.errors import InputError
from jaxopt_lab.nn import models as M

REG = {"n": 256, "dim": 4, "n_test": 64, "noise": 0.1}
SPEC = dict(dataset="regression", dataset_options=REG, model="linear", optimizer="adam", eval_every=10)


def _loop(tx, batch_size, steps):
    ds = D.load("regression", **REG)
    init, apply = model_fns(M.create("linear", 1))
    return optax_loop(ds, init, apply, tx, batch_size=batch_size, steps=steps, eval_every=10, seed=0)


def test_warmup_and_final_fraction_axes_equal_optax_schedules_per_config():
    grid = S.Grid(
        schedule=["constant", "warmup_cosine"],
        warmup_steps=[0, 10],
        final_lr_fraction=[0.0, 0.1],
        learning_rate=[0.05],
    )
    result = S.sweep({**SPEC, "steps": 40}, grid, progress=False)
    table = result.table
    # constant takes neither parameter: one config, not four
    assert table.groupby("schedule")["config_id"].nunique().to_dict() == {"constant": 1, "warmup_cosine": 4}
    assert table.loc[table["schedule"] == "constant", "warmup_steps"].isna().all()
    assert_config_matches(table, dict(schedule="constant"), _loop(optax.adam(0.05), 32, 40))
    for w in (0, 10):
        for f in (0.0, 0.1):
            lr = optax.warmup_cosine_decay_schedule(0.0, 0.05, w, 40, 0.05 * f)
            config = dict(schedule="warmup_cosine", warmup_steps=w, final_lr_fraction=f)
            assert_config_matches(table, config, _loop(optax.adam(lr), 32, 40))
            rows = table[(table["warmup_steps"] == w) & (table["final_lr_fraction"] == f)]
            # the applied learning rate: that of the last step before each point (optax's count)
            expected = [float(lr(s - 1)) for s in rows["step"]]
            np.testing.assert_allclose(rows["applied_lr"], expected, rtol=1e-6)


def test_decay_ends_with_each_batch_sizes_own_budget_under_an_epochs_budget():
    # 256 examples: 1 epoch is 32 steps at batch 8 and 8 steps at batch 32.
    grid = S.Grid(schedule=["linear_decay"], batch_size=[8, 32], learning_rate=[0.02])
    table = S.sweep({**SPEC, "optimizer": "sgd"}, grid, epochs=1, strategy="mask", progress=False).table
    for b, steps in ((8, 32), (32, 8)):
        curves = _loop(optax.sgd(optax.linear_schedule(0.02, 0.0, steps)), b, steps)
        assert_config_matches(table, dict(batch_size=b), curves)
        last = table[table["batch_size"] == b].sort_values("step").iloc[-1]
        assert last["applied_lr"] == pytest.approx(0.02 / steps, rel=1e-5)  # one step before zero


def test_a_constant_schedule_reports_the_lr_rules_learning_rate():
    grid = S.Grid(batch_size=[8, 32], learning_rate=[0.01])
    spec = {**SPEC, "optimizer": "sgd", "lr_rule": "linear", "base_batch_size": 16, "steps": 10}
    table = S.sweep(spec, grid, progress=False).table
    by_batch = table.groupby("batch_size")["applied_lr"].unique()
    assert [list(v) for v in by_batch] == [[pytest.approx(0.005)], [pytest.approx(0.02)]]


def test_train_alone_equals_the_same_config_in_a_sweep():
    spec = T.TrainSpec(**{**SPEC, "steps": 30, "schedule": "warmup_linear"})
    hp = {"learning_rate": 0.03, "warmup_steps": 5.0, "final_lr_fraction": 0.5}
    history = T.train(spec, hp)
    table = S.sweep(spec, S.Grid(**{k: [v] for k, v in hp.items()}), progress=False, chunk_size=1).table
    np.testing.assert_allclose(table["train_loss"], history.train_loss, rtol=1e-6)
    np.testing.assert_allclose(table["applied_lr"], history.applied_lr, rtol=1e-6)


@pytest.mark.parametrize(
    "axes, message",
    [
        (dict(schedule=["cosine"]), "schedule='cosine' is invalid: expected one of 'constant'"),
        (dict(warmup_steps=[-1]), "warmup_steps=-1 is invalid: expected warmup_steps >= 0"),
        (dict(final_lr_fraction=[1.5]), "final_lr_fraction=1.5 is invalid: expected 0 <= final_lr_fraction"),
        (dict(decay_steps=[0]), "decay_steps=0 is invalid: expected decay_steps > 0"),
    ],
)
def test_bad_schedules_are_named(axes, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        S.Grid(**axes)


def test_a_schedule_parameter_the_schedule_does_not_take_is_refused_by_train():
    spec = T.TrainSpec(**{**SPEC, "steps": 10, "schedule": "cosine_decay"})
    with pytest.raises(
        InputError, match="hyperparameter 'warmup_steps' is invalid .* schedule='cosine_decay'"
    ):
        T.train(spec, {"warmup_steps": 3})
    with pytest.raises(InputError, match="schedule='bogus' is invalid"):
        T.TrainSpec(schedule="bogus")
