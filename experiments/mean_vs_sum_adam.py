"""Mean or sum of the per-example losses under Adam, and how its best learning rate moves with batch size.

Question: does reducing the minibatch loss by its sum instead of its mean change Adam, and how does
its best learning rate move with the batch size B?
Claim (exact; Kingma & Ba 2015): Adam divides by the root of its second moment, so the sum only
rescales eps: Adam on the sum at eps*B is Adam on the mean at eps, and at the same eps it differs
once eps matters. mean_vs_sum_sgd asks the same of SGD (and the linear scaling rule).
Scientific: B in {1, 4, 16, 64, 256, 512} (the sum at 4, 64 and 512), reduction, eps in {1e-8, 1e-2}
(the sum also at 1e-2 * B). Nuisance: learning rate, 4 per decade over [1e-4, 0.1].
Fixed: MNIST-1D, MLP (64, 64), 5 epochs, 4 evaluations per epoch, seed 0; best = lowest final train
loss at eps = 1e-8.
PASS if every Adam sum(eps*B)/mean(eps) pair agrees in divergence and within 1e-4 relative at every
evaluation (a wrong reduction or eps rule fails it).
"""

import pandas as pd
from _results import report
from matplotlib.figure import Figure

from jaxopt_lab.analysis import studies, tables
from jaxopt_lab.engine.train import TrainSpec

BS = [1, 4, 16, 64, 256, 512]  # factor-4 steps from single examples, then 512
LRS = studies.log_grid(1e-4, 0.1)  # 4 per decade
EPS = 1e-2  # an eps large enough to matter, so sum-at-eps*B == mean-at-eps is not trivial
SPEC = TrainSpec(model="mlp", optimizer="adam", model_options={"hidden": (64, 64)})
TOL, METRIC, BUDGET = 1e-4, "final_train_loss", dict(epochs=5, evals_per_epoch=4)
RUNS = [  # batch sizes, the grid's axes (the sum's eps a function of B)
    (BS, {"reduction": ["mean"], "learning_rate": LRS, "eps": [1e-8, EPS]}),
    (BS[1::2], {"reduction": ["sum"], "learning_rate": LRS, "eps": lambda b: [1e-8, EPS, EPS * b]}),
]


def main():
    table = studies.concat_tables([studies.sweep_per_batch_size(SPEC, b, axes, **BUDGET) for b, axes in RUNS])
    gaps = studies.rescaled_gaps(table, {"eps": -1})
    finite = gaps.max_rel_gap[~gaps.diverged_sum & ~gaps.diverged_mean]
    same_divergence = (gaps.diverged_sum == gaps.diverged_mean).all()
    best = tables.best_learning_rates(table[table.eps == 1e-8], metric=METRIC, by=("reduction", "batch_size"))
    lr = best.pivot_table(index="batch_size", columns="reduction", values="learning_rate")

    ax = Figure(figsize=(12, 5), layout="constrained").subplots(1, 2)
    for r, fmt, ms in [("mean", "o-", 5), ("sum", "x--", 9)]:
        ax[0].plot(lr[r].dropna().index, lr[r].dropna(), fmt, color="C2", ms=ms, label=f"adam {r}, eps=1e-8")
    ax[0].set(xscale="log", yscale="log", xlabel="batch size B", ylabel="best learning rate")
    ax[0].set_title(f"Best learning rate per B ({BUDGET['epochs']} epochs, lowest final train loss)")
    for c, b in zip(["C0", "C1", "C2"], BS[1::2], strict=True):
        for r, eps, fmt in [("mean", EPS, "-"), ("sum", EPS * b, "o"), ("sum", EPS, ":")]:
            where = dict(reduction=r, batch_size=b, learning_rate=lr.loc[b, "mean"], eps=eps)
            rows = table[(table[list(where)] == pd.Series(where)).all(axis=1)]  # the config's curve
            label = f"B={b} {r}, lr={lr.loc[b, 'mean']:.2g}, eps={eps:g}"
            ax[1].plot(rows.step / (4000 // b), rows.train_loss, fmt, color=c, ms=4, mfc="none", label=label)
    ax[1].set(yscale="log", xlabel="epoch", ylabel="train loss (mean over the last quarter epoch)")
    ax[1].set_title(
        f"Adam at its best lr, eps={EPS:g}: mean (lines)\n= sum at eps*B (circles), != at eps (dots)"
    )
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.12))  # under the curves
    slope = studies.log_slope(lr.index[:3], lr["mean"].iloc[:3])  # over B = 1, 4, 16
    print(f"best mean lr at B={BS}: {lr['mean'].round(4).tolist()}, slope {slope:.2f}")
    ok = finite.max() <= TOL and same_divergence
    verdict = f"max rel curve gap {finite.max():.1e} over {len(finite)} finite pairs of {len(gaps)}, "
    verdict += f"same divergence {same_divergence}"
    report("mean_vs_sum_adam", ok, verdict, tables.summary(table), ax[0].figure)  # one CSV row per config


if __name__ == "__main__":
    main()
