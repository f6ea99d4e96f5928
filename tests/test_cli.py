"""The jaxopt-lab command: files written, config round trip, and bad input."""

import os
import shutil
import subprocess
import sys

import numpy as np
import optax
import pandas as pd
import pytest

from jaxopt_lab import cli
from jaxopt_lab.engine.sweep import one_device_per_cpu_core

TINY = [
    "--dataset",
    "digits",
    "--model",
    "mlp",
    "--hidden",
    "8",
    "--steps",
    "20",
    "--eval-every",
    "10",
    "--no-progress",
]
# One config: SGD at lr 0.1, batch 16, seed 0.
ONE_CONFIG = [*TINY, "--optimizer", "sgd", "--lr", "0.1", "--batch-size", "16", "--seeds", "1"]


def _files(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def test_run_writes_the_sweep_files(tmp_path, capsys):
    out = tmp_path / "one"
    assert (
        cli.main(
            [
                "run",
                *TINY,
                "--optimizer",
                "sgd",
                "--lr",
                "0.1",
                "--batch-size",
                "16",
                "--seed",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert {"results.parquet", "summary.csv", "sweep.toml", "heatmap.png", "curves.png"} <= set(_files(out))
    table = pd.read_parquet(out / "results.parquet")
    assert table[["optimizer", "learning_rate", "batch_size", "seed"]].drop_duplicates().values.tolist() == [
        ["sgd", 0.1, 16, 3]
    ]
    assert list(table["step"]) == [10, 20]
    printed = capsys.readouterr().out
    # a one-config summary, not a best-learning-rate table
    assert "learning_rate=0.1, batch_size=16, seed=3" in printed and "test accuracy" in printed
    assert "lr_at_edge" not in printed
    # every value the run used is recorded, so `--config` runs exactly it again
    from jaxopt_lab.outputs import schema

    grid = schema.read_definition(out / "sweep.toml")["grid"]
    assert grid["optimizer"] == ["sgd"] and grid["learning_rate"] == [0.1] and grid["seed"] == [3]
    assert grid["weight_decay"] == [0.0] and grid["bn_momentum"] == [0.99] and grid["batch_size"] == [16]


def test_sweep_config_file_runs_the_same_sweep_again(tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    args = [*TINY, "--optimizer", "sgd,adam", "--lr", "1e-3:1e-1:3", "--batch-size", "8,32", "--seeds", "1"]
    assert cli.main(["sweep", *args, "--out", str(first)]) == 0
    table = pd.read_parquet(first / "results.parquet")
    np.testing.assert_allclose(sorted(table["learning_rate"].unique()), [1e-3, 1e-2, 1e-1])
    assert table["config_id"].nunique() == 2 * 3 * 2
    assert (
        cli.main(["sweep", "--config", str(first / "sweep.toml"), "--out", str(second), "--no-progress"]) == 0
    )
    pd.testing.assert_frame_equal(pd.read_parquet(second / "results.parquet"), table)

    os.remove(first / "heatmap.png")
    capsys.readouterr()
    assert cli.main(["report", str(first)]) == 0
    printed = capsys.readouterr().out
    assert (first / "heatmap.png").exists()
    assert "adam" in printed and "sgd" in printed and "learning_rate" in printed


def _npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sweep", "--dataset", "imagenet"], "dataset='imagenet' is invalid: expected one of"),
        (["sweep", "--model", "resnet"], "model='resnet' is invalid: expected one of 'linear'"),
        (["sweep", "--optimizer", "sgd,lionx"], "optimizer='lionx' is invalid: expected one of"),
        (["sweep", "--strategy", "fast"], "strategy='fast' is invalid: expected one of 'auto'"),
        (["sweep", "--batch-size", "8,5000"], "batch_size=5000 is larger than the training set"),
        (["sweep", "--lr", ","], "--lr ',' is invalid: expected at least one value"),
        (["sweep", "--lr", "0.1,-1"], "learning_rate=-1.0 is invalid"),
        (["sweep", "--lr", "1e-3:1"], "--lr '1e-3:1' is invalid"),
        (["sweep", "--steps", "0"], "steps=0 is invalid"),
        (["sweep", "--b1", "1.5", "--optimizer", "adam"], "b1=1.5"),
        (["sweep", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["run", "--lr", "0.1,0.2"], "--lr takes one value in `run`, got 2"),
        # NaN and infinities are refused for every numeric hyperparameter, not read as "not given"
        *[
            (["sweep", *pre, flag, bad], f"{flag} '{bad}' is invalid: expected a comma list")
            for flag, pre in [
                ("--lr", []),
                ("--beta", ["--optimizer", "momentum"]),
                ("--b1", ["--optimizer", "adam"]),
                ("--b2", ["--optimizer", "adam"]),
                ("--eps", ["--optimizer", "adam"]),
                ("--decay", ["--optimizer", "rmsprop"]),
                ("--weight-decay", []),
                ("--bn-momentum", []),
            ]
            for bad in ("nan", "inf")
        ],
        (["sweep", "--lr", "1e-3:inf:3"], "--lr '1e-3:inf:3' is invalid: expected a comma list or START"),
        # integer options take integer lists, not ranges that parse to 7.99999
        (
            ["sweep", "--batch-size", "8:128:5"],
            "--batch-size '8:128:5' is invalid: expected a comma list of integers",
        ),
        (["sweep", "--seed", "1.5"], "--seed '1.5' is invalid: expected a comma list of integers"),
        (
            ["sweep", "--seed", "99999999999999999999"],
            "seed=99999999999999999999 is invalid: expected an integer in [0, 2**32)",
        ),
        (["sweep", "--epochs", "inf"], "epochs=inf is invalid: expected a positive finite number"),
        (["sweep", "--config", ""], "--config '' is invalid: no such file"),
        (["sweep", "--schedule", "cosine"], "schedule='cosine' is invalid: expected one of 'constant'"),
        (["sweep", "--warmup-steps", "-5"], "warmup_steps=-5.0 is invalid: expected warmup_steps >= 0"),
        (
            ["sweep", "--final-lr-fraction", "0,2"],
            "final_lr_fraction=2.0 is invalid: expected 0 <= final_lr_fraction <= 1",
        ),
        # unbounded work is refused before it starts, with the numbers
        (
            ["sweep", "--steps", "1000000000000"],
            "steps=1000000000000 is invalid: expected a positive integer below 2**31",
        ),
        (["sweep", "--epochs", "1e12"], "epochs=1000000000000.0 is invalid: it makes"),
        (["sweep", "--seeds", "100000000"], "the sweep is too large for this machine: 100,000,000 configs"),
        (
            ["sweep", "--lr", "1e-3:1:100000000"],
            "the sweep is too large for this machine: 100,000,000 configs",
        ),
        (
            ["sweep", "--steps", "2000000000", "--eval-every", "1"],
            "the sweep is too large for this machine: 162 configs x 2,000,000,000 evaluation points",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, message, finished_sweep):
    out = tmp_path / "out"
    assert cli.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jaxopt-lab: error: ")
    assert message in err
    assert not out.exists()
    # the same mistake aimed at a finished sweep's folder with --overwrite leaves it byte for byte
    previous = tmp_path / "previous"
    shutil.copytree(finished_sweep, previous)
    before = _tree_bytes(previous)
    if "--resume" not in argv and "--overwrite" not in argv:
        assert cli.main([*argv, "--out", str(previous), "--overwrite"]) == 2
        assert message in capsys.readouterr().err
    assert _tree_bytes(previous) == before


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "sweep"
    argv = ["sweep", *ONE_CONFIG]
    assert cli.main([*argv, "--out", str(out)]) == 0
    return out


def _tree_bytes(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_empty_output_folder_name_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", *TINY, "--out", ""]) == 2
    assert capsys.readouterr().err == "jaxopt-lab: error: --out '' is invalid: expected a folder name\n"
    assert _files(tmp_path) == []


def test_bad_files_are_reported(tmp_path, capsys):
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[spec\nsteps = 3\n")
    assert cli.main(["sweep", "--config", str(bad_toml), "--out", str(tmp_path / "o")]) == 2
    assert "malformed TOML in" in capsys.readouterr().err

    missing = _npz(tmp_path, x_train=np.zeros((4, 2)), y_train=np.zeros(4, np.int32))
    assert cli.main(["run", "--dataset", missing, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "x_test" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_a_non_empty_output_folder_is_left_alone(tmp_path, capsys):
    out = tmp_path / "keep"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    assert cli.main(["run", *TINY, "--out", str(out)]) == 2
    assert "is not empty: pass --resume" in capsys.readouterr().err
    assert _files(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "precious"


def test_console_script_exit_code_and_stderr():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "jaxopt_lab.cli", "sweep", "--strategy", "x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "jaxopt-lab: error: strategy='x' is invalid: expected one of 'auto', 'bucket', 'mask'"
    ]


def test_sweep_splits_a_cpu_into_one_device_per_core():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    # importing the command must not start JAX's backend, or the split comes too late
    code = (
        "import jax, jaxopt_lab.cli; from jaxopt_lab.engine.sweep import one_device_per_cpu_core as f; "
        "f(); print(jax.device_count())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.stdout.split() == [str(os.cpu_count())], proc.stderr
    chosen = {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}
    one_device_per_cpu_core(chosen)
    assert chosen == {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"}


def test_an_unknown_optimizer_flag_in_a_file_is_one_line_and_exit_2(tmp_path, capsys):
    config = tmp_path / "flags.toml"
    config.write_text(
        '[spec]\ndataset = "digits"\nsteps = 5\n[optimizer_flags]\nnesterov = true\n'
        '[grid]\noptimizer = ["momentum", "adam"]\nlearning_rate = [0.01]\n'
    )
    out = tmp_path / "out"
    assert cli.main(["sweep", "--config", str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "jaxopt-lab: error: optimizer flag 'nesterov' is invalid for optimizer='adam': "
        "expected one of 'bias_correction'\n"
    )
    assert not out.exists()


def test_a_bug_is_not_reported_as_bad_input(tmp_path, monkeypatch, capsys):
    """A ValueError from inside the program (not an InputError) keeps its traceback: exit code
    is not 2, and the message is not dressed as the user's mistake."""
    from jaxopt_lab.engine import sweep as sweep_lib

    def broken(*args, **kwargs):
        raise ValueError("not enough values to unpack (expected 2, got 1)")

    monkeypatch.setattr(sweep_lib, "sweep", broken)
    with pytest.raises(ValueError, match="not enough values to unpack"):
        cli.main(["sweep", *TINY, "--out", str(tmp_path / "out")])
    assert "jaxopt-lab: error" not in capsys.readouterr().err
    monkeypatch.undo()  # the user's mistakes still are one line and exit 2
    assert cli.main(["sweep", *TINY, "--strategy", "fast", "--out", str(tmp_path / "o")]) == 2
    assert "strategy='fast' is invalid" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_folder_of_the_users_files_is_left_byte_for_byte(tmp_path, capsys, flag, monkeypatch):
    """`--out . --overwrite` in a working directory must not wipe it; nor may a resume."""
    (tmp_path / "paper.tex").write_text("\\section{Results}")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.npy").write_bytes(b"\x93NUMPY")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sweep", *TINY, "--out", ".", flag]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jaxopt-lab: error: ")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "paper.tex"]


def test_an_out_under_a_regular_file_is_one_line_and_exit_2(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert cli.main(["run", *TINY, "--out", str(tmp_path / "f" / "run")]) == 2
    assert "cannot create that folder" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["sweep", "run"])
def test_help_shows_every_default(command):
    parser = cli._parser()
    sub = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))
    options = sub.choices[command]._actions
    no_default = {
        "help",
        "seed",
        "epochs",
        "resume",
        "overwrite",
        "no_progress",
        "no_compile_cache",
        "distributed",
    }
    if command == "run":
        no_default -= {"seed"}
    for action in options:
        if action.dest in no_default:
            continue
        assert "(default: " in action.help, action.dest
    text = " ".join(sub.choices[command].format_help().split())
    assert "(default: mnist1d)" in text and "(default: 1500)" in text


def test_diverge_above_flags_configs_and_is_recorded(tmp_path):
    out = tmp_path / "out"
    argv = ["sweep", *TINY, "--optimizer", "sgd", "--lr", "0.01", "--batch-size", "16", "--seeds", "1"]
    assert cli.main([*argv, "--diverge-above", "1e-6", "--out", str(out)]) == 0
    table = pd.read_parquet(out / "results.parquet")
    assert table["diverged"].all() and table["test_loss"].isna().all()  # no loss is below 1e-6
    from jaxopt_lab.outputs import schema

    assert schema.read_definition(out / "sweep.toml")["spec"]["diverge_above"] == 1e-6
    assert cli.main([*argv, "--out", str(tmp_path / "default")]) == 0
    assert not pd.read_parquet(tmp_path / "default" / "results.parquet")["diverged"].any()


def test_a_second_identical_sweep_compiles_nothing(tmp_path):
    """The command keeps compiled programs in $JAXOPT_LAB_CACHE/xla: the second run of the same
    sweep adds no cache entry, so each of its compiles was a cache hit."""
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XLA_FLAGS", "JAX_COMPILATION"))}
    env.update(JAXOPT_LAB_CACHE=str(cache), JAX_PLATFORMS="cpu")
    argv = [sys.executable, "-m", "jaxopt_lab.cli", "sweep", *ONE_CONFIG]

    def run(out, *extra):
        proc = subprocess.run(
            [*argv, "--out", str(tmp_path / out), *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return sorted(p.name for p in (cache / "xla").iterdir()) if (cache / "xla").exists() else []

    first = run("a")
    assert len(first) > 0
    assert run("b") == first
    # --no-compile-cache writes nothing
    env["JAXOPT_LAB_CACHE"] = str(tmp_path / "other")
    cache = tmp_path / "other"
    assert run("c", "--no-compile-cache") == []


def test_loss_and_label_smoothing_from_the_command(tmp_path):
    out = tmp_path / "out"
    argv = [
        "sweep",
        *ONE_CONFIG,
        "--loss",
        "cross_entropy",
        "--label-smoothing",
        "0,0.3",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    table = pd.read_parquet(out / "results.parquet")
    assert sorted(table["label_smoothing"].unique()) == [0.0, 0.3]
    from jaxopt_lab.outputs import schema

    assert schema.read_definition(out / "sweep.toml")["spec"]["loss"] == "cross_entropy"


def test_schedule_axes_from_the_command(tmp_path):
    out = tmp_path / "out"
    argv = ["sweep", *ONE_CONFIG, "--schedule", "constant,warmup_cosine", "--warmup-steps", "0,5"]
    assert cli.main([*argv, "--final-lr-fraction", "0,0.1", "--out", str(out)]) == 0
    table = pd.read_parquet(out / "results.parquet")
    configs = table.drop_duplicates("config_id")
    assert sorted(configs["schedule"]) == ["constant"] + ["warmup_cosine"] * 4
    cosine = table[(table["schedule"] == "warmup_cosine") & (table["step"] == 20)]
    for _, row in cosine.iterrows():  # the learning rate of the last step, 19 of 20
        lr = optax.warmup_cosine_decay_schedule(
            0, 0.1, row["warmup_steps"], 20, 0.1 * row["final_lr_fraction"]
        )
        assert row["applied_lr"] == pytest.approx(float(lr(19)), rel=1e-6)
    from jaxopt_lab.outputs import schema

    assert schema.read_definition(out / "sweep.toml")["grid"]["warmup_steps"] == [0.0, 5.0]


def test_measurements_and_a_target_from_the_command(tmp_path, capsys):
    """--measure and --target write their columns, pictures and definition tables; the
    definition runs again to the same table; report --metric draws any column; a resume
    with other measurements, an unknown one and a malformed target are one line, exit 2."""
    from jaxopt_lab.outputs import schema

    out, again = tmp_path / "measured", tmp_path / "again"
    flags = [
        "--measure",
        "sharpness,noise_scale",
        "--measure-batch-size",
        "64",
        "--target",
        "test_accuracy=0.3",
    ]
    assert cli.main(["sweep", *ONE_CONFIG, *flags, "--out", str(out)]) == 0
    table = pd.read_parquet(out / "results.parquet")
    for column in (
        "sharpness",
        "noise_scale",
        "noise_scale_running",
        "steps_to_target",
        "examples_to_target",
    ):
        assert column in table.columns
    assert table["sharpness"].notna().all() and (table["sharpness"] > 0).all()
    reached = table["test_accuracy"].to_numpy() >= 0.3
    if reached.any():  # the rows end at the first point that reached it
        assert (
            table["steps_to_target"].iloc[0] == table["step"].iloc[np.argmax(reached)] == table["step"].max()
        )
    for name in ("curves_sharpness.png", "curves_noise_scale_running.png", "heatmap_steps_to_target.png"):
        assert (out / name).stat().st_size > 0
    definition = schema.read_definition(out / "sweep.toml")
    assert list(definition["measure"]) == ["sharpness", "noise_scale"]
    assert definition["target"] == {
        "metric": "test_accuracy",
        "value": 0.3,
        "mode": "max",
        "interpolate": False,
    }
    assert definition["spec"]["measure_batch_size"] == 64
    assert cli.main(["sweep", "--config", str(out / "sweep.toml"), "--out", str(again), "--no-progress"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(again / "results.parquet"), table)

    assert cli.main(["report", str(out), "--metric", "noise_scale", "--x", "steps"]) == 0
    assert (out / "curves_noise_scale_by_step.png").stat().st_size > 0
    run = ["run", *ONE_CONFIG[:-2], "--seed", "0", "--measure", "grad_norm", "--target", "test_loss=0.01"]
    assert cli.main([*run, "--out", str(tmp_path / "one")]) == 0
    printed = capsys.readouterr().out
    assert "measured at step 20: grad_norm " in printed and "target not reached" in printed
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    bad = [
        (["sweep", *ONE_CONFIG, "--measure", "sharpness", "--out", str(out), "--resume"], "[measure]"),
        (
            ["sweep", *ONE_CONFIG, "--measure", "nope", "--out", str(tmp_path / "x")],
            "measure 'nope' is invalid",
        ),
        (
            ["sweep", *ONE_CONFIG, "--target", "loss", "--out", str(tmp_path / "x")],
            "--target 'loss' is invalid",
        ),
        (["report", str(out), "--metric", "nope"], "metric='nope' is invalid"),
        (["sweep", *ONE_CONFIG, "--target-mode", "max", "--out", str(tmp_path / "x")], "need --target"),
    ]
    for argv, message in bad:
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_target_mode_and_interpolation_flags_reach_the_definition():
    args = cli._parser().parse_args(["sweep", "--target", "test_accuracy=0.2", "--target-mode", "min"])
    assert cli._definition_from_args(args)["target"] == {
        "metric": "test_accuracy",
        "value": 0.2,
        "mode": "min",
    }
    args = cli._parser().parse_args(["sweep", "--target", "train_loss=1", "--target-interpolate"])
    assert cli._definition_from_args(args)["target"] == {
        "metric": "train_loss",
        "value": 1.0,
        "interpolate": True,
    }


def test_the_old_momentum_flag_names_its_replacement(capsys):
    assert cli.main(["sweep", "--momentum", "0.9", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unrecognized arguments: --momentum 0.9: a momentum coefficient is --beta" in err
