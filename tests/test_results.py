"""Tests for jaxopt_lab.outputs.results: summaries against hand computations, files round trips."""

import math
import os
import struct

import numpy as np
import pandas as pd
import pytest

from jaxopt_lab.analysis import tables
from jaxopt_lab.outputs import atomic, folder, schema

NAN = math.nan


def _config_rows(config_id, hparams, steps, batch_size, train, test, acc, diverged):
    return [
        dict(
            config_id=config_id,
            **hparams,
            step=s,
            examples_seen=s * batch_size,
            train_loss=tr,
            test_loss=te,
            test_accuracy=a,
            diverged=d,
        )
        for s, tr, te, a, d in zip(steps, train, test, acc, diverged, strict=True)
    ]


def _two_config_table():
    """Config 0 trains normally; config 1 diverges after its first evaluation."""
    rows = _config_rows(
        0,
        dict(optimizer="sgd", learning_rate=0.1, batch_size=8, seed=0, lr_rule="none"),
        [10, 20, 30],
        8,
        train=[2.0, 1.5, 1.2],
        test=[2.1, 1.4, 1.6],
        acc=[0.3, 0.5, 0.45],
        diverged=[False, False, False],
    ) + _config_rows(
        1,
        dict(optimizer="adam", learning_rate=1.0, batch_size=16, seed=1, lr_rule="sqrt"),
        [10, 20, 30],
        16,
        train=[1.9, NAN, NAN],
        test=[2.2, NAN, NAN],
        acc=[0.2, NAN, NAN],
        diverged=[False, True, True],
    )
    # Rows out of order: "final" must mean the last step, not the last row.
    order = [5, 0, 3, 2, 4, 1]
    return pd.DataFrame([rows[i] for i in order])


def test_summary_by_hand():
    got = tables.summary(_two_config_table())
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
        _config_rows(
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
        rows += _config_rows(config_id, hp, [1, 2], b, test, test, acc, flags)
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
    # (optimizer, batch_size, lr, momentum, seed, best, diverged)
    for momentum, lr, best in [(0.5, 0.1, 0.7), (0.9, 0.1, 0.4), (0.5, 0.01, 0.5), (0.9, 0.01, 0.6)]:
        for seed in (0, 1):
            cells.append(("momentum", 8, lr, momentum, seed, best + 0.01 * seed, False))
    for lr in (0.1, 1.0):
        cells.append(("sgd", 8, lr, NAN, 0, 0.3, True))
    rows = []
    for cid, (opt, b, lr, mom, seed, best, div) in enumerate(cells):
        hp = dict(optimizer=opt, learning_rate=lr, batch_size=b, seed=seed, momentum=mom)
        rows += _config_rows(cid, hp, [1], b, [best], [best], [NAN], [div])
    got = tables.best_learning_rates(pd.DataFrame(rows)).set_index("optimizer")
    assert got.loc["momentum", "learning_rate"] == 0.1
    assert got.loc["momentum", "momentum"] == 0.9
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
        tables.best_learning_rates(_two_config_table(), **kwargs)


def test_summary_rejects_a_table_without_metrics():
    table = _two_config_table().drop(columns=["test_loss", "diverged"])
    with pytest.raises(ValueError, match=r"table is missing column\(s\) 'test_loss', 'diverged'"):
        tables.summary(table)


# --------------------------------------------------------------------------- TOML


def _definition():
    return {
        "spec": {
            "dataset": "mnist1d",
            "steps": 1500,
            "eval_every": 100,
            "lr_scale": 1e-3,
            "tiny": 3.1622776601683795e-05,
            "huge": 1e16,
            "third": 1 / 3,
            "neg": -0.0,
            "big_int": 2**53 + 1,
            "negative": -7,
            "flag": True,
            "off": False,
            "quoted": 'say "hi"\\ there\nnew line\ttab \x01\b\f\r\x7f é',
            "inf": math.inf,
            "minus_inf": -math.inf,
        },
        "model_options": {"hidden": [256, 256], "batchnorm": True},
        "dataset_options": {},
        "optimizer_flags": {"nesterov": False, "odd key": "x", "sub": {"depth": 2}},
        "grid": {
            "optimizer": ["sgd", "momentum", "adam"],
            "learning_rate": [float(v) for v in np.logspace(-4, 0, 9)],
            "batch_size": [8, 32, 128],
            "seed": [0, 1],
            "b2": [0.999, 0.1],
            "mixed": [1, 2.5, "three", True],
            "empty": [],
        },
        "sweep": {"strategy": "auto", "chunk_size": 64},
    }


def _bits(value):
    return struct.pack("<d", value)


def test_toml_round_trip_is_exact(tmp_path):
    definition = _definition()
    path = tmp_path / "sweep.toml"
    schema.write_definition(path, definition)
    got = schema.read_definition(path)
    assert got == definition
    assert list(got) == list(definition)
    for key, value in definition["spec"].items():
        assert type(got["spec"][key]) is type(value), key
        if isinstance(value, float):
            assert _bits(got["spec"][key]) == _bits(value), key  # -0.0 and every last bit
    for a, b in zip(got["grid"]["learning_rate"], definition["grid"]["learning_rate"], strict=True):
        assert _bits(a) == _bits(b)
    assert type(got["grid"]["mixed"][3]) is bool


def test_toml_nan_numpy_scalars_and_tuples(tmp_path):
    path = tmp_path / "sweep.toml"
    schema.write_definition(
        path,
        {
            "spec": {
                "nan": math.nan,
                "f32": np.float32(0.1),
                "i64": np.int64(3),
                "pair": (1, 2),
                "array": np.array([0.5, 0.25]),
                "flag": np.bool_(True),
            }
        },
    )
    got = schema.read_definition(path)["spec"]
    assert math.isnan(got["nan"])
    assert got["f32"] == float(np.float32(0.1)) and type(got["f32"]) is float
    assert got["i64"] == 3 and type(got["i64"]) is int
    assert got["pair"] == [1, 2]
    assert got["array"] == [0.5, 0.25]
    assert got["flag"] is True


def test_toml_round_trip_of_the_default_sweep(tmp_path):
    from jaxopt_lab.cli import DEFAULT_SWEEP

    path = tmp_path / "sweep.toml"
    schema.write_definition(path, DEFAULT_SWEEP)
    assert schema.read_definition(path) == DEFAULT_SWEEP


def test_malformed_toml_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('[spec]\ndataset = "mnist1d"\nsteps 100\n')
    with pytest.raises(ValueError) as info:
        schema.read_definition(path)
    message = str(info.value)
    assert message.startswith(f"malformed TOML in {path}: Expected '=' after a key")
    assert "line 3, column 7" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "text, name",
    [
        ("[spec]\nsteps = 1\n[grdi]\nseed = [0]\n", "'grdi'"),
        ("steps = 100\n[spec]\n", "'steps'"),
    ],
)
def test_unknown_top_level_tables_are_rejected(tmp_path, text, name):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"unknown top-level .* {name} in {path}: expected"):
        schema.read_definition(path)


