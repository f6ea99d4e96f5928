"""Critical batch size: steps to a target training loss against batch size, at the best lr each.

Question: how many steps S(B) does the MNIST-1D MLP need to reach a training loss of 0.5 at batch
size B, each B at its own best learning rate, for SGD, momentum and Adam?
Claim (Shallue et al. 2018, arXiv:1811.03600; McCandlish et al. 2018, arXiv:1812.06162):
S(B) = S_min (1 + B_crit / B): perfect scaling (S*B constant) at small B, diminishing returns past
B_crit, and B_crit is about the gradient noise scale B_simple = tr(Sigma)/|G|^2, which grows.
Scientific: B in {4, 8, 32, 128, 512, 4000 (full batch)}, optimizer (sgd, momentum 0.9, adam).
Nuisance: learning rate, 4 per decade, searched per B by `studies.steps_to_target_per_batch_size`.
Fixed: MNIST-1D (4000 examples), MLP (64, 64), 2 seeds (S(B, lr) is their mean: one run's S varies
by ~15% at small B); configs stop at the engine's target, the `train_set` loss (the whole training
set) <= 0.5 at steps 5% apart. B_simple: the engine's `noise_scale` over the whole training set
after one step at lr 1e-9 (4 seeds) and at the target of the SGD runs at the best lr (median).
PASS if, for every optimizer, S*B at B=8 is within 15% of S*B at B=4, and the SGD fit's B_crit
lies between B_simple at initialization and B_simple at the target.
"""

import numpy as np
import pandas as pd
from _results import report
from matplotlib.figure import Figure

from jaxopt_lab import Grid, sweep
from jaxopt_lab.analysis import studies
from jaxopt_lab.analysis.critical_batch import fit_critical_batch_size
from jaxopt_lab.analysis.tables import best_settings
from jaxopt_lab.engine.train import Target

BATCH_SIZES = [4, 8, 32, 128, 512, 4000]  # two small ones for the perfect-scaling check
LR_START = {"sgd": 0.05, "momentum": 0.003, "adam": 0.002}  # the first window's centre, at B=4
TARGET, TOL = 0.5, 0.15
SEARCH = dict(max_steps=30_000, seeds=[0, 1], per_decade=4, window=(-1, 3), max_shifts=3, budget_growth=1.5)
RANK = dict(hparams=["optimizer", "batch_size", "learning_rate", "seed"], report=["examples_to_target"])
SPEC = dict(
    model="mlp", model_options={"hidden": (64, 64)}, eval_every=1, eval_growth=1.05,
    measure_batch_size=4000, target=Target("train_set_loss", TARGET),
)  # fmt: skip
MEASURE = {"sgd": ["train_set", "noise_scale"], "momentum": ["train_set"], "adam": ["train_set"]}
INIT = {**SPEC, "target": None, "optimizer": "sgd", "steps": 1, "measure": ["noise_scale"]}
TITLES = ("S(B) at the best lr per B; fit S_min(1 + B_crit/B)", "E(B) = S(B) B; perfect scaling is flat")


def search(optimizer):
    """Each batch size's steps to the target at its best learning rate, a window of sweeps each."""
    spec = {**SPEC, "optimizer": optimizer, "measure": MEASURE[optimizer]}
    return studies.steps_to_target_per_batch_size(spec, BATCH_SIZES, LR_START[optimizer], **SEARCH)


def main():
    table = pd.concat([search(o) for o in LR_START], ignore_index=True)
    best = best_settings(table, ["optimizer", "batch_size"], "steps_to_target", **RANK)  # mean over seeds
    by_opt = dict(list(best.groupby("optimizer")))
    fits = {o: fit_critical_batch_size(g.batch_size, g.steps_to_target_mean) for o, g in by_opt.items()}
    init = sweep(INIT, Grid(learning_rate=[1e-9], seed=[0, 1, 2, 3]), progress=False).summary()  # one step
    b_init = float(init.final_noise_scale.mean())
    b_target = float(np.nanmedian(table[(table.optimizer == "sgd") & table.best].final_noise_scale))
    ratios = {o: np.divide(*g.examples_to_target_mean.iloc[[1, 0]]) for o, g in by_opt.items()}  # B=8 / B=4
    axes, b = Figure(figsize=(13, 4.8), layout="constrained").subplots(1, 2), np.geomspace(4, 4000, 100)
    for (o, g), f, c in zip(by_opt.items(), fits.values(), ["C2", "C1", "C0"], strict=True):
        steps, examples = g.steps_to_target_mean, g.examples_to_target_mean
        for ax, y, y_fit in [(axes[0], steps, 1 + f.b_crit / b), (axes[1], examples, b + f.b_crit)]:
            ax.plot(g.batch_size, y, "o", color=c, label=f"{o}: S_min={f.s_min:.0f}, B_crit={f.b_crit:.0f}")
            ax.plot(b, f.s_min * y_fit, "-", color=c, alpha=0.6)
    for ax, y, title in zip(axes, ("steps", "examples"), TITLES, strict=True):
        for x, text in [(b_init, "B_simple at init"), (b_target, "B_simple at target (SGD)")]:
            ax.axvline(x, ls=":", color="gray")
            ax.text(x, 0.02, f" {text}: {x:.0f}", transform=ax.get_xaxis_transform(), rotation=90, fontsize=8)
        ax.set(xscale="log", yscale="log", xlabel="batch size B", ylabel=f"{y} to train loss {TARGET}")
        ax.set_title(title), ax.legend(fontsize=8)
    ok = all(abs(r - 1) <= TOL for r in ratios.values()) and b_init <= fits["sgd"].b_crit <= b_target
    shown = ["optimizer", "batch_size", "learning_rate", "steps_to_target_mean", "lr_at_edge"]
    print(best[shown].to_string(index=False))
    verdict = "S*B(8)/S*B(4) " + " ".join(f"{o} {r:.2f}" for o, r in ratios.items())
    verdict += "; B_crit " + " ".join(f"{o} {fits[o].b_crit:.0f}" for o in ("sgd", "momentum", "adam"))
    verdict += f"; B_simple init {b_init:.0f} <= B_crit(sgd) <= B_simple at target {b_target:.0f}"
    report("critical_batch_size", ok, verdict, table, axes[0].figure)


if __name__ == "__main__":
    main()
