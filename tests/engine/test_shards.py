"""A sweep split across a job array: workers share one folder, each computes its shard of the
chunks, and the table the last one (or `report`) writes is the single-process table."""

import os

import pandas as pd
import pytest
from _processes import command_process

from jaxopt_lab import cli
from jaxopt_lab.engine import sweep as S
from jaxopt_lab.errors import InputError
from jaxopt_lab.outputs import schema

# 12 configs in chunks of 4: three chunks, one per worker of a 3-task array
ARGV = ["--dataset", "digits", "--model", "mlp", "--hidden", "8", "--steps", "20", "--eval-every", "10"]
ARGV += ["--optimizer", "sgd", "--lr", "1e-3:1:6", "--batch-size", "16", "--seeds", "2", "--chunk-size", "4"]
ARGV += ["--no-progress", "--no-compile-cache"]


def _worker(index, out):
    return command_process("sweep", *ARGV, "--shard", f"{index}/3", "--out", out)


def test_three_concurrent_workers_give_the_single_process_table(tmp_path, capsys):
    assert cli.main(["sweep", *ARGV, "--out", str(tmp_path / "alone")]) == 0  # 4 devices here too
    alone = pd.read_parquet(tmp_path / "alone" / "results.parquet")
    workers = [_worker(i, tmp_path / "array") for i in range(3)]
    outputs = [w.communicate(timeout=240) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], outputs
    chunks = sorted(os.listdir(tmp_path / "array" / "chunks"))
    assert chunks == [f"group000-chunk000{c}.parquet" for c in range(3)]
    table = pd.read_parquet(tmp_path / "array" / "results.parquet")
    pd.testing.assert_frame_equal(table, alone)
    capsys.readouterr()
    # the report of the finished folder prints the same best learning rates
    assert cli.main(["report", str(tmp_path / "array")]) == 0
    assert "sgd" in capsys.readouterr().out


def test_shards_in_turn_then_report(tmp_path, capsys):
    out = tmp_path / "array"
    assert cli.main(["sweep", *ARGV, "--shard", "1/3", "--out", str(out)]) == 0
    assert "shard 1/3 done; 2 chunks are other shards'" in capsys.readouterr().out
    assert sorted(os.listdir(out / "chunks")) == ["group000-chunk0001.parquet"]
    assert not (out / "results.parquet").exists()
    # a report of the unfinished folder names what is missing and writes nothing
    assert cli.main(["report", str(out)]) == 1
    err = capsys.readouterr().err
    assert "is not complete: 2 chunks are missing (group000-chunk0000.parquet, group000-chunk0002" in err
    assert not (out / "results.parquet").exists()
    # the remaining shards, one after the other, from Python; the last writes the table
    definition = schema.read_definition(out / "sweep.toml")
    spec, options = schema.sweep_arguments(definition)
    grid = S.Grid(**definition["grid"])
    first = S.sweep(spec, grid, out=out, shard=(0, 3), progress=False, **options)
    assert first.missing == ("group000-chunk0002.parquet",) and not first.complete
    last = S.sweep(spec, grid, out=out, shard=(2, 3), progress=False, **options)
    assert last.complete and (out / "results.parquet").exists()
    assert cli.main(["report", str(out)]) == 0


def test_a_slurm_job_array_task_is_a_shard():
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "3"}
    assert cli._shard(None, env) == (1, 3)  # task 5 of 4..6
    assert cli._shard(None, {}) is None
    assert cli._shard("2/3", env) == (2, 3)  # --shard wins
    with pytest.raises(InputError, match="SLURM_ARRAY_TASK_ID='x' is invalid"):
        cli._shard(None, {**env, "SLURM_ARRAY_TASK_ID": "x"})


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--shard", "3/3"], "--shard '3/3' is invalid: expected I/N with 0 <= I < N"),
        (["--shard", "one"], "--shard 'one' is invalid: expected I/N, e.g. 0/3"),
        (["--shard", "0/2", "--overwrite"], "--shard 0/2 and --overwrite are exclusive"),
    ],
)
def test_bad_shards_are_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    assert cli.main(["sweep", *ARGV, *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError, match=r"shard=\(2, 2\) is invalid"):
        S.sweep({"dataset": "digits"}, S.Grid(learning_rate=[0.1]), out=tmp_path / "o", shard=(2, 2))
