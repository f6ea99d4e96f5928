"""Benchmark: a jaxopt_lab sweep against the training loops people already write.

Question: how much faster is one vmapped, compiled sweep than the loops users write, on the
same configs and steps, on this machine? Claims (the project's issue): the sweep runs >= 10x
the config-steps/s of (1) a flax.linen + optax Python loop (a jitted step called once per step,
config after config: the pattern of flax's examples), >= 1.3x (2) one jitted `lax.scan` over
all steps per config (the best without vmap), and reaches >= 40% of the measured float32
matmul peak in its batch-64 and batch-256 groups. (3) PyTorch's eager loop (the same MLP and
`torch.optim.Adam`) runs too when `torch` is importable.
Workload (fixed): MNIST-1D, MLP (256, 256) with and without batch norm, Adam, 16 log-spaced
learning rates x batch sizes {8, 64, 256} x 2 seeds, STEPS steps, a test evaluation every
EVAL_EVERY steps. The slow methods run a subset of the configs (SUBSET_LRS x 1 seed per cell);
every rate is per config-step of run time (wall time less compile time), and a method's rate
over several cells is the workload's config-steps over its time for them at its measured rates.
On a CPU the process gets one XLA device per core: the sweep shards each chunk of configs over
them (a row shows it on one device too); the loops run on the first, with XLA's own threads.
FLOPs: XLA's cost analysis of the compiled flax step and evaluation of each cell (the useful
work; the mask strategy's padding rows are not counted), checked against the analytic matmul
count. Peak: the best of repeated 2048^3 float32 matmuls measured during this run.
PASS if all three targets hold. Timings are noisy on a shared machine: the load average is
recorded beside them. `--quick` runs a one-minute version (no batch norm, fewer configs).
"""

import argparse
import functools
import json
import os
import platform
import resource
import sys
import threading
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _results import OUT as RESULTS
from flax.training import train_state

from jaxopt_lab import data
from jaxopt_lab.engine.sweep import Grid, one_device_per_cpu_core, sweep

# One XLA device per core, so the sweep shards its configs over the cores of a CPU as it
# does over accelerators (the `jaxopt-lab sweep` command does the same).
one_device_per_cpu_core()

HIDDEN = (256, 256)  # the reference MLP
BATCH_SIZES = (8, 64, 256)  # small, medium and large for a 2-core CPU
LRS = tuple(float(x) for x in np.geomspace(1e-4, 1e-1, 16))  # Adam's useful range, 16 points
SEEDS = (0, 1)
STEPS, EVAL_EVERY = 300, 100  # the whole benchmark stays under 10 minutes on 2 CPU cores
SUBSET_LRS = 4  # configs per cell for the loop baselines (they run one config at a time)
QUICK = dict(lrs=LRS[::5], seeds=(0,), steps=60, eval_every=30, batchnorm=(False,), subset=1)
OUT = str(RESULTS / "bench_sweep")


# ------------------------------------------------------------------ measurement helpers
class Meter:
    """Wall time, compile time (JAX's trace, lowering and XLA compile events) and peak RSS."""

    compile_s = 0.0

    @classmethod
    def listen(cls):
        events = (
            "/jax/core/compile/jaxpr_trace_duration",
            "/jax/core/compile/jaxpr_to_mlir_module_duration",
            "/jax/core/compile/backend_compile_duration",
        )

        def on_event(event, duration, **_):
            if event in events:
                cls.compile_s += duration

        jax.monitoring.register_event_duration_secs_listener(on_event)

    def __enter__(self):
        self.rss, self._stop = _rss(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.c0, self.t0 = Meter.compile_s, time.perf_counter()
        return self

    def _sample(self):
        while not self._stop.wait(0.02):
            self.rss = max(self.rss, _rss())

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.compile = Meter.compile_s - self.c0
        self._stop.set()
        self._thread.join()


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the process's high-water mark
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def matmul_peak(repeats=5) -> float:
    """Float32 GFLOP/s of the best of `repeats` large square matmuls on the default device."""
    n = 2048 if jax.default_backend() == "cpu" else 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def machine() -> dict:
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    dev = jax.devices()[0]
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "backend": jax.default_backend(),
        "device_kind": dev.device_kind,
        "num_devices": jax.device_count(),
        "jax": jax.__version__,
        "python": platform.python_version(),
    }


