"""Tests for jaxopt_lab.analysis.tables: summaries and the best-setting rule against hand computations."""

import math

import numpy as np
import pandas as pd
import pytest
from _tables import config_rows, two_config_table

from jaxopt_lab.analysis import tables

NAN = math.nan


def test_summary_by_hand():
    got = tables.summary(two_config_table())
    assert list(got.columns) == [
        "config_id",
        "optimizer",
        "learning_rate",
        "batch_size",
        "seed",
        "lr_rule",
        "final_step",
        "final_train_loss",
        "final_test_loss",
        "final_test_accuracy",
        "best_test_loss",
        "best_test_accuracy",
        "best_step",
        "diverged",
    ]
    assert got["config_id"].tolist() == [0, 1]
    assert got["optimizer"].tolist() == ["sgd", "adam"]
    assert got["learning_rate"].tolist() == [0.1, 1.0]
    assert got["batch_size"].tolist() == [8, 16]
    assert got["seed"].tolist() == [0, 1]
    assert got["lr_rule"].tolist() == ["none", "sqrt"]
    assert got["final_step"].tolist() == [30, 30]
    np.testing.assert_array_equal(got["final_train_loss"], [1.2, NAN])
    np.testing.assert_array_equal(got["final_test_loss"], [1.6, NAN])
    np.testing.assert_array_equal(got["final_test_accuracy"], [0.45, NAN])
    np.testing.assert_array_equal(got["best_test_loss"], [1.4, 2.2])
    np.testing.assert_array_equal(got["best_test_accuracy"], [0.5, 0.2])
    assert got["best_step"].tolist() == [20, 10]
    assert got["diverged"].tolist() == [False, True]


def test_summary_best_step_missing_when_every_test_loss_is_nan():
    table = pd.DataFrame(
        config_rows(
            7,
            dict(optimizer="sgd", learning_rate=10.0, batch_size=4, seed=0),
            [5, 10],
            4,
            train=[NAN, NAN],
            test=[NAN, NAN],
            acc=[NAN, NAN],
            diverged=[True, True],
        )
    )
    got = tables.summary(table)
    assert got["best_step"].isna().all()
    assert np.isnan(got["best_test_loss"]).all()
    assert got["diverged"].tolist() == [True]


def _ranking_table(cells):
    """A table from ``{(optimizer, batch_size, lr, seed): (best_test_loss, diverged)}``.

    Each config gets two evaluation points: ``best + 1`` then ``best``; a diverged
    config reaches ``best`` first and is NaN afterwards, so its best test loss is
    finite and low, and only the divergence flag can keep it from winning.
    """
    rows = []
    for config_id, ((opt, b, lr, seed), (best, diverged)) in enumerate(cells.items()):
        hp = dict(optimizer=opt, learning_rate=lr, batch_size=b, seed=seed)
        if diverged:
            test, flags = [best, NAN], [False, True]
        else:
            test, flags = [best + 1.0, best], [False, False]
        acc = [1.0 - v for v in test]
        rows += config_rows(config_id, hp, [1, 2], b, test, test, acc, flags)
    return pd.DataFrame(rows)


_CELLS = {
    # sgd, B=8: lr=1 has the lowest losses but seed 0 diverged, so lr=0.1 wins.
    ("sgd", 8, 0.01, 0): (0.9, False),
    ("sgd", 8, 0.01, 1): (1.1, False),
    ("sgd", 8, 0.1, 0): (0.5, False),
    ("sgd", 8, 0.1, 1): (0.7, False),
    ("sgd", 8, 1.0, 0): (0.2, True),
    ("sgd", 8, 1.0, 1): (0.3, False),
    # sgd, B=32: the largest lr wins, at the edge of the grid.
    ("sgd", 32, 0.01, 0): (0.8, False),
    ("sgd", 32, 0.01, 1): (0.8, False),
    ("sgd", 32, 0.1, 0): (0.4, False),
    ("sgd", 32, 0.1, 1): (0.6, False),
    ("sgd", 32, 1.0, 0): (0.3, False),
    ("sgd", 32, 1.0, 1): (0.5, False),
    # adam, B=8: two of three lrs diverge in every seed.
    ("adam", 8, 0.001, 0): (0.5, False),
    ("adam", 8, 0.001, 1): (0.55, False),
    ("adam", 8, 0.01, 0): (0.1, True),
    ("adam", 8, 0.01, 1): (0.1, True),
    ("adam", 8, 0.1, 0): (0.1, True),
    ("adam", 8, 0.1, 1): (0.1, False),
}


