"""Mean or sum of the per-example losses under SGD, and how the best learning rate moves with batch size.

Question: does reducing the minibatch loss by its sum instead of its mean change SGD, and how does
the best (mean) learning rate of SGD and momentum move with the batch size B?
Claims: (exact) the sum's gradient is B times the mean's, so SGD on the sum at lr/B is SGD on the
mean at lr (best lrs and curves coincide under that rescaling); Goyal et al. 2017 (arXiv:1706.02677):
the best SGD lr grows in proportion to B at small B (the linear scaling rule; reported, not in PASS).
Scientific: B in {1, 4, 16, 64, 256, 512}, reduction, optimizer (sgd, momentum 0.9).
Nuisance: learning rate (4 per decade; the sum's grid is the mean's / B).
Fixed: MNIST-1D, MLP (64, 64), 5 epochs, 4 evaluations per epoch, seed 0; best = lowest final train
loss. mean_vs_sum_adam asks the same of Adam.
PASS if every SGD sum/mean pair agrees in divergence and within 1e-4 relative at every evaluation,
and best_sum_lr*B is best_mean_lr within one grid step at every B (a wrong reduction fails both).
"""

import dataclasses

import numpy as np
import pandas as pd
from _results import report
from matplotlib.figure import Figure

from jaxopt_lab.analysis import studies, tables
from jaxopt_lab.engine.train import TrainSpec

BS = [1, 4, 16, 64, 256, 512]  # factor-4 steps from single examples, then 512
LRS = dict(sgd=studies.log_grid(1e-3, 10), momentum=studies.log_grid(1e-4, 1))  # 4 per decade
SPEC = TrainSpec(model="mlp", model_options={"hidden": (64, 64)})
EPOCHS, TOL, METRIC = 5, 1e-4, "final_train_loss"
BUDGET = dict(epochs=EPOCHS, evals_per_epoch=4)
RUNS = [  # optimizer, the grid's axes (the sum's learning rates a function of B)
    ("sgd", {"reduction": ["mean"], "learning_rate": LRS["sgd"]}),
    ("momentum", {"reduction": ["mean"], "learning_rate": LRS["momentum"]}),
    ("sgd", {"reduction": ["sum"], "learning_rate": lambda b: LRS["sgd"] / b}),
]


def main():
    specs = [(dataclasses.replace(SPEC, optimizer=o), axes) for o, axes in RUNS]
    table = studies.concat_tables([studies.sweep_per_batch_size(s, BS, axes, **BUDGET) for s, axes in specs])
    gaps = studies.rescaled_gaps(table[table.optimizer == "sgd"], {"learning_rate": 1})
    finite = gaps.max_rel_gap[~gaps.diverged_sum & ~gaps.diverged_mean]
    same_divergence = (gaps.diverged_sum == gaps.diverged_mean).all()
    best = tables.best_learning_rates(table, metric=METRIC, by=("optimizer", "reduction", "batch_size"))
    lr = best.pivot_table(index="batch_size", columns=["optimizer", "reduction"], values="learning_rate")
    off = np.abs(np.log10(lr["sgd", "sum"] * lr.index / lr["sgd", "mean"])) * 4  # in grid steps

    ax = Figure(figsize=(12, 5), layout="constrained").subplots(1, 2)
    for (o, r), c in zip(lr.columns, ["C1", "C0", "C0"], strict=True):
        y, (fmt, ms) = lr[o, r] * (lr.index if r == "sum" else 1), ("o-", 5) if r == "mean" else ("x--", 9)
        label = f"{o} {r}" + (" (best lr x B)" if r == "sum" else "")
        ax[0].plot(y.index, y, fmt, color=c, ms=ms, label=label)
    ax[0].plot(lr.index, lr.iloc[0]["sgd", "mean"] * lr.index, ":", color="gray", label="linear rule")
    ax[0].set(xscale="log", yscale="log", xlabel="batch size B", ylabel="best learning rate", ylim=(1e-4, 30))
    ax[0].set_title(f"Best learning rate per B ({EPOCHS} epochs, lowest final train loss)")
    for c, b in zip(["C0", "C1", "C2"], BS[::2], strict=True):
        best_lr = lr.loc[b, ("sgd", "mean")]
        for r, scale, fmt in [("mean", 1, "-"), ("sum", b, "o")]:
            where = dict(optimizer="sgd", reduction=r, batch_size=b, learning_rate=best_lr / scale)
            rows = table[(table[list(where)] == pd.Series(where)).all(axis=1)]  # the config's curve
            label = f"B={b} {r}, lr={best_lr / scale:.2g}"
            ax[1].plot(rows.step / (4000 // b), rows.train_loss, fmt, color=c, ms=4, mfc="none", label=label)
    ax[1].set(yscale="log", xlabel="epoch", ylabel="train loss (mean over the last quarter epoch)")
    ax[1].set_title("SGD at the best mean lr: mean at lr (lines)\n= sum at lr/B (circles)")
    ax[0].legend(fontsize=7), ax[1].legend(fontsize=7, ncol=2)
    for o in LRS:  # the best mean learning rates, and their log-log slope over B = 1, 4, 16
        slope = studies.log_slope(lr.index[:3], lr[o, "mean"].iloc[:3])
        print(f"best mean lr at B={BS}, {o}: {lr[o, 'mean'].round(4).tolist()}, slope {slope:.2f}")
    ok = finite.max() <= TOL and same_divergence and off.max() <= 1 + 1e-6
    verdict = f"max rel curve gap {finite.max():.1e} over {len(finite)} finite pairs of {len(gaps)}, same"
    verdict += f" divergence {same_divergence}, best_sum_lr*B vs best_mean_lr max {off.max():.2f} grid steps"
    report("mean_vs_sum_sgd", ok, verdict, tables.summary(table), ax[0].figure)  # the CSV: one row per config


if __name__ == "__main__":
    main()
