"""Critical batch size: steps to a target training loss against batch size, at the best lr each.

Question: how many steps S(B) does the MNIST-1D MLP need to reach a training loss of 0.5 at
batch size B, each B at its own best learning rate, for SGD, momentum and Adam?
Claim (Shallue et al. 2018, arXiv:1811.03600; McCandlish et al. 2018, arXiv:1812.06162):
S(B) = S_min (1 + B_crit / B): perfect scaling (S*B constant) at small B, diminishing returns
past B_crit, and B_crit is about the gradient noise scale B_simple = tr(Sigma)/|G|^2, which
grows during training.
Scientific: B in {4, 8, 32, 128, 512, 4000 (full batch)}, optimizer (sgd, momentum 0.9, adam).
Nuisance: learning rate, searched per B on a 4-per-decade grid (a 5-point window that starts
at the previous B's best and shifts while the best is at its edge).
Fixed: MNIST-1D (4000 training examples), MLP (64, 64) (compiles dominate on 2 CPU cores),
2 seeds (S(B, lr) is their mean: one run's S varies by ~15% at small B). Every window is one
sweep whose configs stop at the engine's target: the loss on the whole training set (the
`train_set` measurement) <= 0.5, evaluated at steps 5% apart (eval_growth 1.05), within 30000
steps at B=4 and 1.5 times the previous B's best steps after it (steps to target fall with B
at the best lr, so a slower config cannot be the best). B_simple is the engine's `noise_scale`
from per-example gradients over the whole training set: after one step at lr 1e-9 (4 seeds,
the initialization) and at the target point of the SGD runs at the best lr (median over B and
seeds).
PASS if, for every optimizer, S*B at B=8 is within 15% of S*B at B=4, and the SGD fit's B_crit
lies between B_simple at initialization and B_simple at the target.
"""

import math

import numpy as np
import pandas as pd
from _results import OUT
from matplotlib.figure import Figure

from jaxopt_lab import Grid, sweep
from jaxopt_lab.analysis import studies
from jaxopt_lab.analysis.critical_batch import fit_critical_batch_size
from jaxopt_lab.analysis.tables import best_settings
from jaxopt_lab.engine.train import Target

BATCH_SIZES = [4, 8, 32, 128, 512, 4000]  # two small ones for the perfect-scaling check
LR_START = {"sgd": 0.05, "momentum": 0.003, "adam": 0.002}  # first window's centre, at B=4
TARGET, MAX_STEPS, TOL = 0.5, 30_000, 0.15
SEEDS = [0, 1]  # two seeds: the steps-to-target of one run is noisy at small B
PER_DECADE, WINDOW, MAX_SHIFTS = 4, (-1, 3), 3
HPARAMS = ["optimizer", "batch_size", "learning_rate", "seed"]  # the settings best_settings ranks
SPEC = dict(
    model="mlp", model_options={"hidden": (64, 64)}, eval_every=1, eval_growth=1.05,
    measure_batch_size=4000, target=Target("train_set_loss", TARGET),
)  # fmt: skip


def window(optimizer, batch_size, ks, budget):
    """One sweep of the learning rates 10**(k / PER_DECADE) x SEEDS, each config to the target."""
    measure = ["train_set", *(["noise_scale"] if optimizer == "sgd" else [])]
    spec = {
        **SPEC,
        "optimizer": optimizer,
        "batch_size": batch_size,
        "steps": int(budget),
        "measure": measure,
    }
    grid = Grid(learning_rate=[float(10.0 ** (k / PER_DECADE)) for k in ks], seed=SEEDS)
    runs = sweep(spec, grid, progress=False).summary()
    runs["k"] = _k(runs.learning_rate)
    return runs


def _k(learning_rate):
    return np.round(np.log10(learning_rate) * PER_DECADE).astype(int)


