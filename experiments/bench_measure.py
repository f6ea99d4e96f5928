"""Benchmark: what measuring inside a sweep costs, per evaluation point and per step.

Question: how much does a sweep slow down when it carries `sharpness` and `noise_scale`
(and `NoiseScale(per_example=False)`, its running estimate alone)?
Workload (fixed): MNIST-1D, MLP (256, 256), Adam, 16 log-spaced learning rates x 2 seeds,
batch 64, 300 steps, one XLA device per core; the measurement batch is the default 1024
training examples. Each variant (no measurement, `sharpness`, `noise_scale`, both) runs with
an evaluation every 100 steps (3 points) and every 300 (1 point), once to compile and then
REPEATS times, variants alternating so load drifts hit all; a variant's time is its median.
The difference between 3 and 1 points is the cost of 2 later evaluation points: divided by
2 x 32 configs it is the cost of one measurement of one config. The rest of a variant's
overhead over the plain sweep is sharpness's cold first point (20 iterations, later points 5)
or noise_scale's second backward pass at every step. Costs are also given in training steps
of the plain sweep.
"""

import json
import statistics
import sys
import time

import numpy as np
from _results import OUT

from jaxopt_lab.engine.sweep import Grid, one_device_per_cpu_core, sweep
from jaxopt_lab.measure import NoiseScale

one_device_per_cpu_core()

REPEATS = 3
STEPS = 300
SPEC = dict(
    dataset="mnist1d", model="mlp", model_options={"hidden": (256, 256)}, optimizer="adam", steps=STEPS
)
GRID = Grid(learning_rate=[float(v) for v in np.geomspace(1e-4, 1e-1, 16)], seed=[0, 1], batch_size=[64])
CONFIGS = 32
VARIANTS = {"none": (), "sharpness": ("sharpness",), "noise_scale": ("noise_scale",)}
VARIANTS["both"] = VARIANTS["sharpness"] + VARIANTS["noise_scale"]
VARIANTS["noise_scale_running"] = (NoiseScale(per_example=False),)


def timed(measure, eval_every):
    start = time.perf_counter()
    sweep({**SPEC, "eval_every": eval_every}, GRID, measure=list(measure), progress=False)
    return time.perf_counter() - start


def main():
    runs = {(v, e): [] for v in VARIANTS for e in (100, 300)}
    for key in runs:
        timed(VARIANTS[key[0]], key[1])  # compiles
    for _ in range(REPEATS):
        for key in runs:
            runs[key].append(timed(VARIANTS[key[0]], key[1]))
    median = {k: statistics.median(v) for k, v in runs.items()}
    step_s = median[("none", 300)] / (CONFIGS * STEPS)  # one config-step of the plain sweep
    rows = []
    plain_points = median[("none", 100)] - median[("none", 300)]
    for name in VARIANTS:
        # A point after the first: the difference between 3 and 1 points, over 2 points.
        per_point = ((median[(name, 100)] - median[(name, 300)]) - plain_points) / (2 * CONFIGS)
        # The rest of the 1-point run's overhead: sharpness's cold first point (num_iters
        # iterations where later points take num_warm_iters), noise_scale's second backward pass
        # at every step; as a share of the plain sweep's 300 steps.
        rest = (median[(name, 300)] - median[("none", 300)]) / CONFIGS - per_point
        r = {
            "measure": name,
            "seconds_3_points": median[(name, 100)],
            "seconds_1_point": median[(name, 300)],
            "ratio_to_plain_3_points": median[(name, 100)] / median[("none", 100)],
            "ms_per_config_point": 1e3 * per_point,
            "steps_per_config_point": per_point / step_s,
            "rest_share_of_training": rest / (STEPS * step_s),
        }
        rows.append(r)
        print(
            f"{name:>19}: {r['seconds_3_points']:.2f} s with 3 points "
            f"({r['ratio_to_plain_3_points']:.2f}x the plain sweep); a later point "
            f"{r['ms_per_config_point']:.1f} ms = {r['steps_per_config_point']:.0f} steps per config; "
            f"the rest {100 * r['rest_share_of_training']:+.0f}% of the training",
            flush=True,
        )
    verdict = "bench_measure: " + ", ".join(
        f"{r['measure']} {r['steps_per_config_point']:.0f} steps/point, "
        f"rest {100 * r['rest_share_of_training']:+.0f}%"
        for r in rows[1:]
    )
    (OUT / "bench_measure.json").write_text(
        json.dumps(
            {"rows": rows, "runs_s": {f"{k[0]}@{k[1]}": v for k, v in runs.items()}, "verdict": verdict},
            indent=1,
        )
    )
    print(verdict)


if __name__ == "__main__":
    sys.exit(main())