def device_peak_bytes():
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


# ---------------------------------------------------------------- (1) and (2): flax + optax
class MLP(nn.Module):
    batchnorm: bool

    @nn.compact
    def __call__(self, x, train: bool):
        for width in HIDDEN:
            x = nn.Dense(width, use_bias=not self.batchnorm)(x)
            if self.batchnorm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.99)(x)
            x = nn.relu(x)
        return nn.Dense(10)(x)


class State(train_state.TrainState):
    batch_stats: dict


def _loss(state, params, x, y):
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, x, train=True, mutable=["batch_stats"]
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, updates.get("batch_stats", {})


def train_step(state, x, y):
    (loss, stats), grads = jax.value_and_grad(functools.partial(_loss, state), has_aux=True)(
        state.params, x, y
    )
    return state.apply_gradients(grads=grads, batch_stats=stats), loss


def evaluate(state, x, y):
    logits = state.apply_fn({"params": state.params, "batch_stats": state.batch_stats}, x, train=False)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, jnp.mean(jnp.argmax(logits, -1) == y)


def new_state(bn, lr, seed, x):
    model = MLP(bn)
    variables = model.init(jax.random.key(seed), x[:1], train=False)
    return State.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=optax.adam(lr),
        batch_stats=variables.get("batch_stats", {}),
    )


