"""How do steps-to-target scale with batch size for SGD, momentum and preconditioning on the NQM?

Claim (Zhang et al., 2019, "Which algorithmic choices matter at which batch sizes?", 3-4): on the
noisy quadratic model (h_i = 1/i, gradient noise variance h_i/B), steps-to-target S(B) halves per
doubling of B at small B (best lr proportional to B), then saturates; momentum matches SGD at small
B with a larger critical batch size B_crit, preconditioning by h^-1/2 (as Adam roughly does) a larger
one still. B_crit: where S(B) = 2 S(1)/B, twice perfect scaling (interpolated in log B).
Scientific: B, optimizer (+ preconditioned momentum, not in PASS). Nuisance: lr, quarter-octave
grid, coarse to fine (momentum: lr/(1-beta) on it, beta = 1 - 2^-(1..5)). Fixed: d = 1000, x0 = 1,
target loss 0.01 (exact recurrence, float64), p = 1/2; Monte Carlo (MC) of the toolkit optimizers.
PASS: MC mean within 3 SE of exact at steps 1, 2, 4, ..., 256; for B <= 8, S*B within 2% of S(1),
best lr within a grid step of lr(1)*B (SGD), momentum within 2% of SGD; B_crit SGD < momentum < precond.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from _results import report
from matplotlib.figure import Figure

import jaxopt_lab
from jaxopt_lab.analysis.critical_batch import crossing_batch_size
from jaxopt_lab.toys import problems

jax.config.update("jax_enable_x64", True)  # the exact recurrence runs to ~1e6 steps
D, TARGET, SMALL_B = 1000, 0.01, 8  # Zhang et al. use d = 1e4; 1e3 keeps the run near a minute
BATCHES = 2.0 ** np.arange(17)  # 1 .. 65536: past saturation for every method
METHODS = {  # name: (lr grid 2^(k/4), momenta: 1/(1-beta) on the octaves, preconditioning power p)
    "SGD": (2.0 ** (np.arange(-44, 5) / 4), (0.0,), 0.0),
    "momentum": (2.0 ** (np.arange(-44, 25) / 4), 1 - 2.0 ** -np.arange(1, 6), 0.0),
    "preconditioned SGD": (2.0 ** (np.arange(-56, 5) / 4), (0.0,), 0.5),
    "preconditioned momentum": (2.0 ** (np.arange(-56, 25) / 4), 1 - 2.0 ** -np.arange(1, 6), 0.5),
}
MC = {"SGD": (0.5, 0.0, 0.0), "momentum": (0.05, 0.9, 0.0), "preconditioned SGD": (0.5, 0.0, 0.5)}  # lr, b, p
MC_B, MC_STEPS, MC_DRAWS, X0 = 8.0, 256, 1000, np.ones(D, np.float32)  # B = 8: loss far above zero
CHECKS = 2 ** np.arange(9)  # MC vs exact at steps 1, 2, ..., 256
SEARCH = dict(ema_learning_rates=True, refine=4)  # the grid holds lr / (1 - beta); every 4th point first


def main():
    h, z, res, crit, t = problems.nqm_curvatures(D, jnp.float64), {}, {}, {}, np.arange(1, MC_STEPS + 1)
    ax_mc, ax_s = Figure(figsize=(13, 5), layout="tight").subplots(1, 2)
    for (name, (lr, beta, p)), key in zip(MC.items(), jax.random.split(jax.random.key(0), 3), strict=True):
        tx = jaxopt_lab.momentum(lr, beta) if beta else jaxopt_lab.sgd(lr)
        tx = optax.chain(problems.scale_by_diagonal(h**-p), tx) if p else tx
        mc = np.asarray(problems.nqm_monte_carlo(h, X0, tx, MC_B, MC_STEPS, key, MC_DRAWS), np.float64)
        exact = problems.nqm_expected_loss(h, 1.0, lr, MC_B, MC_STEPS, beta=beta, precond_power=p)
        mean, se = mc.mean(0), mc.std(0, ddof=1) / np.sqrt(MC_DRAWS)
        z[name] = round(float(np.max(np.abs(mean - exact)[CHECKS] / se[CHECKS])), 2)
        ax_mc.plot(t, mean[1:], lw=4, alpha=0.4, label=f"{name}: MC mean (max |z| {z[name]})")
        ax_mc.plot(t, exact[1:], "k:", lw=1)
    for i, (name, (lrs, betas, p)) in enumerate(METHODS.items()):
        r = problems.nqm_best_steps(h, 1.0, TARGET, lrs, BATCHES, betas=betas, precond_power=p, **SEARCH)
        res[name], crit[name] = r, float(np.round(crossing_batch_size(BATCHES, r.steps)))  # inf: never 2x
        ax_s.plot(BATCHES, r.steps, "o-", ms=3, color=f"C{i}", label=f"{name}: B_crit {crit[name]:.0f}")
        ax_s.plot(BATCHES, r.steps[0] / BATCHES, ":", color=f"C{i}", lw=0.8)
        ax_s.axvline(crit[name], color=f"C{i}", lw=0.8, ls="--")
    ax_mc.set(xscale="log", yscale="log", xlabel="step", ylabel="loss 0.5 sum h_i x_i^2")
    ax_mc.set_title(f"NQM d={D}, B={MC_B:.0f}: mean of {MC_DRAWS} runs vs exact (dotted)")
    ax_s.set(xscale="log", yscale="log", xlabel="batch size B", ylabel=f"steps to expected loss {TARGET}")
    ax_s.set(ylim=(5, None), title="Steps to target at the best lr; dotted: S(1)/B; dashed: B_crit")
    ax_mc.legend(fontsize=8), ax_s.legend(fontsize=8)
    small, sgd = BATCHES <= SMALL_B, res["SGD"]
    scaling = np.max(np.abs(sgd.steps * BATCHES / sgd.steps[0] - 1)[small])  # perfect scaling, SGD
    lr_shift = 4 * np.max(np.abs(np.log2(sgd.learning_rate / (sgd.learning_rate[0] * BATCHES)))[small])
    match = np.max(np.abs(res["momentum"].steps / sgd.steps - 1)[small])
    ok = max(z.values()) < 3 and max(scaling, match) < 0.02 and lr_shift <= 1
    ok &= crit["SGD"] < crit["momentum"] < crit["preconditioned SGD"]
    edge = [n for n in METHODS if res[n].at_edge.any()]
    verdict = f"MC max |z| {z}; B<={SMALL_B}: S*B within {scaling:.2%}, best lr {lr_shift:.0f} grid steps "
    verdict += f"from lr(1)*B, momentum/SGD within {match:.2%}; B_crit {crit}; lr on grid edge: {edge}"
    table = pd.concat([pd.DataFrame(res[n]._asdict()).assign(method=n, b_crit=crit[n]) for n in METHODS])
    report("noisy_quadratic", ok, verdict, table, ax_s.figure)


if __name__ == "__main__":
    main()