def test_best_learning_rates_by_hand():
    got = tables.best_learning_rates(_ranking_table(_CELLS))
    assert list(got.columns) == [
        "optimizer",
        "batch_size",
        "learning_rate",
        "best_test_loss_mean",
        "best_test_loss_std",
        "num_seeds",
        "num_lrs",
        "num_diverged_lrs",
        "lr_at_edge",
    ]
    got = got.set_index(["optimizer", "batch_size"])
    # (learning_rate, mean, sample std over the two seeds, diverged lrs, at edge)
    expected = {
        ("sgd", 8): (0.1, 0.6, math.sqrt(0.02), 1, False),
        ("sgd", 32): (1.0, 0.4, math.sqrt(0.02), 0, True),
        ("adam", 8): (0.001, 0.525, math.sqrt(0.00125), 2, True),
    }
    assert sorted(got.index) == sorted(expected)
    for key, (lr, mean, std, num_diverged, edge) in expected.items():
        row = got.loc[key]
        assert row["learning_rate"] == lr, key
        assert row["best_test_loss_mean"] == pytest.approx(mean, rel=1e-12), key
        assert row["best_test_loss_std"] == pytest.approx(std, rel=1e-9), key
        assert row["num_seeds"] == 2
        assert row["num_lrs"] == 3
        assert row["num_diverged_lrs"] == num_diverged, key
        assert row["lr_at_edge"] == edge, key


def test_best_learning_rates_maximizes_accuracy_and_groups_by_optimizer():
    # Accuracy is 1 - loss in the table, so the winners are the same learning rates.
    got = tables.best_learning_rates(
        _ranking_table(_CELLS), by="optimizer", metric="best_test_accuracy"
    ).set_index("optimizer")
    # Per optimizer, the batch size is now a nuisance hyperparameter: best over it.
    assert got.loc["sgd", "learning_rate"] == 1.0
    assert got.loc["sgd", "batch_size"] == 32
    assert got.loc["sgd", "best_test_accuracy_mean"] == pytest.approx(0.6)
    assert got.loc["adam", "learning_rate"] == 0.001
    assert got.loc["adam", "best_test_accuracy_mean"] == pytest.approx(0.475)
    # lr=1 diverged at B=8 but not at B=32, so it is not dead for sgd.
    assert got.loc["sgd", "num_diverged_lrs"] == 0
    assert got.loc["adam", "num_diverged_lrs"] == 2


def test_best_learning_rates_nuisance_hyperparameter_and_all_diverged_group():
    cells = []
    # (optimizer, batch_size, lr, beta, seed, best, diverged)
    for beta, lr, best in [(0.5, 0.1, 0.7), (0.9, 0.1, 0.4), (0.5, 0.01, 0.5), (0.9, 0.01, 0.6)]:
        for seed in (0, 1):
            cells.append(("momentum", 8, lr, beta, seed, best + 0.01 * seed, False))
    for lr in (0.1, 1.0):
        cells.append(("sgd", 8, lr, NAN, 0, 0.3, True))
    rows = []
    for cid, (opt, b, lr, beta, seed, best, div) in enumerate(cells):
        hp = dict(optimizer=opt, learning_rate=lr, batch_size=b, seed=seed, beta=beta)
        rows += config_rows(cid, hp, [1], b, [best], [best], [NAN], [div])
    got = tables.best_learning_rates(pd.DataFrame(rows)).set_index("optimizer")
    assert got.loc["momentum", "learning_rate"] == 0.1
    assert got.loc["momentum", "beta"] == 0.9
    assert got.loc["momentum", "best_test_loss_mean"] == pytest.approx(0.405)
    assert got.loc["momentum", "num_diverged_lrs"] == 0
    assert np.isnan(got.loc["sgd", "learning_rate"])
    assert np.isnan(got.loc["sgd", "best_test_loss_mean"])
    assert got.loc["sgd", "num_lrs"] == 2
    assert got.loc["sgd", "num_diverged_lrs"] == 2
    assert not got.loc["sgd", "lr_at_edge"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(metric="test_loss"), r"metric=.test_loss. is invalid: expected one of .*best_test"),
        (dict(by=("optimizer", "seed")), r"by='seed' is invalid: expected one of .*batch_size"),
        (dict(by="momentum"), r"by='momentum' is invalid"),
    ],
)
def test_best_learning_rates_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tables.best_learning_rates(two_config_table(), **kwargs)


def test_summary_rejects_a_table_without_metrics():
    table = two_config_table().drop(columns=["test_loss", "diverged"])
    with pytest.raises(ValueError, match=r"table is missing column\(s\) 'test_loss', 'diverged'"):
        tables.summary(table)


# --------------------------------------------------------------------------- TOML
