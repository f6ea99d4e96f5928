"""Many hosts, one program: ``jax.distributed`` for a sweep that spans several processes.

Call :func:`initialize` in every process before JAX's first computation. The
mesh of a sweep then spans every process's devices: each process places and
computes only the shards of its own devices, the metrics of each segment are
gathered to every process, and process 0 alone writes the output folder and
draws the pictures, so every process returns the same :class:`SweepResult`.

Example, two processes on one machine (each with its own devices)::

    # process 0 and process 1 run the same script with their own id
    jaxopt_lab.engine.distributed.initialize("127.0.0.1:1234", num_processes=2, process_id=i)
    result = jaxopt_lab.sweep(spec, grid, out="runs/many")

On a TPU pod or under SLURM, ``initialize()`` with no arguments takes all of it
from the environment, as ``jax.distributed.initialize`` does.
"""

from __future__ import annotations

import os

import jax

from jaxopt_lab.errors import InputError

__all__ = ["initialize", "is_writer", "barrier"]

# Environment variables from which jax.distributed.initialize finds a cluster by itself.
_DETECTABLE = ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "TPU_ACCELERATOR_TYPE", "OMPI_COMM_WORLD_SIZE")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout: int = 300,
    environ=os.environ,
) -> None:
    """``jax.distributed.initialize`` with CPU collectives (gloo) and one-line errors.

    Args:
      coordinator_address: ``HOST:PORT`` of process 0; ``None``: detected from the
        environment (SLURM, a TPU pod, Open MPI).
      num_processes, process_id: this job's size and this process's index.
      timeout: seconds to wait for every process at the start, and for a process
        that stops answering later (its heartbeat), before the others end.

    Raises:
      InputError: when no cluster can be detected and no coordinator is given, for
        malformed arguments, and when the coordinator does not answer in time.
    """
    given = [v is not None for v in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        raise InputError(
            "coordinator_address, num_processes and process_id go together: give all three or none "
            "(none: detected from SLURM or a TPU pod)"
        )
    if not any(given) and not any(name in environ for name in _DETECTABLE):
        raise InputError(
            "distributed: no cluster detected (SLURM, TPU, Open MPI): expected --coordinator HOST:PORT "
            "--num-processes N --process-id I"
        )
    if all(given):
        host, _, port = str(coordinator_address).rpartition(":")
        if not host or not port.isdigit():
            raise InputError(f"coordinator={coordinator_address!r} is invalid: expected HOST:PORT")
        if not (isinstance(num_processes, int) and num_processes >= 1 and 0 <= process_id < num_processes):
            raise InputError(
                f"process_id={process_id!r} of num_processes={num_processes!r} is invalid: expected "
                "0 <= process_id < num_processes"
            )
        if process_id != 0:  # jaxlib aborts the process when it cannot reach the coordinator: look first
            _wait_for(host, int(port), timeout, coordinator_address)
    if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address,
            num_processes,
            process_id,
            initialization_timeout=int(timeout),
            heartbeat_timeout_seconds=int(timeout),
        )
    except (RuntimeError, ValueError) as err:  # jaxlib's errors for a coordinator that is not there
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"coordinator={coordinator_address!r} did not answer within {timeout} s, or not all "
            f"{num_processes} processes joined: {first}"
        ) from err


def _wait_for(host: str, port: int, timeout: float, address: str) -> None:
    """Return once ``host:port`` accepts a connection; :class:`InputError` after ``timeout`` s."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise InputError(
                    f"coordinator={address!r} did not answer within {timeout:g} s ({err.strerror or err}): "
                    "expected process 0 to be running there"
                ) from None
            time.sleep(0.2)


def is_writer() -> bool:
    """Whether this process writes the output folder: process 0 of a distributed job."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process gets here (nothing to wait for in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