@pytest.mark.parametrize(
    "definition, match",
    [
        ({"spec": {"steps": None}}, r"spec\.steps is None: TOML has no null"),
        ({"spec": {"x": object()}}, r"spec\.x of type object is invalid"),
        ({"grdi": {}}, r"definition table 'grdi' is invalid: expected one of 'spec'"),
        ({"spec": [1, 2]}, r"definition\['spec'\] of type list is invalid: expected a dict"),
    ],
)
def test_write_definition_rejects_what_toml_cannot_hold(tmp_path, definition, match):
    path = tmp_path / "sweep.toml"
    with pytest.raises(ValueError, match=match):
        schema.write_definition(path, definition)
    assert not os.listdir(tmp_path)


# --------------------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path):
    table = _two_config_table().sort_values(["config_id", "step"]).reset_index(drop=True)
    table["momentum"] = [NAN, NAN, NAN, 0.9, 0.9, 0.9]
    definition = _definition()
    out = tmp_path / "runs" / "x"
    folder.save(out, table, definition)
    assert sorted(os.listdir(out)) == ["results.parquet", "summary.csv", "sweep.toml"]
    got_table, got_definition = folder.load(out)
    pd.testing.assert_frame_equal(got_table, table)
    assert got_definition == definition
    csv = pd.read_csv(out / "summary.csv")
    assert csv["config_id"].tolist() == [0, 1]
    assert csv["best_test_loss"].tolist() == [1.4, 2.2]
    assert csv["best_step"].tolist() == [20, 10]
    assert csv["diverged"].tolist() == [False, True]
    assert csv["final_test_loss"].isna().tolist() == [False, True]


def test_load_names_the_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"out_dir .* is invalid: it has no results\.parquet"):
        folder.load(tmp_path)
    with pytest.raises(ValueError, match=r"path .*nope\.toml' is invalid: no such file"):
        schema.read_definition(tmp_path / "nope.toml")


def test_atomic_write_keeps_the_old_file_on_interrupt(tmp_path, monkeypatch):
    path = tmp_path / "results.parquet"
    path.write_bytes(b"old")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write_bytes(path, b"new contents")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["results.parquet"]


def test_atomic_write_replaces_with_ordinary_permissions(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    path = tmp_path / "file"
    atomic.atomic_write_bytes(path, b"abc")
    assert path.read_bytes() == b"abc"
    assert os.stat(path).st_mode == os.stat(plain).st_mode
    atomic.atomic_write_bytes(path, b"de")
    assert path.read_bytes() == b"de"
    assert sorted(os.listdir(tmp_path)) == ["file", "plain"]
