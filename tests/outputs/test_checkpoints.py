"""Checkpoints inside a chunk: a sweep killed with SIGKILL in the middle of its only chunk
resumes from its last orbax checkpoint, does not redo the segments before it, and gives the
table of the uninterrupted sweep."""

import os
import signal
import subprocess
import time

import pandas as pd
import pytest
from _processes import command_process

from jaxopt_lab import cli
from jaxopt_lab.engine import chunks as C
from jaxopt_lab.engine import sweep as S
from jaxopt_lab.errors import InputError
from jaxopt_lab.outputs import folder

# 4 configs in one chunk of 4 (one per device), 100 segments of 20 steps
ARGV = ["--dataset", "digits", "--model", "mlp", "--hidden", "16", "--steps", "2000", "--eval-every", "20"]
ARGV += ["--optimizer", "momentum", "--lr", "1e-3:1e-1:4", "--batch-size", "32", "--seeds", "1"]
ARGV += ["--chunk-size", "4", "--no-progress", "--no-compile-cache"]
CHECKPOINTS = os.path.join("checkpoints", "group000-chunk0000")


def _steps_saved(out):
    folder = os.path.join(out, CHECKPOINTS)
    return sorted(int(n) for n in os.listdir(folder) if n.isdigit()) if os.path.isdir(folder) else []


def test_a_killed_chunk_resumes_from_its_checkpoint_and_gives_the_uninterrupted_table(tmp_path, monkeypatch):
    assert cli.main(["sweep", *ARGV, "--out", str(tmp_path / "whole")]) == 0
    whole = pd.read_parquet(tmp_path / "whole" / "results.parquet")
    out = str(tmp_path / "killed")
    worker = command_process(
        "sweep", *ARGV, "--checkpoint-every", "0", "--out", out, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    while not [s for s in _steps_saved(out) if s >= 400] and worker.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint past step 400"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == -signal.SIGKILL, stderr
    assert not os.path.exists(os.path.join(out, "chunks", "group000-chunk0000.parquet"))
    saved = max(_steps_saved(out))
    assert 400 <= saved < 2000

    segments = {"n": 0}
    real = C.programs

    def counting(*args):
        init_p, segment_p, replay_p, arrays, by_config = real(*args)

        def segment(*a):
            segments["n"] += 1
            return segment_p(*a)

        return init_p, segment, replay_p, arrays, by_config

    monkeypatch.setattr(C, "programs", counting)
    assert cli.main(["sweep", *ARGV, "--out", out, "--resume"]) == 0
    assert segments["n"] == (2000 - saved) // 20  # only the segments after the checkpoint
    pd.testing.assert_frame_equal(pd.read_parquet(os.path.join(out, "results.parquet")), whole)
    assert not os.path.exists(os.path.join(out, CHECKPOINTS))  # the chunk's file replaced it
    assert folder.foreign_entries(out) == []


def test_bad_checkpoint_intervals_are_refused(tmp_path, capsys):
    with pytest.raises(InputError, match=r"checkpoint_every=-1 is invalid: expected seconds >= 0"):
        S.sweep({"dataset": "digits"}, S.Grid(learning_rate=[0.1]), out=tmp_path / "o", checkpoint_every=-1)
    assert cli.main(["sweep", *ARGV, "--checkpoint-every", "soon", "--out", str(tmp_path / "c")]) == 2
    assert "--checkpoint-every: invalid float value: 'soon'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "c").exists()
