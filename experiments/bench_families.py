"""Benchmark: an optax optimizer registered as a family against the built-in family of the same update.

Question: does opening the engine to any optax factory cost speed? A family is called inside
the compiled, vmapped step with traced hyperparameters either way, so the claim (the
project's issue) is that a registered optax family runs within 10% of the built-in family of
the same update, in the same sweep.
Pairs: the built-in `adam` (jaxopt_lab.optim.transforms) against `Optimizer(optax.adam, ...)`, and
the built-in `momentum` against `Optimizer(optax.sgd, ...)` with optax's `momentum` traced.
Workload (fixed): MNIST-1D, MLP (256, 256), 16 log-spaced learning rates x 2 seeds, batch 64,
300 steps, evaluation every 100, one XLA device per core. Each sweep runs once to compile,
then REPEATS times, the two families of a pair alternating so load drifts hit both; a
family's time is its median run. PASS if each optax family's median is within 10% of its
built-in's (ratio <= 1.10). The numbers agree too (same update; float32 rounding).
"""

import json
import statistics
import sys
import time

import numpy as np
import optax
from _results import OUT

from jaxopt_lab import Optimizer
from jaxopt_lab.engine.sweep import Grid, one_device_per_cpu_core, sweep

one_device_per_cpu_core()

REPEATS = 5
SPEC = dict(dataset="mnist1d", model="mlp", model_options={"hidden": (256, 256)}, steps=300, eval_every=100)
GRID = dict(learning_rate=[float(v) for v in np.geomspace(1e-4, 1e-1, 16)], seed=[0, 1], batch_size=[64])
PAIRS = {
    "adam": Optimizer(
        optax.adam, {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8}, name="optax.adam"
    ),
    "momentum": Optimizer(optax.sgd, {"learning_rate": 1e-2, "momentum": 0.9}, name="optax.sgd"),
}


def timed(family):
    grid = Grid(optimizer=[family], **GRID)
    start = time.perf_counter()
    table = sweep(SPEC, grid, progress=False).table
    return time.perf_counter() - start, table


def main():
    rows, ok = [], True
    for builtin, family in PAIRS.items():
        _, ours = timed(builtin)  # compiles
        _, theirs = timed(family)
        drift = float(np.nanmax(np.abs(ours.test_loss.to_numpy() - theirs.test_loss.to_numpy())))
        times = {builtin: [], family.name: []}
        for _ in range(REPEATS):
            for name, f in ((builtin, builtin), (family.name, family)):
                times[name].append(timed(f)[0])
        ratio = statistics.median(times[family.name]) / statistics.median(times[builtin])
        ok &= ratio <= 1.10
        rows.append(
            {
                "built_in": builtin,
                "optax_family": family.name,
                "built_in_s": statistics.median(times[builtin]),
                "optax_s": statistics.median(times[family.name]),
                "ratio": ratio,
                "max_test_loss_difference": drift,
                "runs_s": times,
            }
        )
        print(
            f"{builtin:>8} {statistics.median(times[builtin]):.2f} s, {family.name} "
            f"{statistics.median(times[family.name]):.2f} s: ratio {ratio:.3f}, "
            f"largest test-loss difference {drift:.1e}",
            flush=True,
        )
    verdict = f"bench_families: {'PASS' if ok else 'FAIL'} " + ", ".join(
        f"{r['optax_family']}/{r['built_in']} = {r['ratio']:.3f}" for r in rows
    )
    (OUT / "bench_families.json").write_text(json.dumps({"rows": rows, "verdict": verdict}, indent=1))
    print(verdict)


if __name__ == "__main__":
    sys.exit(main())