def epoch_order(seed, n, bs, steps):
    """Batch indices of every step: a fresh permutation each epoch, as flax's examples draw."""
    rng, spe = np.random.default_rng(seed), n // bs
    perms = [rng.permutation(n)[: spe * bs].reshape(spe, bs) for _ in range(-(-steps // spe))]
    return np.concatenate(perms)[:steps].astype(np.int32)


def python_loop(ds, bn, bs, lr, seed, steps, eval_every):
    """Method (1): flax's example pattern, a jitted step called from Python once per step."""
    x, y = np.asarray(ds.x_train), np.asarray(ds.y_train)
    state = new_state(bn, lr, seed, ds.x_train)
    step_fn, eval_fn = jax.jit(train_step), jax.jit(evaluate)  # a new optimizer retraces anyway
    losses, history = [], []
    for t, idx in enumerate(epoch_order(seed, len(x), bs, steps)):
        state, loss = step_fn(state, x[idx], y[idx])
        losses.append(loss)
        if (t + 1) % eval_every == 0 or t + 1 == steps:
            history.append(
                (float(np.mean(jax.device_get(losses))), *map(float, eval_fn(state, ds.x_test, ds.y_test)))
            )
            losses = []
    return history


@functools.cache
def scan_program(bn, steps, eval_every):
    """Method (2): one jitted program per shape, lr traced; scans of eval_every steps, then eval."""

    def run(lr, seed, idx, x, y, x_test, y_test):
        state = new_state(bn, lr, seed, x)

        def step(state, i):
            return train_step(state, x[i], y[i])

        def segment(state, idx):
            state, losses = jax.lax.scan(step, state, idx)
            return state, (losses.mean(), *evaluate(state, x_test, y_test))

        return jax.lax.scan(segment, state, idx.reshape(steps // eval_every, eval_every, -1))[1]

    return jax.jit(run)


def scan_per_config(ds, bn, bs, lr, seed, steps, eval_every):
    idx = jnp.asarray(epoch_order(seed, ds.x_train.shape[0], bs, steps))
    out = scan_program(bn, steps, eval_every)(
        jnp.float32(lr), seed, idx, ds.x_train, ds.y_train, ds.x_test, ds.y_test
    )
    return jax.device_get(out)


# ------------------------------------------------------------------------- (3) PyTorch
def torch_loop(ds, bn, bs, lr, seed, steps, eval_every):
    """Method (3): the same MLP and torch.optim.Adam, eager, one config after another."""
    import torch

    dev = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    torch.manual_seed(seed)
    layers, width = [], ds.x_train.shape[1]
    for h in HIDDEN:  # momentum=0.01 is flax's 0.99
        layers += [torch.nn.Linear(width, h, bias=not bn)]
        layers += [torch.nn.BatchNorm1d(h, momentum=0.01)] if bn else []
        layers += [torch.nn.ReLU()]
        width = h
    model = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    as_t = lambda a: torch.from_numpy(np.array(a)).to(dev)  # noqa: E731
    x, x_test = as_t(ds.x_train), as_t(ds.x_test)
    y, y_test = (as_t(np.asarray(a).astype(np.int64)) for a in (ds.y_train, ds.y_test))
    history, total = [], torch.zeros((), device=dev)
    for t, idx in enumerate(as_t(epoch_order(seed, len(x), bs, steps)).long()):
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
        if (t + 1) % eval_every == 0 or t + 1 == steps:
            model.eval()
            with torch.no_grad():
                logits = model(x_test)
                history.append(
                    (
                        total.item() / eval_every,
                        torch.nn.functional.cross_entropy(logits, y_test).item(),
                        (logits.argmax(-1) == y_test).float().mean().item(),
                    )
                )
            model.train()
            total.zero_()
    return history


def torch_threads(ds) -> int:
    """PyTorch's default thread count, or 1 where that runs faster on this machine now: on a
    loaded machine its OpenMP threads spin waiting for a descheduled sibling (~100x slower)."""
    import torch

    times = {}
    for n in sorted({torch.get_num_threads(), 1}):
        torch.set_num_threads(n)
        t = time.perf_counter()
        torch_loop(ds, False, 64, 1e-3, 0, 40, 40)
        times[n] = time.perf_counter() - t
    torch.set_num_threads(min(times, key=times.get))
    return torch.get_num_threads()


# ---------------------------------------------------------------------- (4) the sweep
def spec(bn, cfg):
    return {
        "dataset": "mnist1d",
        "model": "mlp",
        "optimizer": "adam",
        "model_options": {"hidden": HIDDEN, "batchnorm": bn},
        "steps": cfg["steps"],
        "eval_every": cfg["eval_every"],
    }


def run_sweep(bn, batch_sizes, strategy, cfg, devices=None):
    grid = Grid(learning_rate=list(cfg["lrs"]), batch_size=list(batch_sizes), seed=list(cfg["seeds"]))
    return sweep(spec(bn, cfg), grid, strategy=strategy, progress=False, devices=devices).table


# -------------------------------------------------------------------------- accounting
def cell_flops(ds, bn, bs):
    """XLA's cost-analysis FLOPs of one training step and one evaluation, and the analytic
    matmul count (forward 2*MACs, backward 4*MACs less the unneeded input gradient)."""
    state = new_state(bn, 1e-3, 0, ds.x_train)

    def flops(fn, *args):
        cost = jax.jit(fn).lower(*args).compile().cost_analysis()
        return float((cost[0] if isinstance(cost, list) else cost)["flops"])

    widths = (ds.x_train.shape[1], *HIDDEN, 10)
    macs = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    return {
        "step": flops(train_step, state, ds.x_train[:bs], ds.y_train[:bs]),
        "eval": flops(evaluate, state, ds.x_test, ds.y_test),
        "step_analytic": bs * (6 * macs - 2 * widths[0] * widths[1]),
        "eval_analytic": ds.x_test.shape[0] * 2 * macs,
    }


def summarize(results, cfg, flops, peak):
    """One row per (method, batch-size group): rates at the workload's scale."""
    steps, evals = cfg["steps"], cfg["steps"] // cfg["eval_every"]
    per_cell = len(cfg["lrs"]) * len(cfg["seeds"])
    rows = []
    for method, cells in results.items():
        groups = [b for b in BATCH_SIZES if any(c[1] == b for c in cells)] + ["all"]
        for group in groups:
            sel = {c: m for c, m in cells.items() if group == "all" or c[1] == group}
            work_cs = work_time = work_flops = 0.0
            for (bn, b), m in sel.items():
                bss = BATCH_SIZES if b == "all" else (b,)
                n = per_cell * len(bss)
                rate = m["configs"] * steps / max(m["wall"] - m["compile"], 1e-9)
                work_cs += n * steps
                work_time += n * steps / rate
                work_flops += sum(
                    per_cell * (steps * flops[bn, x]["step"] + evals * flops[bn, x]["eval"]) for x in bss
                )
            rows.append(
                {
                    "method": method,
                    "batch": group,
                    "configs_run": sum(m["configs"] for m in sel.values()),
                    "compile_s": sum(m["compile"] for m in sel.values()),
                    "run_s": sum(m["wall"] - m["compile"] for m in sel.values()),
                    "workload_run_s": work_time,
                    "config_steps_per_s": work_cs / work_time,
                    "gflops": work_flops / work_time / 1e9,
                    "peak_rss_mib": max(m["rss"] for m in sel.values()) / 2**20,
                    "peak_device_mib": max((m["device"] or 0) for m in sel.values()) / 2**20 or None,
                }
            )
    for row in rows:
        for ref, col in (("python loop", "x_loop"), ("scan per config", "x_scan")):
            base = [r for r in rows if r["method"] == ref and r["batch"] == row["batch"]]
            row[col] = row["config_steps_per_s"] / base[0]["config_steps_per_s"] if base else None
        row["pct_peak"] = 100 * row["gflops"] / peak
    return rows


def table(rows, peak, info) -> str:
    fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, JAX {info['jax']} on "
        f"{info['backend']} ({info['device_kind']}); load average {info['load']}; "
        f"float32 matmul peak {peak:.0f} GFLOP/s.",
        "",
        "| method | batch | configs run | compile s | run s | workload run s | "
        "config-steps/s | × loop | × scan | GFLOP/s | % of peak | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['batch']} | {r['configs_run']} | {r['compile_s']:.1f} | "
            f"{r['run_s']:.1f} | {r['workload_run_s']:.1f} | {r['config_steps_per_s']:,.0f} | "
            f"{fmt(r['x_loop'], '.2f')} | {fmt(r['x_scan'], '.2f')} | {r['gflops']:.1f} | "
            f"{r['pct_peak']:.0f}% | {r['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines)


def measure(fn, configs):
    with Meter() as m:
        for args in configs:
            fn(*args)
    return {
        "configs": len(configs),
        "wall": m.wall,
        "compile": m.compile,
        "rss": m.rss,
        "device": device_peak_bytes(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a one-minute version")
    parser.add_argument(
        "--update-results",
        action="store_true",
        help="write the tracked experiments/results/ (default: runs/)",
    )
    parser.add_argument(
        "--methods",
        default="all",
        help="comma-separated subset of: loop, scan, torch, bucket, bucket1, mask (to time the engine alone)",
    )
    args = parser.parse_args()
    quick, wanted = args.quick, set(args.methods.split(","))
    keep = lambda key: "all" in wanted or key in wanted  # noqa: E731
    cfg = {
        "lrs": LRS,
        "seeds": SEEDS,
        "steps": STEPS,
        "eval_every": EVAL_EVERY,
        "batchnorm": (False, True),
        "subset": SUBSET_LRS,
    }
    cfg.update(QUICK if quick else {})
    Meter.listen()
    ds = data.load("mnist1d")
    info = {**machine(), "load_before": os.getloadavg()}
    flops = {(bn, b): cell_flops(ds, bn, b) for bn in cfg["batchnorm"] for b in BATCH_SIZES}
    subset = cfg["lrs"][len(cfg["lrs"]) // (2 * cfg["subset"]) :: len(cfg["lrs"]) // cfg["subset"]]
    baselines = {
        name: fn
        for key, name, fn in (
            ("loop", "python loop", python_loop),
            ("scan", "scan per config", scan_per_config),
        )
        if keep(key)
    }
    try:
        import torch  # noqa: F401

        if keep("torch"):
            baselines["pytorch"] = torch_loop
            info["torch_threads"] = torch_threads(ds)
    except ImportError:
        print("torch is not importable: the PyTorch baseline is skipped")
    one = jax.devices()[:1] if jax.device_count() > 1 else None  # what sharding adds
    sweeps = [
        name
        for key, name in (
            ("bucket", "sweep bucket"),
            ("bucket1", "sweep bucket, 1 device" if one else None),
            ("mask", "sweep mask"),
        )
        if name and keep(key)
    ]
    results = {name: {} for name in [*baselines, *sweeps]}
    peaks = [matmul_peak()]
    start = time.perf_counter()
    for bn in cfg["batchnorm"]:  # methods interleaved cell by cell, so load drifts hit all
        for b in BATCH_SIZES:
            for name, fn in baselines.items():
                args = [(ds, bn, b, lr, 0, cfg["steps"], cfg["eval_every"]) for lr in subset]
                results[name][bn, b] = measure(fn, args)
            for name, devices in (("sweep bucket", None), ("sweep bucket, 1 device", one)):
                if name in results:
                    results[name][bn, b] = measure(run_sweep, [(bn, (b,), "bucket", cfg, devices)])
                    results[name][bn, b]["configs"] = len(cfg["lrs"]) * len(cfg["seeds"])
            peaks.append(matmul_peak())
            print(f"batchnorm={bn} batch={b} done at {time.perf_counter() - start:.0f} s", flush=True)
        if "sweep mask" in results:
            results["sweep mask"][bn, "all"] = measure(run_sweep, [(bn, BATCH_SIZES, "mask", cfg)])
            results["sweep mask"][bn, "all"]["configs"] = (
                len(cfg["lrs"]) * len(cfg["seeds"]) * len(BATCH_SIZES)
            )
            peaks.append(matmul_peak())
    info["load_after"] = os.getloadavg()
    info["load"] = f"{info['load_before'][0]:.1f} before, {info['load_after'][0]:.1f} after"
    peak = max(peaks)
    rows = summarize(results, cfg, flops, peak)
    best = max(
        (r for r in rows if r["method"].startswith("sweep") and r["batch"] == "all"),
        key=lambda r: r["config_steps_per_s"],
        default=None,
    )
    bucket = {r["batch"]: r["pct_peak"] for r in rows if r["method"] == "sweep bucket"}
    if best and best["x_loop"] and best["x_scan"] and bucket:
        checks = {
            "x_loop>=10": best["x_loop"] >= 10,
            "x_scan>=1.3": best["x_scan"] >= 1.3,
            "bs64,256>=40%peak": min(bucket[64], bucket[256]) >= 40,
        }
        verdict = (
            f"bench_sweep: {'PASS' if all(checks.values()) else 'FAIL'} "
            f"{best['method']} {best['x_loop']:.1f}x loop, {best['x_scan']:.2f}x scan, "
            f"batch 64/256 at {bucket[64]:.0f}%/{bucket[256]:.0f}% of {peak:.0f} GFLOP/s "
            f"peak ({', '.join(k for k, ok in checks.items() if not ok) or 'all met'})"
        )
    else:
        verdict = "bench_sweep: FAIL the targets need the loop, the scan and the bucket sweep"
    verdict += f"; {time.perf_counter() - start:.0f} s"
    out = OUT + ("_quick" if quick else "") + ("" if "all" in wanted else "_partial") + ".json"
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(
            {
                "machine": info,
                "config": {**cfg, "subset_lrs": subset},
                "flops": {f"bn={k[0]},batch={k[1]}": v for k, v in flops.items()},
                "peaks_gflops": peaks,
                "peak_gflops": peak,
                "cells": {
                    name: {f"bn={k[0]},batch={k[1]}": v for k, v in cells.items()}
                    for name, cells in results.items()
                },
                "rows": rows,
                "verdict": verdict,
            },
            f,
            indent=1,
            default=str,
        )
    print(verdict)
    print(table(rows, peak, info))


if __name__ == "__main__":
    sys.exit(main())