def search(optimizer, lr_start):
    """Each B's window of learning rates, from the previous B's best (studies.shift_window)."""
    frames, centre, budget = [], round(math.log10(lr_start) * PER_DECADE), MAX_STEPS
    for b in BATCH_SIZES:
        runs, winner = studies.shift_window(
            lambda ks, b=b, budget=budget: window(optimizer, b, ks, budget),
            centre + np.arange(WINDOW[0], WINDOW[1] + 1),
            "steps_to_target",
            max_shifts=MAX_SHIFTS,
            hparams=HPARAMS,
        )
        frames.append(runs)
        if runs.best.any():
            centre, budget = (
                runs.k[runs.best].iloc[0],
                min(MAX_STEPS, math.ceil(1.5 * winner.steps_to_target_mean)),
            )
    return pd.concat(frames, ignore_index=True)


def main():
    table = pd.concat([search(o, lr) for o, lr in LR_START.items()], ignore_index=True)
    table.to_csv(OUT / "critical_batch_size.csv", index=False)
    best = best_settings(
        table, ["optimizer", "batch_size"], "steps_to_target", hparams=HPARAMS, report=["examples_to_target"]
    ).rename(
        columns={"steps_to_target_mean": "steps_to_target", "examples_to_target_mean": "examples_to_target"}
    )
    by_opt = dict(list(best.groupby("optimizer")))
    fits = {o: fit_critical_batch_size(g.batch_size, g.steps_to_target) for o, g in by_opt.items()}
    init = sweep(
        {**SPEC, "target": None, "optimizer": "sgd", "steps": 1, "measure": ["noise_scale"]},
        Grid(learning_rate=[1e-9], seed=[0, 1, 2, 3]),
        progress=False,
    )
    b_init = float(init.summary().final_noise_scale.mean())
    b_target = float(np.nanmedian(table[(table.optimizer == "sgd") & table.best].final_noise_scale))
    ratios = {o: g.examples_to_target.iloc[1] / g.examples_to_target.iloc[0] for o, g in by_opt.items()}

    fig = Figure(figsize=(13, 4.8), layout="constrained")
    axes = fig.subplots(1, 2)
    b = np.geomspace(BATCH_SIZES[0], BATCH_SIZES[-1], 100)
    for (o, g), c in zip(by_opt.items(), ["C2", "C1", "C0"], strict=True):
        f = fits[o]
        label = f"{o}: S_min={f.s_min:.0f}, B_crit={f.b_crit:.0f}"
        for ax, y, y_fit in [
            (axes[0], g.steps_to_target, f.s_min * (1 + f.b_crit / b)),
            (axes[1], g.examples_to_target, f.s_min * (b + f.b_crit)),
        ]:
            ax.plot(g.batch_size, y, "o", color=c, label=label)
            ax.plot(b, y_fit, "-", color=c, alpha=0.6)
    for ax in axes:
        for x, text in [
            (b_init, f"B_simple at init: {b_init:.0f}"),
            (b_target, f"B_simple at target (SGD): {b_target:.0f}"),
        ]:
            ax.axvline(x, ls=":", color="gray")
            ax.text(x, 0.02, " " + text, transform=ax.get_xaxis_transform(), rotation=90, fontsize=8)
        ax.set(xscale="log", yscale="log", xlabel="batch size B")
        ax.legend(fontsize=8)
    axes[0].set(
        ylabel=f"steps to train loss {TARGET}", title="S(B) at the best lr per B; fit S_min(1 + B_crit/B)"
    )
    axes[1].set(ylabel=f"examples to train loss {TARGET}", title="E(B) = S(B) B; perfect scaling is flat")
    fig.savefig(OUT / "critical_batch_size.png", dpi=120)

    sgd = fits["sgd"].b_crit
    ok = all(abs(r - 1) <= TOL for r in ratios.values()) and b_init <= sgd <= b_target
    print(
        best[["optimizer", "batch_size", "learning_rate", "steps_to_target", "lr_at_edge"]].to_string(
            index=False
        )
    )
    print(
        f"critical_batch_size: {'PASS' if ok else 'FAIL'} S*B(8)/S*B(4) "
        + " ".join(f"{o} {r:.2f}" for o, r in ratios.items())
        + f"; B_crit sgd {sgd:.0f} momentum {fits['momentum'].b_crit:.0f} adam {fits['adam'].b_crit:.0f}; "
        f"B_simple init {b_init:.0f} <= B_crit(sgd) <= B_simple at target {b_target:.0f}"
    )


if __name__ == "__main__":
    main()
