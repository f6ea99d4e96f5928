"""Many processes, one program: 2 local processes with 2 CPU devices each (gloo collectives
on 127.0.0.1) give the table of 1 process with 4 devices; process 0 alone writes."""

import os
import signal
import socket
import time

import pandas as pd
from _processes import command_process

from jaxopt_lab import cli

ARGV = ["--dataset", "digits", "--model", "mlp", "--hidden", "8", "--steps", "20", "--eval-every", "10"]
ARGV += ["--optimizer", "momentum", "--lr", "1e-3:1:4", "--batch-size", "16", "--seeds", "2"]
ARGV += ["--chunk-size", "4"]  # 8 configs, 2 chunks
ARGV += ["--no-progress", "--no-compile-cache"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process(i, n, port, out, *extra):
    coordinator = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", n, "--process-id", i]
    return command_process("sweep", *ARGV, "--out", out, *extra, *coordinator, devices=2)


def test_two_processes_of_two_devices_give_the_table_of_one_process_with_four(tmp_path):
    assert cli.main(["sweep", *ARGV, "--out", str(tmp_path / "one")]) == 0  # 4 devices here
    one = pd.read_parquet(tmp_path / "one" / "results.parquet")
    port = _free_port()
    processes = [_process(i, 2, port, tmp_path / "two", "--distributed-timeout", "60") for i in range(2)]
    outputs = [p.communicate(timeout=240) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert "wrote 16 rows for 8 configs" in outputs[0][0] and "wrote" not in outputs[1][0]
    two = pd.read_parquet(tmp_path / "two" / "results.parquet")
    pd.testing.assert_frame_equal(two, one)
    # all processes restarted with --resume: only the chunk that is gone runs again
    os.remove(tmp_path / "two" / "chunks" / "group000-chunk0001.parquet")
    os.remove(tmp_path / "two" / "results.parquet")
    kept = (tmp_path / "two" / "chunks" / "group000-chunk0000.parquet").stat().st_mtime_ns
    port = _free_port()
    processes = [_process(i, 2, port, tmp_path / "two", "--resume") for i in range(2)]
    outputs = [p.communicate(timeout=240) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert (tmp_path / "two" / "chunks" / "group000-chunk0000.parquet").stat().st_mtime_ns == kept
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "two" / "results.parquet"), one)


def test_distributed_without_a_cluster_or_coordinator_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    for name in ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "TPU_ACCELERATOR_TYPE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["sweep", *ARGV, "--distributed", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "no cluster detected (SLURM, TPU, Open MPI): expected --coordinator" in err
    )
    assert not (tmp_path / "out").exists()


def test_a_coordinator_that_does_not_answer_is_one_line_and_exit_2(tmp_path):
    lonely = _process(1, 2, _free_port(), tmp_path / "out", "--distributed-timeout", "1")
    stdout, stderr = lonely.communicate(timeout=120)
    assert lonely.returncode == 2, (stdout, stderr)
    line = [ln for ln in stderr.splitlines() if ln.startswith("jaxopt-lab: error:")]
    assert len(line) == 1 and "did not answer within 1 s" in line[0]
    assert not (tmp_path / "out").exists()


def test_a_process_that_dies_ends_the_other_within_the_timeout(tmp_path):
    out = tmp_path / "out"
    port = _free_port()
    long = ["--steps", "50000", "--distributed-timeout", "2"]  # far longer than the test waits
    processes = [_process(i, 2, port, out, *long) for i in range(2)]
    deadline = time.monotonic() + 120
    while not (out / "sweep.toml").exists():  # both joined: process 0 passed the first barrier
        assert time.monotonic() < deadline and processes[0].poll() is None, processes[0].communicate()
        time.sleep(0.1)
    time.sleep(0.3)
    processes[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = processes[0].communicate(timeout=60)
    processes[1].communicate()
    assert processes[0].returncode != 0
    assert time.monotonic() - killed < 2 + 15  # the heartbeat timeout, and no hang
    assert "another task died" in stderr or "heartbeat" in stderr
