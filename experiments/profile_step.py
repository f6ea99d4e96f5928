"""Profile: where a sweep's training step spends its time, op by op, on this machine.

Question: in the benchmark's sweep (MNIST-1D, MLP (256, 256), Adam, 16 learning rates x
2 seeds at one batch size), what share of the XLA ops' time goes to the matmuls, to the
elementwise fusions (Adam's update is most of them), to the epoch permutation's sort and to
copies? It traces a second, already compiled `sweep()` call with `jax.profiler` and sums
the op events of XLA's CPU threads, classified by XLA's op names (`dot`, `ynn_fusion`:
matmuls; `sort`; `copy`; any other fusion: elementwise). Numbers are per config-step.
Writes profile_step.csv (experiments/_results.py says where) and prints the table and the top ops.
With --chunks it times the same sweep at several chunk sizes instead (configs per compiled
call, spread over the devices; best of 2 runs after a compile) and writes
profile_chunks.csv: the evidence behind the engine's CPU chunk size.
Usage: python experiments/profile_step.py [--chunks] [--update-results] [batch sizes...]   (default: 8 64 256)
"""

import collections
import glob
import os
import sys
import tempfile
import time

import jax
import pandas as pd
from _results import OUT as RESULTS
from bench_sweep import EVAL_EVERY, LRS, SEEDS, STEPS, spec  # the benchmark's workload

from jaxopt_lab import Grid, sweep

OUT = str(RESULTS / "profile_step.csv")
CHUNKS_OUT = str(RESULTS / "profile_chunks.csv")
CHUNK_SIZES = (2, 4, 8, 16, 32)


def bench_spec(batch_size):
    """The benchmark's bucket sweep at one batch size, without batch norm."""
    cfg = {"steps": STEPS, "eval_every": EVAL_EVERY}
    return spec(False, cfg), Grid(learning_rate=list(LRS), batch_size=[batch_size], seed=list(SEEDS))


def category(name: str) -> str:
    if name.startswith(("dot", "ynn_fusion")):
        return "matmul"
    if name.startswith("sort"):
        return "sort (epoch permutation)"
    if name.startswith("copy"):
        return "copy"
    return "elementwise and other"


def op_times(batch_size: int) -> collections.Counter:
    """Summed op time (ns) by XLA op name over a traced sweep of one batch size."""
    spec, grid = bench_spec(batch_size)
    sweep(spec, grid, strategy="bucket", progress=False)  # compile outside the trace
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            sweep(spec, grid, strategy="bucket", progress=False)
        (path,) = glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True)
        profile = jax.profiler.ProfileData.from_file(path)
    times = collections.Counter()
    for plane in profile.planes:
        for line in plane.lines:
            if line.name.startswith("tf_XLAEigen"):  # the threads that run XLA's CPU ops
                for event in line.events:
                    # leaf ops only: a loop's or a branch's event spans the ops inside it
                    if not event.name.startswith(("ThunkExecutor", "while", "conditional", "call")):
                        times[event.name] += event.duration_ns
    return times


def chunk_rates(batch_sizes):
    """Config-steps/s of the sweep at each chunk size (the engine's default marked)."""
    rows = []
    for b in batch_sizes:
        spec, grid = bench_spec(b)
        for chunk in (None, *CHUNK_SIZES):
            sweep(spec, grid, strategy="bucket", progress=False, chunk_size=chunk)  # compile
            best = float("inf")
            for _ in range(2):
                start = time.perf_counter()
                sweep(spec, grid, strategy="bucket", progress=False, chunk_size=chunk)
                best = min(best, time.perf_counter() - start)
            rows.append(
                {
                    "batch_size": b,
                    "chunk_size": chunk or "default",
                    "configs_per_device": (chunk / jax.device_count()) if chunk else None,
                    "config_steps_per_s": len(grid.configs()) * STEPS / best,
                }
            )
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(CHUNKS_OUT, index=False)
    print(
        table.pivot(index="chunk_size", columns="batch_size", values="config_steps_per_s")
        .round(0)
        .to_string()
    )


def main():
    args = sys.argv[1:]
    batch_sizes = [int(x) for x in args if x not in ("--chunks", "--update-results")] or [8, 64, 256]
    if "--chunks" in args:
        return chunk_rates(batch_sizes)
    rows, config_steps = [], len(LRS) * len(SEEDS) * STEPS
    for b in batch_sizes:
        times = op_times(b)
        total = sum(times.values())
        by_cat = collections.Counter()
        for name, ns in times.items():
            by_cat[category(name)] += ns
        for cat, ns in by_cat.most_common():
            rows.append(
                {
                    "batch_size": b,
                    "category": cat,
                    "us_per_config_step": ns / 1e3 / config_steps,
                    "share": ns / total,
                }
            )
        top = ", ".join(f"{n} {ns / 1e3 / config_steps:.1f}" for n, ns in times.most_common(6))
        print(
            f"batch {b}: {total / 1e3 / config_steps:.1f} us of ops per config-step (summed "
            f"over threads); top ops (us): {top}",
            flush=True,
        )
    table = pd.DataFrame(rows)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    table.to_csv(OUT, index=False)
    shares = table.pivot(index="category", columns="batch_size", values="share")
    print("share of op time by category, per batch size:")
    print(shares.map(lambda s: f"{100 * s:.0f}%").to_string())


if __name__ == "__main__":
    main()
