"""Does full-batch gradient descent train at the edge of stability, sharpness ~ 2/lr?

Claim (Cohen, Kaur, Li, Kolter & Talwalkar, ICLR 2021, arXiv:2103.00065): under full-batch GD
the sharpness (top Hessian eigenvalue of the training loss) rises ("progressive sharpening")
until it reaches 2/lr, the stability limit of GD on a quadratic, and then hovers there while
the loss keeps falling, non-monotonically.
Scientific: learning rate, 2/lr = 20 and 26.7, chosen on calibration runs so that the sharpness
reaches 2/lr within the budget (with 2/lr = 30 it levelled off at 29.3 by step 12000 as the loss
went to 0; 2/lr = 40 was out of reach). Nuisance: none (full batch, one fixed initialization).
Fixed: the first 500 MNIST-1D training examples, a tanh MLP (100, 100), squared error
0.5*|f(x) - onehot(y)|^2 averaged over examples (as Cohen et al.), 8000 GD steps. One sweep of
the two learning rates: batch size 500 (every step is the whole set), the engine's `sharpness`
measurement every 20 steps on the whole set (power iteration, 100 iterations at the first point,
then 20 warm-started from the previous point's vector) and `train_set` for the loss there.
PASS: for both learning rates, the mean sharpness over the last quarter of training (steps >= 6000)
is within 20% of 2/lr.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from _results import report
from matplotlib.figure import Figure

from jaxopt_lab import Grid, data, measure, sweep

N, HIDDEN = 500, (100, 100)  # a small subset: progressive sharpening is fast
LEARNING_RATES = (0.1, 0.075)  # 2/lr = 20 and 26.7; the initial sharpness is ~17
STEPS, EVERY = 8000, 20  # 400 sharpness points; 10 warm iterations left a 0.6% gap
TOL = 0.2


def squared_error(outputs, labels):  # Cohen et al.'s loss on one-hot targets
    return 0.5 * jnp.sum(jnp.square(outputs - jax.nn.one_hot(labels, outputs.shape[-1])), axis=-1)


def main():
    ds = data.load("mnist1d")
    subset = data.from_arrays(ds.x_train[:N], ds.y_train[:N], ds.x_test, ds.y_test, name="mnist1d500")
    spec = dict(
        dataset=subset, model="mlp", model_options={"hidden": HIDDEN, "activation": "tanh"}, optimizer="sgd",
        batch_size=N, steps=STEPS, eval_every=EVERY, loss=squared_error, diverge_above=math.inf,
        measure=[measure.Sharpness(num_iters=100, num_warm_iters=20), "train_set"], measure_batch_size=N,
    )  # fmt: skip
    table = sweep(spec, Grid(learning_rate=list(LEARNING_RATES)), progress=False).table
    ax_s, ax_l = Figure(figsize=(12, 4.5), layout="tight").subplots(1, 2)
    stats = []
    for i, lr in enumerate(LEARNING_RATES):
        rows = table[table.learning_rate == lr].sort_values("step")
        step, sharp, loss = (rows[c].to_numpy() for c in ("step", "sharpness", "train_set_loss"))
        last, high = step >= 0.75 * STEPS, sharp >= 0.9 * 2 / lr
        reached = step[np.argmax(high)] if high.any() else None  # first point at 0.9 * 2/lr
        stats.append(dict(lr=lr, target=2 / lr, mean=sharp[last].mean(), reached=reached, final=sharp[-1]))
        stats[-1].update(lo=sharp[last].min(), hi=sharp[last].max(), rises=np.mean(np.diff(loss[last]) > 0))
        ax_s.plot(step, sharp, f"C{i}", label=f"lr = {lr}: sharpness")
        ax_s.axhline(2 / lr, color=f"C{i}", ls="--", lw=1, label=f"2/lr = {2 / lr:.3g}")
        ax_l.plot(step, loss, f"C{i}", lw=0.8, label=f"lr = {lr}")
    ax_s.axvspan(0.75 * STEPS, STEPS, color="gray", alpha=0.12, label="last quarter (criterion)")
    ax_s.set(xlabel="GD step", ylabel="sharpness: top Hessian eigenvalue")
    ax_s.set_title(f"Full-batch GD, tanh MLP {HIDDEN}, {N} MNIST-1D examples, MSE")
    ax_l.set(yscale="log", xlabel="GD step", ylabel="training loss 0.5 |f(x) - onehot(y)|^2 (mean)")
    ax_l.set_title(f"Training loss every {EVERY} steps: spikes where sharpness > 2/lr")
    ax_s.legend(fontsize=8), ax_l.legend(fontsize=8)
    ok = all(abs(s["mean"] / s["target"] - 1) <= TOL for s in stats)
    verdict = "; ".join(
        f"lr {s['lr']}: 2/lr {s['target']:.2f}, last-quarter sharpness mean {s['mean']:.2f} "
        f"({s['mean'] / s['target'] - 1:+.1%}, range {s['lo']:.2f}-{s['hi']:.2f}), 0.9*2/lr first reached "
        f"at step {s['reached']}, loss rose at {s['rises']:.0%} of last-quarter points, "
        f"final {s['final']:.2f}"
        for s in stats
    )
    report("edge_of_stability", ok, verdict, table, ax_s.figure, dpi=110)


if __name__ == "__main__":
    main()
