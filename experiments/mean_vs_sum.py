"""Mean or sum of the per-example losses, and how the best learning rate moves with batch size.

Question: does reducing the minibatch loss by its sum instead of its mean change training, and
how does the best (mean) learning rate move with the batch size B? Claims: (exact) the sum's
gradient is B times the mean's, so SGD on the sum at lr/B is SGD on the mean at lr (best lrs and
curves coincide under that rescaling); Adam divides by the root of its second moment, so the sum
only rescales eps (sum at eps*B == mean at eps). Goyal et al. 2017 (arXiv:1706.02677): the best
SGD lr grows in proportion to B at small B (the linear scaling rule).
Scientific: B in {1, 4, 16, 64, 256, 512}, reduction, optimizer (sgd, momentum 0.9, adam).
Nuisance: learning rate (4 per decade; sum grids = mean grids / B), Adam's eps.
Fixed: MNIST-1D, MLP (64, 64), 5 epochs, 4 evaluations per epoch, seed 0; best = lowest final
train loss. Compiles dominate on 2 CPU cores (one program per optimizer, reduction and B: 27),
hence 6 batch sizes, Adam's sum at 3 of them, and 5 epochs.
PASS if every SGD sum/mean and Adam sum(eps*B)/mean(eps) pair agrees in divergence and within
1e-4 relative at every evaluation, and best_sum_lr*B is best_mean_lr within one grid step at
every B (a wrong reduction or lr rule fails all three).
"""

import dataclasses

import numpy as np
from _results import OUT
from matplotlib.figure import Figure

from jaxopt_lab.analysis import studies, tables
from jaxopt_lab.engine.train import TrainSpec

BS = [1, 4, 16, 64, 256, 512]  # factor-4 steps from single examples, then 512
LRS = {
    "sgd": studies.log_grid(1e-3, 10),
    "momentum": studies.log_grid(1e-4, 1),
    "adam": studies.log_grid(1e-4, 1e-1),
}  # each optimizer's plausible range, 4 per decade
EPS = 1e-2  # an Adam eps large enough to matter, so sum-at-eps*B == mean-at-eps is not trivial
SPEC = TrainSpec(model="mlp", model_options={"hidden": (64, 64)})
EPOCHS, TOL, METRIC = 5, 1e-4, "final_train_loss"
RUNS = [  # optimizer, reduction, batch sizes, learning rates at B, other axes at B
    *[(o, "mean", BS, lambda b, o=o: LRS[o], lambda b: {}) for o in ("sgd", "momentum")],
    ("sgd", "sum", BS, lambda b: LRS["sgd"] / b, lambda b: {}),
    ("adam", "mean", BS, lambda b: LRS["adam"], lambda b: {"eps": [1e-8, EPS]}),
    ("adam", "sum", BS[1::2], lambda b: LRS["adam"], lambda b: {"eps": [1e-8, EPS, EPS * b]}),
]


