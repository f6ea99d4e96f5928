"""The command in a process of its own, for the tests of several processes (job arrays,
kills, jax.distributed): compiled with this process's XLA flags, so its numbers compare."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command_process(*args, devices: int = 4, **popen) -> subprocess.Popen:
    """``jaxopt-lab ARGS`` started in a new process with ``devices`` CPU devices; stdout and
    stderr are pipes of text unless ``popen`` says otherwise."""
    flags = os.environ["XLA_FLAGS"].replace("device_count=4", f"device_count={devices}")
    env = {
        **os.environ,
        "XLA_FLAGS": flags,
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen}
    return subprocess.Popen([sys.executable, "-m", "jaxopt_lab.cli", *map(str, args)], env=env, **popen)
