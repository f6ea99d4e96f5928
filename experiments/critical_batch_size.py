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
Fixed: MNIST-1D (4000 training examples), MLP (64, 64) (compiles dominate on 2 CPU cores:
18 programs), loss on the whole training set evaluated at steps 5% apart, <= 30000 steps,
2 seeds (S(B, lr) is their mean: one run's S varies by ~15% at small B); B_simple from
per-example gradients over the training set at init (mean of 4 inits) and where the SGD runs
at the best lr reach the target (median over B and seeds).
PASS if, for every optimizer, S*B at B=8 is within 15% of S*B at B=4, and the SGD fit's B_crit
lies between B_simple at initialization and B_simple at the target.
"""

import dataclasses

import numpy as np
import pandas as pd
from _results import OUT
from matplotlib.figure import Figure

from jaxopt_lab import studies
from jaxopt_lab.train import TrainSpec

BATCH_SIZES = [4, 8, 32, 128, 512, 4000]  # two small ones for the perfect-scaling check
LR_START = {"sgd": 0.05, "momentum": 0.003, "adam": 0.002}  # first window's centre, at B=4
SPEC = TrainSpec(model="mlp", model_options={"hidden": (64, 64)})
TARGET, MAX_STEPS, TOL = 0.5, 30_000, 0.15
SEEDS = (0, 1)  # two seeds: the steps-to-target of one run is noisy at small B


def main():
    table = pd.concat(
        [
            studies.steps_to_target_table(
                dataclasses.replace(SPEC, optimizer=o),
                BATCH_SIZES,
                lr_start=lr,
                target=TARGET,
                max_steps=MAX_STEPS,
                seeds=SEEDS,
                noise_scale=(o == "sgd"),
            )
            for o, lr in LR_START.items()
        ],
        ignore_index=True,
    )
    table.to_csv(OUT / "critical_batch_size.csv", index=False)
    best = studies.best_steps(table)
    by_opt = dict(list(best.groupby("optimizer")))
    fits = {o: studies.fit_critical_batch_size(g.batch_size, g.steps_to_target) for o, g in by_opt.items()}
    init = studies.init_states(dataclasses.replace(SPEC, optimizer="sgd"), {}, [0, 1, 2, 3])
    b_init = float(np.mean(studies.noise_scales(SPEC, init).b_simple))
    b_target = float(np.nanmedian(table.b_simple_at_target))
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