def curve(ax, table, o, r, b, lr, eps, style, color):
    rows = table[
        (table.optimizer == o)
        & (table.reduction == r)
        & (table.batch_size == b)
        & np.isclose(table.learning_rate, lr)
        & ((table.eps == eps) if eps else True)
    ]
    ax.plot(
        rows.step / (4000 // b),
        rows.train_loss,
        style,
        color=color,
        ms=4,
        mfc="none",
        label=f"B={b} {r}, lr={lr:.2g}" + (f", eps={eps:g}" if eps else ""),
    )
    ax.set(yscale="log", xlabel="epoch", ylabel="train loss (mean over the last quarter epoch)")


def main():
    table = studies.concat_tables(
        [
            studies.sweep_per_batch_size(
                dataclasses.replace(SPEC, optimizer=o),
                bs,
                epochs=EPOCHS,
                evals_per_epoch=4,
                axes=lambda b, r=r, f=f, g=g: {"reduction": [r], "learning_rate": list(f(b)), **g(b)},
            )
            for o, r, bs, f, g in RUNS
        ]
    )
    tables.summary(table).to_csv(OUT / "mean_vs_sum.csv", index=False)  # one row per config
    adam = table.optimizer == "adam"
    gaps = [
        studies.rescaled_gaps(table[table.optimizer == "sgd"], {"learning_rate": 1}),
        studies.rescaled_gaps(table[adam], {"eps": -1}),
    ]
    finite = np.concatenate([g.max_rel_gap[~g.diverged_sum & ~g.diverged_mean] for g in gaps])
    same_divergence = all((g.diverged_sum == g.diverged_mean).all() for g in gaps)
    best = tables.best_learning_rates(
        table[~adam | (table.eps == 1e-8)], metric=METRIC, by=("optimizer", "reduction", "batch_size")
    )
    lr = best.pivot_table(index="batch_size", columns=["optimizer", "reduction"], values="learning_rate")
    off = np.abs(np.log10(lr["sgd", "sum"] * lr.index / lr["sgd", "mean"])) * 4  # in grid steps
    slopes = {o: studies.log_slope(lr.index[:3], lr[o, "mean"].iloc[:3]) for o in LRS}

    fig = Figure(figsize=(17, 5), layout="constrained")
    ax = fig.subplots(1, 3)
    for (o, r), c in zip(lr.columns, ["C2", "C2", "C1", "C0", "C0"], strict=True):
        y = lr[o, r].dropna() * (lr.index if (o, r) == ("sgd", "sum") else 1)
        ax[0].plot(
            y.index,
            y,
            "o-" if r == "mean" else "x--",
            color=c,
            ms=9 if r == "sum" else 5,
            label=f"{o} {r}" + (" (best lr x B)" if (o, r) == ("sgd", "sum") else ""),
        )
    ax[0].plot(lr.index, lr.iloc[0]["sgd", "mean"] * lr.index, ":", color="gray", label="linear rule")
    ax[0].set(
        xscale="log",
        yscale="log",
        xlabel="batch size B",
        ylabel="best learning rate",
        ylim=(1e-4, 30),
        title=f"Best learning rate per B ({EPOCHS} epochs, lowest final train loss)",
    )
    for c, b in zip(["C0", "C1", "C2"], BS[::2], strict=True):
        for r, scale, style in [("mean", 1, "-"), ("sum", b, "o")]:
            curve(ax[1], table, "sgd", r, b, lr.loc[b, ("sgd", "mean")] / scale, None, style, c)
    for c, b in zip(["C0", "C1", "C2"], BS[1::2], strict=True):
        for r, eps, style in [("mean", EPS, "-"), ("sum", EPS * b, "o"), ("sum", EPS, ":")]:
            curve(ax[2], table, "adam", r, b, lr.loc[b, ("adam", "mean")], eps, style, c)
    ax[1].set(title="SGD at the best mean lr: mean at lr (lines)\n= sum at lr/B (circles)")
    ax[2].set(
        title=f"Adam at its best lr, eps={EPS:g}: mean (lines)\n"
        "= sum at eps*B (circles), != sum at eps (dots)"
    )
    for a in ax:
        a.legend(fontsize=7, ncol=1 if a is ax[0] else 2)
    fig.savefig(OUT / "mean_vs_sum.png", dpi=120)

    ok = finite.max() <= TOL and same_divergence and off.max() <= 1 + 1e-6
    print(
        "best mean lr at B="
        + str(BS)
        + ": "
        + "; ".join(
            f"{o} {np.round(lr[o, 'mean'].to_numpy(), 4).tolist()} (slope B=1..16 {slopes[o]:.2f})"
            for o in LRS
        )
    )
    print(
        f"mean_vs_sum: {'PASS' if ok else 'FAIL'} max rel curve gap {finite.max():.1e} over {len(finite)} "
        f"finite pairs (sgd {len(gaps[0])}, adam eps*B {len(gaps[1])}), same divergence {same_divergence}, "
        f"best_sum_lr*B vs best_mean_lr max {off.max():.2f} grid steps apart"
    )


if __name__ == "__main__":
    main()
