"""Which optimizers beat gradient descent on an ill-conditioned quadratic, and on Rosenbrock?

Claim (textbook; e.g. Goodfellow, Bengio & Courville, 2016, 8.3.2 and 8.5): on
an ill-conditioned quadratic, gradient descent zig-zags and needs ~condition-
number steps; momentum (Polyak, 1964) and the per-coordinate step sizes of
RMSProp (Tieleman & Hinton, 2012) and Adam (Kingma & Ba, 2015) need fewer.
Scientific: the optimizer. Nuisance: the learning rate, each optimizer at its
best on a log grid (fewest steps to reach the tolerance, ties by final loss).
Fixed: library defaults (momentum 0.9, RMSProp decay 0.9, Adam 0.9/0.999, eps
1e-8), float32, the starts below; the quadratic is axis-aligned, h = (1, 1/50),
the case per-coordinate scaling is built for. Reported, not in PASS: 8 other
starts of equal loss, and the steps after which the loss *stays* below tol.
PASS: from the main start, momentum, RMSProp and Adam each reach loss <= 1e-6 in fewer steps than GD.
"""

import jax.numpy as jnp
import numpy as np
import pandas as pd
from _results import report
from matplotlib.figure import Figure

from jaxopt_lab import adam, momentum, rmsprop, sgd, steps_to_target
from jaxopt_lab.toys import problems

OPTIMIZERS = {"gradient descent": sgd, "momentum": momentum, "RMSProp": rmsprop, "Adam": adam}  # defaults
ADAPTIVE = ("momentum", "RMSProp", "Adam")  # the claim: each needs fewer steps than gradient descent
PROBLEMS = {  # name: (loss, start, steps, plot window); condition number 50 for the quadratic
    "quadratic": (problems.quadratic(jnp.array([1.0, 0.02])), (1.0, 5.0), 1000, ((-1.5, 1.5), (-1, 6))),
    "rosenbrock": (problems.rosenbrock(), (-1.2, 1.0), 20000, ((-1.5, 1.5), (-0.5, 1.6))),
}
STARTS = [(n, 0, p[1]) for n, p in PROBLEMS.items()] + [  # and 8 more, of 0.5 x^T H x = 0.75, off the axes:
    ("quadratic", k, (1.5**0.5 * np.cos(a), 75**0.5 * np.sin(a)))  # x_i = sqrt(2 * 0.75 / h_i) (cos, sin)
    for k, a in enumerate(np.pi / 8 + np.arange(8) * np.pi / 4, 1)
]
LRS = np.logspace(-5, 0.5, 23)  # 4 per decade, up to past the stability limit of GD
TOL, DRAWN = 1e-6, 1500  # loss tolerance (both minima are 0); steps drawn (RMSProp on Rosenbrock wanders)
LEAVES = "dotted, 'leaves': reaches the tolerance but does not stay below it)"


def main():
    rows, best, paths = [], {}, {}  # rows: one frame per (problem, start, optimizer), a row per lr
    for (name, start, x0), opt in [(r, o) for r in STARTS for o in OPTIMIZERS]:
        loss_fn, _, steps, _ = PROBLEMS[name]
        tr = problems.sweep_learning_rates(loss_fn, OPTIMIZERS[opt], jnp.array(x0), steps, LRS)
        best[name, start, opt] = b = problems.best_learning_rate(LRS, tr.loss, TOL)
        to_tol = steps_to_target(np.arange(steps + 1), np.asarray(tr.loss), TOL)  # NaN: never
        stay = problems.steps_to_stay_below(tr.loss, TOL)  # inf: ends above tol (limit cycle, chaos)
        paths[name, start, opt] = tr.params[b.index, : int(min(b.steps, DRAWN)) + 1], stay[b.index] < np.inf
        frame = pd.DataFrame({"problem": name, "start": start, "x0": [x0] * len(LRS), "optimizer": opt})
        rows.append(frame.assign(learning_rate=LRS, steps_to_tol=to_tol, steps_to_stay_below_tol=stay))
        rows[-1] = rows[-1].assign(final_loss=np.asarray(tr.loss[:, -1]), best=np.arange(len(LRS)) == b.index)
    axes = Figure(figsize=(12, 5), layout="tight").subplots(1, 2)
    for ax, (name, (loss_fn, x0, _, (xlim, ylim))) in zip(axes, PROBLEMS.items(), strict=True):
        gx, gy = np.meshgrid(np.linspace(*xlim, 300), np.linspace(*ylim, 300))  # the loss on a grid:
        grid = np.asarray(jnp.vectorize(lambda a, c, f=loss_fn: f(jnp.stack([a, c])))(gx, gy))
        ax.contour(gx, gy, grid, levels=np.logspace(-4, 3, 22), colors="0.75", linewidths=0.6)
        for opt in OPTIMIZERS:  # the fewer steps, the higher on top; dotted: does not stay below tol
            b, (path, stays) = best[name, 0, opt], paths[name, 0, opt]
            style = dict(ls="-" if stays else ":", alpha=0.75 if stays else 0.35, lw=0.6, marker=".", ms=2)
            label = f"{opt}: lr {b.learning_rate:.2g}, {b.steps:.0f}" + ("" if stays else " (leaves)")
            ax.plot(path[:, 0], path[:, 1], zorder=3 - len(path) / DRAWN, **style, label=label)
        ax.plot(*x0, "ko"), ax.plot(*((0, 0) if name == "quadratic" else (1, 1)), "k*", ms=12)
        ax.set(xlim=xlim, ylim=ylim, xlabel="x_0", ylabel="x_1", title=f"{name} (start o, minimum *)")
        ax.legend(fontsize=8, loc="upper left", title=f"best lr, steps to loss <= {TOL:g}", title_fontsize=8)
    axes[0].figure.suptitle(f"Paths at each optimizer's best lr (at most {DRAWN} steps drawn; " + LEAVES)
    table = pd.concat(rows, ignore_index=True)
    steps = {opt: best["quadratic", 0, opt].steps for opt in OPTIMIZERS}  # PASS: all three beat GD
    ok = all(steps[o] < steps["gradient descent"] for o in ADAPTIVE)
    gd = [best["quadratic", k, "gradient descent"].steps for k in range(1, 9)]
    wins = {o: sum(best["quadratic", k, o].steps < gd[k - 1] for k in range(1, 9)) for o in ADAPTIVE}
    rosen = {o: best["rosenbrock", 0, o].steps for o in OPTIMIZERS}
    stay = table.query("start == 0").groupby(["problem", "optimizer"]).steps_to_stay_below_tol.min().to_dict()
    verdict = f"steps to loss <= {TOL:g} on the quadratic {steps}; "
    verdict += f"fewer than GD from {wins} of 8 other starts; Rosenbrock {rosen}; steps to stay <= tol {stay}"
    report("optimizer_paths", ok, verdict, table, axes[0].figure)


if __name__ == "__main__":
    main()
