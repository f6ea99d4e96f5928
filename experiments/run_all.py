"""Run every experiment, each in its own process, and print their verdict lines.

Each script writes <name>.csv and <name>.png and ends with one line
`<name>: PASS|FAIL <numbers>`. The files go to runs/experiments/, and to the
tracked experiments/results/ only with --update-results. A FAIL is a finding, reported as it is;
a script that crashes or prints no verdict makes this command exit non-zero.

Usage: python experiments/run_all.py [--update-results] [name ...]
"""

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Cheap, exactly analysable problems first; the MNIST-1D sweeps last.
EXPERIMENTS = (
    "momentum_window",
    "optimizer_paths",
    "bn_bias_drift",
    "noisy_quadratic",
    "bn_running_stats_frozen",
    "bn_running_stats_training",
    "edge_of_stability",
    "mean_vs_sum_sgd",
    "mean_vs_sum_adam",
    "chunk_width",
    "batch_size_generalization",
    "critical_batch_size",
    "mnist1d_anchor",
)


def main(names: list[str]) -> int:
    env = dict(os.environ)
    if "--update-results" in names:
        names = [n for n in names if n != "--update-results"]
        env["JAXOPT_LAB_UPDATE_RESULTS"] = "1"
    unknown = sorted(set(names) - set(EXPERIMENTS))
    if unknown:
        print(
            f"run_all: experiment {unknown[0]!r} is invalid: expected one of {', '.join(EXPERIMENTS)}",
            file=sys.stderr,
        )
        return 2
    verdicts, broken = [], []
    start = time.perf_counter()
    for name in names or EXPERIMENTS:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(HERE / f"{name}.py")], capture_output=True, text=True, env=env
        )
        seconds = time.perf_counter() - t0
        lines = [line for line in proc.stdout.splitlines() if line.startswith(f"{name}: ")]
        if proc.returncode != 0 or not lines:
            broken.append(name)
            verdicts.append(f"{name}: ERROR (exit {proc.returncode}) [{seconds:.0f} s]")
            sys.stderr.write(proc.stderr[-3000:])
        else:
            verdicts.append(f"{lines[-1]} [{seconds:.0f} s]")
        print(verdicts[-1], flush=True)
    passed = sum(": PASS" in v for v in verdicts)
    failed = sum(": FAIL" in v for v in verdicts)
    print(f"\n{passed} passed, {failed} failed, {len(broken)} errors in {time.perf_counter() - start:.0f} s")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
