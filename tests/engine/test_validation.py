"""A validation split: held-out examples by the documented rule, val_* columns equal to an
optax loop evaluated on them, and every "best" chosen on validation loss with the test
metrics reported at the chosen point."""

import math

import numpy as np
import optax
import pandas as pd
import pytest
from _reference import model_fns, optax_loop

from jaxopt_lab import cli
from jaxopt_lab import data as D
from jaxopt_lab.analysis import tables
from jaxopt_lab.engine import sweep as S
from jaxopt_lab.errors import InputError
from jaxopt_lab.nn import models as M
from jaxopt_lab.outputs import folder, plots


def _by_hand_split(n, fraction):
    held = np.random.default_rng(0).permutation(n)[: round(fraction * n)]
    return np.setdiff1d(np.arange(n), held), np.sort(held)


def test_split_validation_holds_out_the_documented_examples_in_order():
    full = D.load("digits")
    ds = D.load("digits", val_fraction=0.25)
    train, val = _by_hand_split(full.x_train.shape[0], 0.25)
    np.testing.assert_array_equal(ds.x_train, np.asarray(full.x_train)[train])
    np.testing.assert_array_equal(ds.y_val, np.asarray(full.y_train)[val])
    np.testing.assert_array_equal(ds.x_test, full.x_test)  # the test set is untouched
    assert D.split_validation(full, 0.0) is full


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: D.load("digits", val_fraction=1.0),
            "val_fraction=1.0 is invalid: expected 0 <= val_fraction < 1",
        ),
        (lambda: D.load("regression", n=4, val_fraction=0.01), "it holds out 0, expected at least 1"),
        (
            lambda: D.from_arrays(
                np.zeros((4, 2)), np.arange(4), np.zeros((2, 2)), np.arange(2), x_val=np.zeros((2, 2))
            ),
            "x_val and y_val go together",
        ),
        (
            lambda: D.from_arrays(
                np.zeros((4, 2)),
                np.arange(4),
                np.zeros((2, 2)),
                np.arange(2),
                x_val=np.zeros((2, 3)),
                y_val=[0, 1],
            ),
            "(x_val, y_val in the place of x_test, y_test): x_train and x_test have different example shapes",
        ),
        (
            lambda: D.from_arrays(
                np.zeros((4, 2)),
                np.arange(4),
                np.zeros((2, 2)),
                np.arange(2),
                x_val=[[math.nan, 0]],
                y_val=[0],
            ),
            "x_test holds 1 non-finite values",
        ),
    ],
)
def test_bad_validation_sets_are_named(call, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_val_columns_equal_an_optax_loop_evaluated_on_the_held_out_examples():
    full = D.load("digits")
    train, val = _by_hand_split(full.x_train.shape[0], 0.2)
    x, y = np.asarray(full.x_train), np.asarray(full.y_train)
    # the reference: the held-out examples in the place of the test set
    held_out = D.from_arrays(x[train], y[train], x[val], y[val])
    spec = dict(
        dataset="digits",
        dataset_options={"val_fraction": 0.2},
        model="mlp",
        model_options={"hidden": (16,)},
        optimizer="sgd",
        steps=20,
        eval_every=10,
        batch_size=32,
    )
    table = S.sweep(spec, S.Grid(learning_rate=[0.05, 0.5]), progress=False).table
    for lr in (0.05, 0.5):
        curves = optax_loop(
            held_out, *model_fns(M.create("mlp", 10, hidden=(16,))), optax.sgd(lr),
            batch_size=32, steps=20, eval_every=10, seed=0,
        )  # fmt: skip
        rows = table[table["learning_rate"] == lr].sort_values("step")
        np.testing.assert_allclose(rows["train_loss"], curves.train_loss, rtol=1e-4)
        np.testing.assert_allclose(rows["val_loss"], curves.test_loss, rtol=1e-4)
        np.testing.assert_allclose(rows["val_accuracy"], curves.test_accuracy, atol=1e-6)


def _table():
    """Two learning rates, two evaluation points: lr 0.1 has the better test loss, lr 0.01
    the better validation loss (at step 1, where its test loss is 0.9)."""
    rows = []
    for config_id, (lr, val, test) in enumerate(
        [(0.01, [0.5, 0.6], [0.9, 0.8]), (0.1, [0.7, 0.8], [0.4, 0.3])]
    ):
        for step in (1, 2):
            rows.append(
                dict(
                    config_id=config_id, optimizer="sgd", learning_rate=lr, batch_size=8, seed=0,
                    step=step, examples_seen=8 * step, train_loss=1.0, test_loss=test[step - 1],
                    test_accuracy=1 - test[step - 1], diverged=False, applied_lr=lr,
                    val_loss=val[step - 1], val_accuracy=1 - val[step - 1],
                )
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_the_best_learning_rate_is_chosen_on_validation_and_reported_on_test():
    best = tables.best_learning_rates(_table())
    assert best["learning_rate"].tolist() == [0.01]
    assert best["best_val_loss_mean"].tolist() == [0.5]
    assert best["test_loss_at_best_val_mean"].tolist() == [0.9]  # at step 1, not the best test loss
    assert best["test_accuracy_at_best_val_mean"].tolist() == [pytest.approx(0.1)]
    summary = tables.summary(_table())
    assert summary["best_val_step"].tolist() == [1, 1]
    # without validation columns, the test loss decides as before
    plain = _table().drop(columns=["val_loss", "val_accuracy"])
    assert tables.best_learning_rates(plain)["learning_rate"].tolist() == [0.1]
    with pytest.raises(InputError, match="metric='best_val_loss' is invalid"):
        tables.best_learning_rates(plain, metric="best_val_loss")


def test_pictures_show_validation_loss_and_pick_its_winner():
    data = plots.heatmap_data(_table())
    assert data["sgd"].to_numpy().tolist() == [[0.5, 0.7]]
    fig = plots.curves(_table())
    assert "validation loss" in fig.axes[0].get_ylabel()


def test_val_fraction_from_the_command(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["sweep", "--dataset", "digits", "--model", "linear", "--steps", "10", "--eval-every", "5"]
    argv += ["--optimizer", "sgd", "--lr", "0.01,0.1", "--batch-size", "16", "--seeds", "1", "--no-progress"]
    assert cli.main([*argv, "--val-fraction", "0.2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "best_val_loss_mean" in printed and "test_loss_at_best_val_mean" in printed
    table, definition = folder.load(out)
    assert {"val_loss", "val_accuracy"} <= set(table.columns)
    assert definition["dataset_options"]["val_fraction"] == 0.2
    assert cli.main([*argv, "--val-fraction", "1.5", "--out", str(tmp_path / "bad")]) == 2
    assert "val_fraction=1.5 is invalid" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
