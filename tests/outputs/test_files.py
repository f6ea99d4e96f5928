"""Tests for jaxopt_lab.outputs: sweep.toml round trips, the folder's files, atomic writes."""

import math
import os
import struct

import numpy as np
import pandas as pd
import pytest
from _tables import two_config_table

from jaxopt_lab.outputs import atomic, folder, schema

NAN = math.nan


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
    table = two_config_table().sort_values(["config_id", "step"]).reset_index(drop=True)
    table["beta"] = [NAN, NAN, NAN, 0.9, 0.9, 0.9]
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
