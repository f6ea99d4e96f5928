"""Does a bias before batch normalization drift when the gradient ignores the batch statistics?

Claim (Ioffe & Szegedy, 2015, section 2): for x = u + b followed by
normalization with the batch mean, a gradient step that treats the statistics
as constants moves b by a constant amount, the normalization undoes the move,
and "b will grow indefinitely while the loss remains fixed"; the true gradient,
which accounts for the statistics, is zero, and b does not move.
Scientific: stop_gradient_stats (True / False). Nuisance: none (full batch,
deterministic). Fixed: N = 64 examples, C = 4 features, targets with mean 1
(a nonzero mean makes the drift visible), SGD lr 0.1, 1000 steps, b_0 = 0,
batch norm in training mode with scale 1 and bias 0 (jaxopt_lab.nn.batchnorm).
PASS: with stopped statistics, a linear fit of |b| vs step has R^2 > 0.99 and
positive slope and the loss changes by < 1e-4 relative; with the true
gradient, |b| stays below 1e-5.
"""

import jax
import numpy as np
import pandas as pd
from _results import report
from matplotlib.figure import Figure

import jaxopt_lab
from jaxopt_lab.toys import problems

N, C = 64, 4  # a small batch; the drift does not depend on the size
TARGET_MEAN = 1.0  # the stopped gradient on b is -mean(y) / (C sigma): nonzero
LR, STEPS = 0.1, 1000  # plain SGD, long enough to see |b| grow by tens


def main():
    ku, ky = jax.random.split(jax.random.key(0))
    u = jax.random.normal(ku, (N, C))
    y = TARGET_MEAN + jax.random.normal(ky, (N, C))
    rows, stats = [], {}
    axes = Figure(figsize=(10, 3.8), layout="tight").subplots(1, 2)
    for stop in (True, False):
        loss_fn = problems.bias_batchnorm_loss(u, y, stop_gradient_stats=stop)
        tr = jax.jit(lambda f=loss_fn: problems.optimize(f, jaxopt_lab.sgd(LR), jax.numpy.zeros(C), STEPS))()
        step, norm_b = np.arange(STEPS + 1), np.linalg.norm(np.asarray(tr.params, np.float64), axis=1)
        loss = np.asarray(tr.loss, np.float64)
        slope = np.polyfit(step, norm_b, 1)[0]
        r2 = np.corrcoef(step, norm_b)[0, 1] ** 2  # R^2 of the least-squares line
        stats[stop] = dict(slope=slope, r2=r2, max_b=norm_b.max(), dloss=np.ptp(loss) / loss[0])
        rows += [
            dict(stop_gradient_stats=stop, step=int(s), norm_b=nb, loss=lo)
            for s, nb, lo in zip(step, norm_b, loss, strict=True)
        ]
        label = "statistics as constants" if stop else "true gradient"
        axes[0].plot(step, norm_b, label=f"{label}: slope {slope:.3g}/step, max {norm_b.max():.2g}")
        axes[1].plot(step, 1e6 * (loss / loss[0] - 1), lw=0.8, alpha=0.8, label=label)
    axes[0].set(xlabel="SGD step", ylabel="|b| (Euclidean norm)", title="Bias before batch norm: |b|")
    axes[1].set(xlabel="SGD step", ylabel="1e6 (loss_t / loss_0 - 1): float32 rounding")
    axes[1].set_title("Loss 0.5 mean (x_hat - y)^2 relative to step 0")
    for ax in axes:
        ax.legend(fontsize=8, loc="upper left")
    s, t = stats[True], stats[False]
    u64, y64 = np.asarray(u, np.float64), np.asarray(y, np.float64)  # |grad b| = |mean(y) / (C sigma)|
    predicted = LR * np.linalg.norm(y64.mean(0) / (C * np.sqrt(u64.var(0) + 1e-5)))
    ok = s["r2"] > 0.99 and s["slope"] > 0 and s["dloss"] < 1e-4 and t["max_b"] < 1e-5
    verdict = f"stopped stats: |b| slope {s['slope']:.4g}/step (predicted {predicted:.4g}), "
    verdict += f"R^2 {s['r2']:.6f}, |b|_final {s['max_b']:.3g}, loss change {s['dloss']:.1e} rel; "
    verdict += f"true gradient: max |b| {t['max_b']:.1e}, loss change {t['dloss']:.1e} rel"
    report("bn_bias_drift", ok, verdict, pd.DataFrame(rows), axes[0].figure)


if __name__ == "__main__":
    main()
