"""Single-example SGD against mini-batches at equal epochs: generalization and sharpness.

Question: at an equal number of epochs, each batch size at its best learning rate, does plain
SGD with small batches generalize better and end in flatter minima than with large batches?
Claim (Keskar et al. 2017, arXiv:1609.04836): large-batch training converges to sharper
minima (larger top Hessian eigenvalue of the training loss) and generalizes worse.
Scientific: B in {1, 4, 16, 64, 256, 1024}.
Nuisance: learning rate, 4 points per decade over [1e-3, 10], the best by final test accuracy
(mean over seeds; MNIST-1D has no validation split, so the test set picks it, for every B alike).
Fixed: MNIST-1D, MLP (64, 64) (compiles dominate on 2 CPU cores), plain SGD, 30 epochs
(B=1: 120000 steps, B=1024: 90 steps), 2 seeds. One sweep of the whole grid; its measurements
at each config's last step are the engine's `sharpness` (30 power iterations on the whole
training loss) and `train_set` (accuracy on the whole training set), taken inside the run that
trained the config: near the largest stable learning rate training is chaotic, and a re-run in
a program of another width would end elsewhere.
PASS (Keskar's effect seen) if, averaged over seeds, sharpness at B=1024 is larger than at B=1
and test accuracy at B=1024 is lower than at B=1.
"""

from _results import report
from matplotlib.figure import Figure

from jaxopt_lab import Grid, measure, sweep
from jaxopt_lab.analysis import studies

BATCH_SIZES = [1, 4, 16, 64, 256, 1024]  # single examples to a quarter of the training set
LRS = studies.log_grid(1e-3, 10)  # wide enough for B=1 (small lr) and B=1024 (lr above 1)
SEEDS = [0, 1]  # two seeds: test accuracy differences of a point are within seed noise
SPEC = dict(
    model="mlp", model_options={"hidden": (64, 64)}, optimizer="sgd", eval_every=10**6,  # the last step only
    measure=[measure.Sharpness(num_iters=30), "train_set"], measure_batch_size=4000,  # the whole set
)  # fmt: skip
EPOCHS = 30
COLUMNS = {  # the summary's columns, as the CSV names them
    "final_test_accuracy": "test_accuracy",
    "final_train_set_accuracy": "train_accuracy",
    "final_train_set_loss": "train_loss_full",
    "final_sharpness": "sharpness",
}


def main():
    grid = Grid(batch_size=BATCH_SIZES, learning_rate=[float(v) for v in LRS], seed=SEEDS)
    result = sweep(SPEC, grid, epochs=EPOCHS, strategy="bucket", progress="lines")
    table = result.summary().rename(columns=COLUMNS)
    best = result.best_learning_rates(by="batch_size", metric="final_test_accuracy").set_index("batch_size")
    table["best"] = table.learning_rate.to_numpy() == best.learning_rate.loc[table.batch_size].to_numpy()
    table["gap"] = table.train_accuracy - table.test_accuracy
    mean = table[table.best].groupby("batch_size").mean(numeric_only=True)

    ax = Figure(figsize=(16, 4.6), layout="constrained").subplots(1, 3)
    ax[0].plot(mean.index, 100 * mean.train_accuracy, "o-", label="train accuracy")
    ax[0].plot(mean.index, 100 * mean.test_accuracy, "s-", label="test accuracy")
    ax[0].set(
        ylabel="accuracy at the end (%)", title=f"After {EPOCHS} epochs at the best lr (mean of 2 seeds)"
    )
    ax[1].plot(mean.index, mean.sharpness, "o-", color="C3", label="sharpness (top Hessian eigenvalue)")
    ax[1].plot(mean.index, 2 / mean.learning_rate, ":", color="gray", label="2 / lr (edge of stability)")
    ax[1].set(yscale="log", ylabel="top Hessian eigenvalue of the train loss", title="Sharpness at the end")
    by_lr = table.groupby(["batch_size", "learning_rate"]).test_accuracy.mean()
    for b in BATCH_SIZES:
        ax[2].plot(by_lr[b].index, 100 * by_lr[b], "o-", ms=3, label=f"B={b}")
    ax[2].set(xlabel="learning rate", ylabel="final test accuracy (%)", ylim=(0, 80))
    ax[2].set_title("Final test accuracy against lr (mean of 2 seeds)")
    for a, xlabel in zip(ax, ["batch size B", "batch size B", "learning rate"], strict=True):
        a.set(xscale="log", xlabel=xlabel), a.legend(fontsize=8, ncol=2 if a is ax[2] else 1)

    small, large = mean.loc[BATCH_SIZES[0]], mean.loc[BATCH_SIZES[-1]]
    ok = large.sharpness > small.sharpness and large.test_accuracy < small.test_accuracy
    print(mean[["learning_rate", "train_accuracy", "test_accuracy", "gap", "sharpness"]].round(4).to_string())
    verdict = (
        f"B=1 vs B=1024: test acc {100 * small.test_accuracy:.1f}% vs {100 * large.test_accuracy:.1f}%, "
        f"sharpness {small.sharpness:.2f} vs {large.sharpness:.2f}, "
        f"train-test gap {100 * small.gap:.1f} vs {100 * large.gap:.1f} points"
    )
    report("batch_size_generalization", ok, verdict, table, ax[0].figure)


if __name__ == "__main__":
    main()
